"""Estimator specifications for the lab and the benchmarks, and the hooks they share.

A specification is a registered name, optionally with keyword arguments after a colon:
`"reinmax"`, `"gumbel_rao:k=100"`, `"gst:gap=1.0,tau=0.5"`. The label shown in tables
is the specification as written.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch

from .. import objective, registry

__all__ = ["Spec", "parse_specs", "default_specs", "StopHook", "STOP_ENV"]

STOP_ENV = "QUASIGRAD_BENCH_STOP_AFTER"
"""Environment variable that makes a benchmark stop (as if interrupted with Ctrl-C) after a
number of finished units (`"units:N"`) or optimisation steps (`"steps:N"`). It exists so
that the tests can check that an interrupted run resumes to the same results."""


def _needs_object(info: registry.EstimatorInfo) -> bool:
    """Whether the estimator runs only as an object the user creates and trains (a learned
    control variate): the lab runs estimators by name, so it leaves these out."""
    return info.objective is None


@dataclasses.dataclass(frozen=True)
class Spec:
    """One estimator to run: its label, registry entry and keyword arguments (registry
    defaults merged with the ones the user gave); made by
    [parse_specs][quasigrad.lab.parse_specs].

    Attributes:
        label: the specification as the user wrote it (`"gumbel_rao:k=100"`).
        name: the registered name.
        kwargs: the estimator's keyword arguments.
    """

    label: str
    name: str
    kwargs: Dict[str, Any]

    @property
    def info(self) -> registry.EstimatorInfo:
        """The estimator's registry entry.

        Returns:
            Its [EstimatorInfo][quasigrad.registry.EstimatorInfo].
        """
        return registry.get(self.name)

    def tau_kwargs(self, tau: Optional[float]) -> Dict[str, Any]:
        """The keyword arguments with a temperature where the estimator takes one.

        Args:
            tau: the temperature, or None for none.

        Returns:
            A copy of `kwargs` with `tau` added where the estimator has one and the user did
            not fix it in the specification.
        """
        kw = dict(self.kwargs)
        if tau is not None and self.info.has_tau and "tau" not in kw:
            kw["tau"] = tau
        return kw

    def has_sample_function(self, variable: str = "categorical") -> bool:
        """Whether the estimator has a sample-level (layer-1) function.

        Args:
            variable: `"categorical"` or `"bernoulli"`.

        Returns:
            True if the registry holds a sample-level function for `variable`.
        """
        info = self.info
        return (info.categorical if variable == "categorical" else info.bernoulli) is not None

    def surrogate(self, f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, *,
                  tau: Optional[float] = None, dim: int = -1, variable: str = "categorical",
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """This estimator's estimate of `E[f(D)]`:
        [quasigrad.objective.expectation][] with this specification's options.

        Args:
            f: the loss of a sample, one value per example.
            logits: the logits of the variables.
            tau: a temperature for estimators that take one (a `tau` in the specification wins).
            dim: the category dimension.
            variable: `"categorical"` or `"bernoulli"`.
            generator: for the draws.

        Returns:
            One estimate per example, whose gradient with respect to `logits` is the
            estimator's.
        """
        return objective.expectation(f, logits, estimator=self.name, dim=dim, variable=variable,
                                     generator=generator, **self.tau_kwargs(tau))


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    return text


def parse_specs(requested: Optional[Iterable[str]], *, default: Iterable[str], variable: str = "categorical",
                need: str = "any") -> List[Spec]:
    """Check a list of specifications before any work starts.

    Args:
        requested: the user's specifications (`"reinmax"`, `"gumbel_rao:k=100"`), or None for
            `default`.
        default: the specifications to use when none are given.
        variable: the variable type the benchmark needs.
        need: `"sample"` (a sample-level function for `variable`), `"any"` (sample-level or
            objective-level).

    Returns:
        One [Spec][quasigrad.lab.Spec] per specification, in order.

    Raises:
        UnknownEstimatorError: an unknown name (the message lists the known ones).
        ValueError: malformed arguments, a specification given twice, or an estimator that
            cannot run here.
    """
    requested = list(default if requested is None else requested)
    specs, names = [], []
    for text in requested:
        name, _, rest = str(text).partition(":")
        kwargs: Dict[str, Any] = {}
        if rest:
            for item in rest.split(","):
                key, eq, val = item.partition("=")
                if not eq or not key.strip():
                    raise ValueError(f"estimator specification {text!r}: arguments must be key=value, got {item!r}")
                kwargs[key.strip()] = _value(val.strip())
        names.append(name)
        specs.append((text, name, kwargs))
    registry.resolve_names(names, default=[])
    for name in names:
        if _needs_object(registry.get(name)):
            raise ValueError(f"estimator {name!r} cannot be run by name here: it learns as it goes, so it is an "
                             f"object created and trained with your model; the lab runs estimators by name only")
    out = []
    for text, name, kwargs in specs:
        info = registry.get(name)
        if variable not in info.variables:
            raise ValueError(f"estimator {name!r} does not support {variable} variables "
                             f"(it supports {', '.join(sorted(info.variables))})")
        has_sample = (info.categorical if variable == "categorical" else info.bernoulli) is not None
        if need == "sample" and not has_sample:
            raise ValueError(f"estimator {name!r} has no sample-level function for {variable} variables; "
                             f"this benchmark needs one")
        out.append(Spec(text, name, {**info.defaults, **kwargs}))
    labels = [s.label for s in out]
    dup = sorted({l for l in labels if labels.count(l) > 1})
    if dup:
        raise ValueError(f"estimator(s) given twice: {', '.join(dup)}")
    return out


def default_specs(*, variable: str = "categorical", families: Iterable[str] = ("straight-through", "relaxation",
                  "score-function", "control-variate", "pair")) -> List[str]:
    """The estimators a benchmark runs by default.

    Args:
        variable: the variable type.
        families: the families to include.

    Returns:
        Every registered estimator usable on `variable` in the given families and runnable by
        name (not one that must be an object), sorted by name.
    """
    out = []
    for info in registry.entries(variable=variable):
        if info.family in families and not _needs_object(info):
            out.append(info.name)
    return out


class StopHook:
    """Counts finished units and steps; raises `KeyboardInterrupt` when the limit in the
    environment variable `STOP_ENV` is reached (used by the tests to interrupt a run).

    Raises:
        ValueError: the variable is set to something other than `units:N` or `steps:N`.
    """

    def __init__(self):
        spec = os.environ.get(STOP_ENV, "")
        self.kind, self.limit, self.count = None, None, 0
        if spec:
            kind, _, n = spec.partition(":")
            if kind not in ("units", "steps") or not n.isdigit():
                raise ValueError(f"{STOP_ENV} must be 'units:N' or 'steps:N', got {spec!r}")
            self.kind, self.limit = kind, int(n)

    def tick(self, kind: str) -> None:
        """Count one finished unit or step.

        Args:
            kind: `"units"` or `"steps"`.

        Raises:
            KeyboardInterrupt: the count of `kind` reached the limit.
        """
        if kind != self.kind:
            return
        self.count += 1
        if self.count >= self.limit:
            raise KeyboardInterrupt(f"stopped by {STOP_ENV} after {self.count} {kind}")
