"""The estimator registry: one name for each estimator, with flags that say what it is.

Everything that takes an estimator by name (the objective layer, the lab, the command line)
looks it up here, in the manner of ``torch.distributions.kl.register_kl``::

    >>> import quasigrad
    >>> info = quasigrad.registry.get("reinmax")
    >>> info.unbiased, info.needs_grad_f, sorted(info.variables)
    (False, True, ['bernoulli', 'categorical'])

An entry carries the sample-level functions (``categorical`` and ``bernoulli``, layer 1) and,
for estimators of the objective layer, an ``objective`` implementation (layer 2). Unknown
names fail with the list of known ones.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, FrozenSet, Iterable, Optional

__all__ = ["EstimatorInfo", "UnknownEstimatorError", "register", "update", "get", "names", "entries",
           "resolve_names", "table"]


class UnknownEstimatorError(KeyError, ValueError):
    """An estimator name that is not registered (a ``KeyError`` whose message prints plainly)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class EstimatorInfo:
    """What the registry knows of one estimator.

    Attributes:
        name: the registered name (``--estimators`` on the command line).
        family: ``"straight-through"``, ``"relaxation"``, ``"score-function"``,
            ``"control-variate"``, ``"pair"``, ``"exact"`` or ``"quantizer"``.
        unbiased: whether ``E[ĝ] = ∇θ E[f(D)]`` for every ``f``.
        needs_grad_f: whether the estimator differentiates ``f`` (pathwise) rather than only
            evaluating it.
        grad_depends_on_sample_only: whether the gradient is a function of the drawn sample ``D``
            alone (then its expectation can be computed exactly by enumeration).
        variables: variable types supported: ``"categorical"``, ``"bernoulli"``.
        evaluations: evaluations of ``f`` per step (``None``: set by ``num_samples``).
        has_tau: whether it takes a temperature ``tau``.
        reference: the paper.
        categorical: sample-level function for categorical variables (layer 1), or None.
        bernoulli: sample-level function for Bernoulli variables (layer 1), or None.
        objective: layer-2 implementation ``(f, logits, *, num_samples, dim, generator, **kw)``
            returning one estimate per example, or None (layer 1 functions are wrapped
            generically by :mod:`quasigrad.objective`).
        defaults: default keyword arguments (for example ``{"gap": 1.0}``).
    """

    name: str
    family: str
    unbiased: bool
    needs_grad_f: bool
    grad_depends_on_sample_only: bool
    variables: FrozenSet[str]
    evaluations: Optional[int] = 1
    has_tau: bool = False
    reference: str = ""
    categorical: Optional[Callable] = None
    bernoulli: Optional[Callable] = None
    objective: Optional[Callable] = None
    defaults: Dict[str, object] = dataclasses.field(default_factory=dict)

    def function(self, variable: str = "categorical") -> Callable:
        """The sample-level function for ``variable`` (``"categorical"`` or ``"bernoulli"``)."""
        fn = {"categorical": self.categorical, "bernoulli": self.bernoulli}.get(variable)
        if variable not in ("categorical", "bernoulli"):
            raise ValueError(f"variable must be 'categorical' or 'bernoulli', got {variable!r}")
        if fn is None:
            raise ValueError(f"estimator {self.name!r} has no sample-level function for {variable} variables")
        return fn


_REGISTRY: Dict[str, EstimatorInfo] = {}
_FAMILIES = {"straight-through", "relaxation", "score-function", "control-variate", "pair", "exact", "quantizer"}
_VARIABLES = {"categorical", "bernoulli", "real"}


def register(name: str, *, family: str, unbiased: bool, needs_grad_f: bool,
             grad_depends_on_sample_only: bool, variables: Iterable[str], evaluations: Optional[int] = 1,
             has_tau: bool = False, reference: str = "", categorical: Optional[Callable] = None,
             bernoulli: Optional[Callable] = None, objective: Optional[Callable] = None,
             defaults: Optional[dict] = None, replace: bool = False) -> EstimatorInfo:
    """Register an estimator under ``name`` and return its :class:`EstimatorInfo`.

    Registering a name twice is an error unless ``replace=True`` (a module may add its
    layer-2 implementation to an existing entry with :func:`update`).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"estimator {name!r} is already registered")
    if family not in _FAMILIES:
        raise ValueError(f"family must be one of {sorted(_FAMILIES)}, got {family!r}")
    variables = frozenset(variables)
    if not variables or not variables <= _VARIABLES:
        raise ValueError(f"variables must be a non-empty subset of {sorted(_VARIABLES)}, got {sorted(variables)}")
    info = EstimatorInfo(name=name, family=family, unbiased=bool(unbiased), needs_grad_f=bool(needs_grad_f),
                         grad_depends_on_sample_only=bool(grad_depends_on_sample_only), variables=variables,
                         evaluations=evaluations, has_tau=bool(has_tau), reference=reference,
                         categorical=categorical, bernoulli=bernoulli, objective=objective,
                         defaults=dict(defaults or {}))
    _REGISTRY[name] = info
    return info


def update(name: str, **fields) -> EstimatorInfo:
    """Change fields of a registered estimator: a module attaches its Bernoulli function
    (``bernoulli=``) or its layer-2 implementation (``objective=``) to an existing entry."""
    if name not in _REGISTRY:
        raise UnknownEstimatorError(f"cannot update {name!r}: it is not registered")
    new = dataclasses.replace(_REGISTRY[name], **fields)
    _REGISTRY[name] = new
    return new


def get(name: str) -> EstimatorInfo:
    """Look up ``name``; an unknown name raises ``KeyError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownEstimatorError(
            f"unknown estimator {name!r}; known estimators: {', '.join(sorted(_REGISTRY))}") from None


def names(*, family: Optional[str] = None, variable: Optional[str] = None, layer: Optional[int] = None) -> list:
    """Registered names, optionally only one family, one variable type, or one layer
    (1: has a sample-level function; 2: has an objective implementation or a layer-1 function)."""
    return [e.name for e in entries(family=family, variable=variable, layer=layer)]


def entries(*, family: Optional[str] = None, variable: Optional[str] = None, layer: Optional[int] = None) -> list:
    """Registered :class:`EstimatorInfo` objects, filtered as in :func:`names`, sorted by name."""
    out = []
    for info in sorted(_REGISTRY.values(), key=lambda e: e.name):
        if family is not None and info.family != family:
            continue
        if variable is not None and variable not in info.variables:
            continue
        if layer == 1 and info.categorical is None and info.bernoulli is None:
            continue
        out.append(info)
    return out


def resolve_names(requested: Optional[Iterable[str]], *, default: Iterable[str]) -> list:
    """Check a user's list of estimator names before any work starts; ``None`` means ``default``."""
    requested = list(default if requested is None else requested)
    unknown = [n for n in requested if n not in _REGISTRY]
    if unknown:
        raise UnknownEstimatorError(f"unknown estimator(s) {', '.join(map(repr, unknown))}; "
                       f"known estimators: {', '.join(sorted(_REGISTRY))}")
    return requested


def table() -> str:
    """A plain-text table of every registered estimator and its flags."""
    rows = [("name", "family", "unbiased", "needs df/dD", "grad f(D) only", "variables", "f evals", "tau")]
    for e in entries():
        rows.append((e.name, e.family, "yes" if e.unbiased else "no", "yes" if e.needs_grad_f else "no",
                     "yes" if e.grad_depends_on_sample_only else "no", ",".join(sorted(e.variables)),
                     "K" if e.evaluations is None else str(e.evaluations), "yes" if e.has_tau else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
