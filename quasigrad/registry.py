"""The estimator registry: one name for each estimator, with flags that say what it is.

Everything that takes an estimator by name (the objective layer, the lab, the command line)
looks it up here, in the manner of `torch.distributions.kl.register_kl`. An entry carries the
sample-level functions (`categorical` and `bernoulli`, layer 1) and, for estimators of the
objective layer, an `objective` implementation (layer 2). Unknown names fail with the list of
known ones.

Examples:
    >>> import quasigrad
    >>> info = quasigrad.registry.get("reinmax")
    >>> info.unbiased, info.needs_grad_f, sorted(info.variables)
    (False, True, ['bernoulli', 'categorical'])
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from ._util.registry import Registry, UnknownNameError

__all__ = ["EstimatorInfo", "UnknownEstimatorError", "register", "update", "get", "canonical", "names", "entries",
           "resolve_names", "table", "markdown_table"]


class UnknownEstimatorError(UnknownNameError):
    """An estimator name that is not registered (a `KeyError` and a `ValueError` whose message
    prints plainly and lists the known names)."""


@dataclasses.dataclass(frozen=True)
class EstimatorInfo:
    """What the registry knows of one estimator.

    Attributes:
        name: the registered name, equal to the public function's name where there is one
            (`--estimators` on the command line).
        family: `"straight-through"`, `"relaxation"`, `"score-function"`,
            `"control-variate"`, `"pair"` or `"exact"`.
        unbiased: whether `E[ĝ] = ∇θ E[f(D)]` for every `f`.
        needs_grad_f: whether the estimator differentiates `f` (pathwise) rather than only
            evaluating it.
        grad_depends_on_sample_only: whether the gradient is a function of the drawn sample `D`
            alone (then its expectation can be computed exactly by enumeration).
        variables: variable types supported: `"categorical"`, `"bernoulli"`.
        has_tau: whether it takes a temperature `tau`.
        reference: the paper.
        categorical: sample-level function for categorical variables (layer 1), or None.
        bernoulli: sample-level function for Bernoulli variables (layer 1), or None.
        objective: layer-2 implementation `(f, logits, *, num_samples, dim, variable, generator,
            **kw)` returning one estimate per example; None for an estimator that runs only as
            the object its `state` factory makes.
        defaults: default keyword arguments (for example `{"gap": 1.0}`).
        aliases: older spellings that still look this entry up.
        default_samples: `num_samples` when none is given.
        min_samples: the smallest `num_samples` the estimator accepts.
        max_samples: the largest `num_samples` it accepts (None: no upper bound).
        evaluations_per_sample: evaluations of `f` per unit of `num_samples` (2 for the
            antithetic pair of ARM and DisARM, 3 for REBAR and RELAX's `f(D)`, `f(σ(z))`,
            `f(σ(z̃))`).
        extra_evaluations: evaluations of `f` per step beside those (Double CV's one at the
            point of its Taylor expansion); not counted by `num_samples_for`, as the papers
            do not count it in their `K`.
        sample_unit: what one unit of `num_samples` is, for messages (`"antithetic pair"`).
        state: for a stateful estimator (one that learns, like RELAX), a factory
            `state(num_inputs, **kw) -> torch.nn.Module` making the object to pass as
            `estimator=` every step (`num_inputs`: variables × categories per example).
    """

    name: str
    family: str
    unbiased: bool
    needs_grad_f: bool
    grad_depends_on_sample_only: bool
    variables: FrozenSet[str]
    has_tau: bool = False
    reference: str = ""
    categorical: Optional[Callable] = None
    bernoulli: Optional[Callable] = None
    objective: Optional[Callable] = None
    defaults: Dict[str, object] = dataclasses.field(default_factory=dict)
    aliases: Tuple[str, ...] = ()
    default_samples: int = 1
    min_samples: int = 1
    max_samples: Optional[int] = None
    evaluations_per_sample: int = 1
    extra_evaluations: int = 0
    sample_unit: str = "sample"
    state: Optional[Callable[..., Any]] = None

    def function(self, variable: str = "categorical") -> Callable:
        """The sample-level (layer-1) function for one variable type.

        Args:
            variable: `"categorical"` or `"bernoulli"`.

        Returns:
            The function, such as [quasigrad.st][quasigrad.estimators.categorical.st].

        Raises:
            ValueError: an unknown `variable`, or no function registered for it.
        """
        if variable not in ("categorical", "bernoulli"):
            raise ValueError(f"variable must be 'categorical' or 'bernoulli', got {variable!r}")
        fn = self.categorical if variable == "categorical" else self.bernoulli
        if fn is None:
            raise ValueError(f"estimator {self.name!r} has no sample-level function for {variable} variables")
        return fn

    @property
    def layer(self) -> int:
        """The estimator's layer.

        Returns:
            1 for a sample-level estimator, 2 for one of the objective layer only.
        """
        return 1 if (self.categorical is not None or self.bernoulli is not None) else 2

    def num_samples_for(self, evaluations: int) -> int:
        """The sample count that makes this estimator evaluate `f` a given number of times.

        Args:
            evaluations: evaluations of `f` per step (Double CV's extra one not counted).

        Returns:
            `num_samples` for [quasigrad.objective.expectation][].

        Raises:
            ValueError: `evaluations` is not a multiple of `evaluations_per_sample` or
                gives a sample count outside `[min_samples, max_samples]`.
        """
        per = self.evaluations_per_sample
        if evaluations < 1 or evaluations % per:
            raise ValueError(f"estimator {self.name!r} evaluates f {per} times per {self.sample_unit}; it cannot "
                             f"use {evaluations} evaluations per step")
        k = evaluations // per
        if k < self.min_samples or (self.max_samples is not None and k > self.max_samples):
            want = (f"exactly {self.min_samples * per}" if self.max_samples == self.min_samples
                    else f"at least {self.min_samples * per}")
            raise ValueError(f"estimator {self.name!r} needs {want} evaluations of f per step, got {evaluations}")
        return k

    def evaluations(self, num_samples: int) -> int:
        """Evaluations of `f` per step (not meaningful for `exact`, which evaluates every outcome).

        Args:
            num_samples: the sample count given to the estimator.

        Returns:
            `num_samples × evaluations_per_sample + extra_evaluations`.
        """
        return num_samples * self.evaluations_per_sample + self.extra_evaluations

    def evaluations_label(self) -> str:
        """Evaluations of `f` per step, for tables.

        Returns:
            A label in terms of `K = num_samples` where the count is free (`"K"`, `"2K"`,
            `"3K"`), a number where it is fixed, `"all"` for `exact`.
        """
        if self.family == "exact":
            return "all"
        if self.max_samples is not None and self.max_samples == self.min_samples:
            return str(self.evaluations(self.min_samples))
        per = "" if self.evaluations_per_sample == 1 else str(self.evaluations_per_sample)
        return f"{per}K" + (f"+{self.extra_evaluations}" if self.extra_evaluations else "")


_REGISTRY: Registry[EstimatorInfo] = Registry("estimator", error=UnknownEstimatorError)
_FAMILIES = {"straight-through", "relaxation", "score-function", "control-variate", "pair", "exact"}
_VARIABLES = {"categorical", "bernoulli"}


def register(name: str, *, family: str, unbiased: bool, needs_grad_f: bool,
             grad_depends_on_sample_only: bool, variables: Iterable[str], has_tau: bool = False,
             reference: str = "", categorical: Optional[Callable] = None, bernoulli: Optional[Callable] = None,
             objective: Optional[Callable] = None, defaults: Optional[dict] = None, aliases: Iterable[str] = (),
             default_samples: int = 1, min_samples: int = 1, max_samples: Optional[int] = None,
             evaluations_per_sample: int = 1, extra_evaluations: int = 0, sample_unit: str = "sample",
             state: Optional[Callable[..., Any]] = None, replace: bool = False) -> EstimatorInfo:
    """Register an estimator.

    Every keyword argument but `replace` is the field of the same name of
    [EstimatorInfo][quasigrad.registry.EstimatorInfo], where each is described.

    Args:
        name: the registered name.
        family: one of the families listed under `EstimatorInfo.family`.
        unbiased: whether the estimator is unbiased for every `f`.
        needs_grad_f: whether it differentiates `f`.
        grad_depends_on_sample_only: whether its gradient is a function of the sample alone.
        variables: the variable types it supports.
        has_tau: whether it takes a temperature.
        reference: the paper.
        categorical: its sample-level function for categorical variables.
        bernoulli: its sample-level function for Bernoulli variables.
        objective: its layer-2 implementation.
        defaults: default keyword arguments.
        aliases: older spellings.
        default_samples: `num_samples` when none is given.
        min_samples: the smallest `num_samples` accepted.
        max_samples: the largest `num_samples` accepted (None: no bound).
        evaluations_per_sample: evaluations of `f` per unit of `num_samples`.
        extra_evaluations: evaluations of `f` per step beside those.
        sample_unit: what one unit of `num_samples` is, for messages.
        state: the factory of a stateful estimator's object.
        replace: allow registering a name twice (a module may also attach its Bernoulli
            function or its layer-2 implementation to an existing entry with
            [update][quasigrad.registry.update]).

    Returns:
        The new entry.

    Raises:
        ValueError: a taken name, an unknown family or variable type.
    """
    if family not in _FAMILIES:
        raise ValueError(f"family must be one of {sorted(_FAMILIES)}, got {family!r}")
    variables = frozenset(variables)
    if not variables or not variables <= _VARIABLES:
        raise ValueError(f"variables must be a non-empty subset of {sorted(_VARIABLES)}, got {sorted(variables)}")
    info = EstimatorInfo(name=name, family=family, unbiased=bool(unbiased), needs_grad_f=bool(needs_grad_f),
                         grad_depends_on_sample_only=bool(grad_depends_on_sample_only), variables=variables,
                         has_tau=bool(has_tau), reference=reference, categorical=categorical,
                         bernoulli=bernoulli, objective=objective, defaults=dict(defaults or {}),
                         aliases=tuple(aliases), default_samples=default_samples, min_samples=min_samples,
                         max_samples=max_samples, evaluations_per_sample=evaluations_per_sample,
                         extra_evaluations=extra_evaluations, sample_unit=sample_unit, state=state)
    return _REGISTRY.register(name, info, aliases=info.aliases, replace=replace)


def update(name: str, **fields: Any) -> EstimatorInfo:
    """Change fields of a registered estimator: a module attaches its Bernoulli function
    (`bernoulli=`) or its layer-2 implementation (`objective=`) to an existing entry.

    Args:
        name: a registered name or alias.
        **fields: new values of [EstimatorInfo][quasigrad.registry.EstimatorInfo] fields.

    Returns:
        The updated entry.

    Raises:
        UnknownEstimatorError: `name` is not registered.
    """
    if name not in _REGISTRY:
        raise UnknownEstimatorError(f"cannot update {name!r}: it is not registered")
    return _REGISTRY.replace(name, dataclasses.replace(_REGISTRY.get(name), **fields))


def get(name: str) -> EstimatorInfo:
    """Look up an estimator.

    Args:
        name: a registered name or an older spelling of one (`"gst"`, `"stgs"`).

    Returns:
        Its entry.

    Raises:
        UnknownEstimatorError: an unknown name (a `KeyError` and a `ValueError`), listing the
            known ones.
    """
    return _REGISTRY.get(name)


def canonical(name: str) -> str:
    """The registered name that a name stands for.

    Args:
        name: a registered name or an older spelling.

    Returns:
        `name` itself, or the registered name of an older spelling (`"gst"` → `"gapped_st"`).

    Raises:
        UnknownEstimatorError: an unknown name.
    """
    return _REGISTRY.canonical(name)


def names(*, family: Optional[str] = None, variable: Optional[str] = None, layer: Optional[int] = None) -> List[str]:
    """Registered estimator names.

    Args:
        family: only this family (`"straight-through"`, `"score-function"`, ...).
        variable: only estimators for this variable type (`"categorical"` or `"bernoulli"`).
        layer: 1: only those with a sample-level function; 2 or None: every estimator (each
            runs through the objective layer).

    Returns:
        The names, sorted.
    """
    return [e.name for e in entries(family=family, variable=variable, layer=layer)]


def entries(*, family: Optional[str] = None, variable: Optional[str] = None,
            layer: Optional[int] = None) -> List[EstimatorInfo]:
    """Registered entries.

    Args:
        family: only this family.
        variable: only estimators for this variable type.
        layer: 1: only those with a sample-level function; 2 or None: every estimator.

    Returns:
        The [EstimatorInfo][quasigrad.registry.EstimatorInfo] objects, sorted by name.
    """
    out = []
    for info in _REGISTRY.values():
        if family is not None and info.family != family:
            continue
        if variable is not None and variable not in info.variables:
            continue
        if layer == 1 and info.layer != 1:
            continue
        out.append(info)
    return out


def resolve_names(requested: Optional[Iterable[str]], *, default: Iterable[str]) -> List[str]:
    """Check a user's list of estimator names before any work starts.

    Args:
        requested: the names the user gave, or None for `default`.
        default: the names to use when none are given.

    Returns:
        The names as given (older spellings kept, so that labels and result keys stay as typed).

    Raises:
        UnknownEstimatorError: naming every unknown name and listing the known ones.
    """
    requested = list(default if requested is None else requested)
    unknown = [n for n in requested if n not in _REGISTRY]
    if unknown:
        raise UnknownEstimatorError(f"unknown estimator(s) {', '.join(map(repr, unknown))}; "
                                    f"known estimators: {', '.join(_REGISTRY.names())}")
    return requested


_COLUMNS = ("name", "family", "unbiased", "needs df/dD", "grad f(D) only", "variables", "f evals", "tau",
            "also")


def _rows() -> List[Tuple[str, ...]]:
    yes = {True: "yes", False: "no"}
    return [(e.name, e.family, yes[e.unbiased], yes[e.needs_grad_f], yes[e.grad_depends_on_sample_only],
             ",".join(sorted(e.variables)), e.evaluations_label(), yes[e.has_tau], ",".join(e.aliases))
            for e in entries()]


def table() -> str:
    """Every registered estimator and its flags, as `quasigrad estimators` prints them.

    Returns:
        A plain-text table, one row per estimator.
    """
    rows = [_COLUMNS] + _rows()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def markdown_table() -> str:
    """Every registered estimator and its flags in Markdown, with each estimator's reference.

    The docs' tables are this function's output (`quasigrad estimators --markdown`), checked
    by the tests.

    Returns:
        A Markdown table, one row per estimator.
    """
    head = _COLUMNS + ("reference",)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, e in zip(_rows(), entries()):
        cells = (f"`{row[0]}`",) + row[1:-1] + (", ".join(f"`{a}`" for a in e.aliases), e.reference)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
