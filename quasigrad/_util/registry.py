"""One small registry mechanism: names → entries, with aliases and an error that lists the
known names. The estimator, quantizer-estimator, sampler and benchmark registries are all
instances of `Registry`, in the manner of `torch.distributions.kl.register_kl`.

Examples:
    >>> reg = Registry("colour")
    >>> _ = reg.register("red", 0xFF0000, aliases=("rouge",))
    >>> reg["rouge"], reg.canonical("rouge"), "red" in reg
    (16711680, 'red', True)
"""

from __future__ import annotations

from typing import Dict, Generic, Iterable, Iterator, List, Tuple, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered: a `KeyError` (lookup failed) and a `ValueError` (a bad
    argument) whose message prints plainly and lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Names mapped to entries of one kind.

    Args:
        kind: what an entry is, for messages (`"estimator"`, `"sampler"`, ...).
        error: the exception class raised for an unknown name (a subclass of
            `UnknownNameError`).
    """

    def __init__(self, kind: str, *, error: type = UnknownNameError):
        self.kind = kind
        self.error = error
        self._entries: Dict[str, T] = {}
        self._aliases: Dict[str, str] = {}

    def register(self, name: str, entry: T, *, aliases: Iterable[str] = (), replace: bool = False) -> T:
        """Add `entry` under `name` and its `aliases`.

        Args:
            name: the registered name.
            entry: what the name stands for.
            aliases: other names that stand for the same entry.
            replace: overwrite an entry or alias already registered.

        Returns:
            `entry`, so that the call can end a decorator or an assignment.

        Raises:
            TypeError: `name` is not a non-empty string.
            ValueError: `name` or an alias is taken and `replace` is false.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if not replace and (name in self._entries or name in self._aliases):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        for alias in aliases:
            if not replace and (alias in self._entries or self._aliases.get(alias, name) != name):
                raise ValueError(f"{self.kind} alias {alias!r} is already taken")
            self._aliases[alias] = name
        return entry

    def replace(self, name: str, entry: T) -> T:
        """Put `entry` in place of a registered one.

        Args:
            name: a registered name or alias.
            entry: the new entry.

        Returns:
            `entry`.

        Raises:
            UnknownNameError: `name` is not registered (the class given as `error`).
        """
        self._entries[self.canonical(name)] = entry
        return entry

    def canonical(self, name: str) -> str:
        """The registered name that a name or an alias stands for.

        Args:
            name: a registered name or alias.

        Returns:
            The registered name.

        Raises:
            UnknownNameError: `name` is not registered (the class given as `error`); the
                message lists the known names.
        """
        if isinstance(name, str):
            if name in self._entries:
                return name
            if name in self._aliases:
                return self._aliases[name]
        known = ", ".join(self.names())
        raise self.error(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")

    def get(self, name: str) -> T:
        """The entry of a name or an alias.

        Args:
            name: a registered name or alias.

        Returns:
            Its entry.

        Raises:
            UnknownNameError: `name` is not registered (the class given as `error`).
        """
        return self._entries[self.canonical(name)]

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def names(self) -> List[str]:
        """The registered names.

        Returns:
            The names (not the aliases), sorted.
        """
        return sorted(self._entries)

    def aliases(self) -> Dict[str, str]:
        """The aliases.

        Returns:
            A new dict: alias → registered name.
        """
        return dict(self._aliases)

    def keys(self) -> List[str]:
        """The registered names, sorted (as [names][quasigrad._util.registry.Registry.names]).

        Returns:
            The names (not the aliases), sorted.
        """
        return self.names()

    def items(self) -> List[Tuple[str, T]]:
        """The registered names with their entries.

        Returns:
            `(name, entry)` pairs, sorted by name.
        """
        return [(n, self._entries[n]) for n in self.names()]

    def values(self) -> List[T]:
        """The entries.

        Returns:
            The entries, in the order of their sorted names.
        """
        return [self._entries[n] for n in self.names()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
