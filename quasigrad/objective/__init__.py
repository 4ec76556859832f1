r"""Objectives (layer 2): ``E_{D ~ p_θ}[f(D)]`` as a surrogate loss whose gradient is the chosen estimator.

One call for every estimator, score-function and pathwise alike::

    est = quasigrad.objective.expectation(f, logits, estimator="rloo", num_samples=4)
    est.mean().backward()

``logits`` θ hold independent categorical variables (categories along ``dim``) or, with
``variable="bernoulli"``, independent binary variables (Bernoulli logits, samples in {0, 1}).
``f`` takes a sample shaped like ``logits`` (one-hot along ``dim``; {0, 1} for Bernoulli) and
returns one loss per example: a tensor whose shape is a leading part of the sample's batch
shape (a scalar means one example). The log-probability of an example is the sum over its
remaining variables. The returned tensor has one entry per example; its value is the Monte
Carlo estimate of ``E[f]`` and its gradient (with respect to ``logits``, and to anything
``f`` itself depends on, such as a decoder) is the estimator's.

Estimators (``quasigrad.registry.table()`` lists their flags):

=================  ==========================================================================
``exact``          enumeration of every outcome (:func:`quasigrad.exact.expectation`)
``reinforce``      score function, optional constant ``baseline`` (Williams 1992)
``rloo``           leave-one-out baseline, K ≥ 2 (Kool, van Hoof, Welling 2019)
``arm``            augment-REINFORCE-merge, Bernoulli (Yin & Zhou 2019)
``disarm``         ARM with the antithetic noise integrated out (Dong, Mnih, Tucker 2020; categorical
                   variables by stick-breaking, 2021)
``double_cv``      leave-one-out plus a Taylor (second) control variate, K = 2 (Titsias & Shi 2022)
``rao_blackwell``  sum-and-sample: top-k outcomes summed, the rest sampled (Liu et al. 2019)
``rebar``          REBAR with fixed η, λ (Tucker et al. 2017); trained: :class:`REBAR`
``st`` … ``darn``  the sample-level (layer-1) estimators, through the same call
=================  ==========================================================================

Estimators that keep state are objects created once and passed as ``estimator=`` each step
(they are also callable with the same arguments minus ``estimator``): :class:`EMABaseline`,
:class:`LearnedBaseline` (NVIL), :class:`REBAR` and :class:`RELAX`. Their learned parts
carry their own loss inside the returned surrogate (a term whose value is zero), so that one
``backward()`` trains the model and the control variate together.

Costs are detached where the estimator says so: a score-function estimator never
differentiates ``f`` with respect to the sample (``f`` may return integers, or come from a
simulator), while ``f``'s own parameters still receive ``∇ f``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .. import registry
from .._util import validate as V
from ._problem import _VARIABLES, PathwiseError
from .control_variates import REBAR, RELAX, _double_cv, _rebar_fixed, _relax_by_name, control_variate_mlp
from .pairs import _arm, _disarm
from .pathwise import _exact_objective, _pathwise
from .score_function import EMABaseline, LearnedBaseline, _rao_blackwell, _reinforce, _rloo

__all__ = ["expectation", "EMABaseline", "LearnedBaseline", "REBAR", "RELAX", "control_variate_mlp",
           "PathwiseError"]


def expectation(f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, *, estimator="rloo",
                num_samples: Optional[int] = None, dim: int = -1, variable: str = "categorical",
                generator: Optional[torch.Generator] = None, **estimator_kwargs) -> torch.Tensor:
    r"""Estimate ``E_{D ~ p_θ}[f(D)]`` per example; the gradient of the result is the estimator's.

    Args:
        f: a sample shaped like ``logits`` (one-hot along ``dim``; {0, 1} floats for Bernoulli)
            → one loss per example, shape a leading part of the batch shape (``logits`` without
            ``dim``; a scalar: one example). May be non-differentiable for estimators that do not
            need ``∂f/∂D`` (``registry.get(name).needs_grad_f``).
        logits: θ, floating, any shape (categorical: categories along ``dim``; Bernoulli: logits).
        estimator: a registered name (``quasigrad.registry.names()``) or an estimator object
            (:class:`EMABaseline`, :class:`LearnedBaseline`, :class:`REBAR`, :class:`RELAX`, or any
            callable taking ``(f, logits, *, num_samples, dim, variable, generator, **kw)``).
        num_samples: samples (pairs for ``arm``/``disarm``) per example; ``None`` takes the
            estimator's default (2 for ``rloo`` and ``double_cv``, 1 otherwise).
        dim: the category dimension (categorical only).
        variable: ``"categorical"`` or ``"bernoulli"``.
        generator: ``torch.Generator`` for the draws.
        **estimator_kwargs: the estimator's options (``tau`` for layer-1 estimators, ``baseline``
            for ``reinforce``, ``k`` for ``rao_blackwell``, ...).

    Returns:
        A tensor of shape ``f``'s output: the Monte Carlo estimate of ``E[f]`` per example (the
        exact value for ``exact``), whose gradient is the estimator's.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> logits = torch.zeros(3, 4, requires_grad=True)            # one example, three variables
        >>> f = lambda d: (d * torch.arange(4.0)).sum()                # a linear loss
        >>> est = expectation(f, logits, estimator="rloo", num_samples=4, generator=g)
        >>> est.backward(); logits.grad.shape
        torch.Size([3, 4])
    """
    if isinstance(estimator, str):
        info = registry.get(estimator)
        if variable not in _VARIABLES:
            raise ValueError(f"variable must be 'categorical' or 'bernoulli', got {variable!r}")
        if variable not in info.variables:
            raise ValueError(f"estimator {estimator!r} supports {sorted(info.variables)} variables, not {variable!r}")
        impl = info.objective
        if impl is None:
            if info.categorical is None and info.bernoulli is None:
                raise ValueError(f"estimator {estimator!r} has no objective implementation")
            impl = _pathwise(info)
        kwargs = {**info.defaults, **estimator_kwargs}
    elif callable(estimator):
        impl, kwargs = estimator, estimator_kwargs
    else:
        raise TypeError(f"estimator must be a registered name or an estimator object, got {type(estimator).__name__}")
    V.check_generator(generator, logits.device if isinstance(logits, torch.Tensor) else "cpu")
    return impl(f, logits, num_samples=num_samples, dim=dim, variable=variable, generator=generator, **kwargs)


_BOTH = ("categorical", "bernoulli")
registry.register("exact", family="exact", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=_BOTH, evaluations=None, reference="enumeration of every outcome (C ** variables)",
                  objective=_exact_objective, replace=True)
registry.register("reinforce", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=None,
                  reference="Williams 1992", objective=_reinforce, replace=True)
registry.register("rloo", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=None,
                  reference="Kool, van Hoof, Welling 2019", objective=_rloo, replace=True)
registry.register("arm", family="pair", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=("bernoulli",), evaluations=2, reference="Yin & Zhou 2019", objective=_arm,
                  replace=True)
registry.register("disarm", family="pair", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=_BOTH, evaluations=2, reference="Dong, Mnih, Tucker 2020; categorical: 2021",
                  objective=_disarm, replace=True)
registry.register("double_cv", family="control-variate", unbiased=True, needs_grad_f=True,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=3,
                  reference="Titsias & Shi 2022", objective=_double_cv, replace=True)
registry.register("rao_blackwell", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=None,
                  reference="Liu, Regier, Tripuraneni, Jordan, McAuliffe 2019", objective=_rao_blackwell,
                  defaults={"k": 4}, replace=True)
registry.register("rebar", family="control-variate", unbiased=True, needs_grad_f=True,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=3,
                  reference="Tucker et al. 2017", objective=_rebar_fixed, replace=True)
registry.register("relax", family="control-variate", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=1,
                  reference="Grathwohl et al. 2018 (stateful: quasigrad.objective.RELAX)", objective=_relax_by_name,
                  replace=True)
for _info in list(registry._REGISTRY.values()):
    if _info.objective is None and (_info.categorical is not None or _info.bernoulli is not None):
        registry.update(_info.name, objective=_pathwise(_info))
