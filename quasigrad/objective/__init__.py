r"""Objectives (layer 2): `E_{D ~ p_θ}[f(D)]` as a surrogate loss whose gradient is the chosen estimator.

One call for every estimator, score-function and pathwise alike:

```python
est = quasigrad.objective.expectation(f, logits, estimator="rloo", num_samples=4)
est.mean().backward()
```

`logits` θ hold independent categorical variables (categories along `dim`) or, with
`variable="bernoulli"`, independent binary variables (Bernoulli logits, samples in {0, 1}).
`f` takes a sample shaped like `logits` (one-hot along `dim`; {0, 1} for Bernoulli) and
returns one loss per example: a tensor whose shape is a leading part of the sample's batch
shape (a scalar means one example). The log-probability of an example is the sum over its
remaining variables. The returned tensor has one entry per example; its value is the Monte
Carlo estimate of `E[f]` and its gradient (with respect to `logits`, and to anything
`f` itself depends on, such as a decoder) is the estimator's.

Estimators (`quasigrad.registry.table()` lists their flags):

=================  ==========================================================================
`exact`          enumeration of every outcome ([`quasigrad.exact.expectation`][quasigrad.exact.expectation])
`reinforce`      score function, optional constant `baseline` (Williams 1992)
`rloo`           leave-one-out baseline, K ≥ 2 (Kool, van Hoof, Welling 2019)
`arm`            augment-REINFORCE-merge, Bernoulli (Yin & Zhou 2019)
`disarm`         ARM with the antithetic noise integrated out (Dong, Mnih, Tucker 2020; categorical
                   variables by stick-breaking, 2021)
`arms`           antithetic REINFORCE with K ≥ 2 coupled samples, Bernoulli (Dimitriev & Zhou 2021)
`double_cv`      leave-one-out plus a Taylor (second) control variate, K ≥ 2 (Titsias & Shi 2022)
`rodeo`          leave-one-out plus discrete-Stein-operator control variates, K ≥ 2 (Shi et al. 2022);
                   by name with a fixed control function; trained: `RODEO`
`rao_blackwell`  sum-and-sample: top-k outcomes summed, the rest sampled (Liu et al. 2019)
`rebar`          REBAR with fixed η, λ (Tucker et al. 2017); trained: `REBAR`
`st` … `darn`  the sample-level (layer-1) estimators, through the same call
=================  ==========================================================================

Estimators that keep state are objects created once and passed as `estimator=` each step
(they are also callable with the same arguments minus `estimator`): `EMABaseline`,
`LearnedBaseline` (NVIL), `REBAR`, `RELAX` and `RODEO`. Their learned parts
carry their own loss inside the returned surrogate (a term whose value is zero), so that one
`backward()` trains the model and the control variate together.

Costs are detached where the estimator says so: a score-function estimator never
differentiates `f` with respect to the sample (`f` may return integers, or come from a
simulator), while `f`'s own parameters still receive `∇ f`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from .. import registry
from .._util import validate as V
from ._problem import _VARIABLES, PathwiseError
from .antithetic import _arms
from .control_variates import REBAR, RELAX, _double_cv, _rebar_fixed, control_variate_mlp
from .pairs import _arm, _disarm
from .pathwise import _exact_objective, _pathwise
from .score_function import EMABaseline, LearnedBaseline, _rao_blackwell, _reinforce, _rloo
from .stein import RODEO, _rodeo_fixed, _rodeo_state, stein_control_net

__all__ = ["expectation", "EMABaseline", "LearnedBaseline", "REBAR", "RELAX", "RODEO", "control_variate_mlp",
           "stein_control_net", "PathwiseError"]


def expectation(f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, *,
                estimator: Union[str, Callable[..., torch.Tensor]] = "rloo", num_samples: Optional[int] = None,
                dim: int = -1, variable: str = "categorical", generator: Optional[torch.Generator] = None,
                tau: Optional[float] = None, **estimator_kwargs: Any) -> torch.Tensor:
    r"""Estimate `E_{D ~ p_θ}[f(D)]` per example; the gradient of the result is the estimator's.

    This is the one place where an estimator's name becomes a gradient estimate: the lab,
    `quasigrad check`, the VAE models and EM all call it. What differs per estimator (its
    implementation, default options, sample counts) comes from its registry entry.

    Args:
        f: a sample shaped like `logits` (one-hot along `dim`; {0, 1} floats for Bernoulli)
            → one loss per example, shape a leading part of the batch shape (`logits` without
            `dim`; a scalar: one example). May be non-differentiable for estimators that do not
            need `∂f/∂D` (`registry.get(name).needs_grad_f`).
        logits: θ, floating, any shape (categorical: categories along `dim`; Bernoulli: logits).
        estimator: a registered name (`quasigrad.registry.names()`) or an estimator object
            (`EMABaseline`, `LearnedBaseline`, `REBAR`, `RELAX`, or any
            callable taking `(f, logits, *, num_samples, dim, variable, generator, **kw)`).
        num_samples: samples (pairs for `arm`/`disarm`) per example; `None` takes the
            estimator's default (`registry.get(name).default_samples`: 2 for `rloo` and
            `double_cv`, 1 otherwise).
        dim: the category dimension (categorical only).
        variable: `"categorical"` or `"bernoulli"`.
        generator: `torch.Generator` for the draws.
        tau: a temperature for the estimators that have one (`registry.get(name).has_tau`),
            ignored by the others, so that one setting serves a comparison across families; a
            `tau` among `estimator_kwargs` is passed as given.
        **estimator_kwargs: the estimator's options (`baseline` for `reinforce`, `k` for
            `rao_blackwell` and `gumbel_rao`, `gap` for `gapped_st`, ...).

    Returns:
        A tensor of shape `f`'s output: the Monte Carlo estimate of `E[f]` per example (the
        exact value for `exact`), whose gradient is the estimator's.

    Raises:
        UnknownEstimatorError: an unknown name.
        ValueError: a variable type the estimator does not support, or a sample count outside
            its range.
        TypeError: a stateful estimator (one that must be an object) given by name.

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
        if info.objective is None:
            raise TypeError(f"estimator {estimator!r} learns as it goes, so it is an object created once: "
                             f"est = quasigrad.registry.get({info.name!r}).state(num_inputs) (or the class "
                             f"itself); put its parameters in the optimiser and pass estimator=est each step")
        impl = info.objective
        kwargs = {**info.defaults, **estimator_kwargs}
        if tau is not None and info.has_tau:
            kwargs.setdefault("tau", tau)
        num_samples = _check_samples(info, num_samples)
    elif callable(estimator):
        impl, kwargs = estimator, estimator_kwargs
    else:
        raise TypeError(f"estimator must be a registered name or an estimator object, got {type(estimator).__name__}")
    V.check_generator(generator, logits.device if isinstance(logits, torch.Tensor) else "cpu")
    return impl(f, logits, num_samples=num_samples, dim=dim, variable=variable, generator=generator, **kwargs)


def _check_samples(info: registry.EstimatorInfo, num_samples: Optional[int]) -> int:
    if num_samples is None:
        return info.default_samples
    k = V.check_int(num_samples, "num_samples")
    if k < info.min_samples or (info.max_samples is not None and k > info.max_samples):
        span = (f"== {info.min_samples} (exactly {info.min_samples} samples)" if info.max_samples == info.min_samples
                else f">= {info.min_samples}" if info.max_samples is None
                else f"in [{info.min_samples}, {info.max_samples}]")
        raise ValueError(f"estimator {info.name!r} needs num_samples {span}, got {k}")
    return k


def _relax_state(num_inputs: int, **kwargs: Any) -> RELAX:
    """RELAX in the form of its VAE experiments: `c(z) = η f(σ_λ(z)) + net(σ_λ(z))` with `net`
    `control_variate_mlp` (one hidden layer of 100 tanh units)."""
    return RELAX(control_variate_mlp(num_inputs), **{"use_f": True, **kwargs})


_BOTH = ("categorical", "bernoulli")
registry.register("exact", family="exact", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=_BOTH, reference="enumeration of every outcome (C ** variables)",
                  objective=_exact_objective)
registry.register("reinforce", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, reference="Williams 1992",
                  objective=_reinforce)
registry.register("rloo", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, reference="Kool, van Hoof, Welling 2019",
                  objective=_rloo, default_samples=2, min_samples=2)
registry.register("arm", family="pair", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=("bernoulli",), reference="Yin & Zhou 2019", objective=_arm, evaluations_per_sample=2,
                  sample_unit="antithetic pair")
registry.register("disarm", family="pair", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=_BOTH, reference="Dong, Mnih, Tucker 2020; categorical: 2021", objective=_disarm,
                  evaluations_per_sample=2, sample_unit="antithetic pair")
registry.register("double_cv", family="control-variate", unbiased=True, needs_grad_f=True,
                  grad_depends_on_sample_only=False, variables=_BOTH, reference="Titsias & Shi 2022",
                  objective=_double_cv, default_samples=2, min_samples=2, extra_evaluations=1)
registry.register("rao_blackwell", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH,
                  reference="Liu, Regier, Tripuraneni, Jordan, McAuliffe 2019", objective=_rao_blackwell,
                  defaults={"k": 4})
registry.register("rebar", family="control-variate", unbiased=True, needs_grad_f=True,
                  grad_depends_on_sample_only=False, variables=_BOTH,
                  reference="Tucker et al. 2017 (by name: fixed η, λ; trained: quasigrad.objective.REBAR)",
                  objective=_rebar_fixed, evaluations_per_sample=3)
registry.register("relax", family="control-variate", unbiased=True, needs_grad_f=True,
                  grad_depends_on_sample_only=False, variables=_BOTH,
                  reference="Grathwohl et al. 2018 (stateful: quasigrad.objective.RELAX)", objective=None,
                  evaluations_per_sample=3, state=_relax_state)
registry.register("arms", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=("bernoulli",), reference="Dimitriev & Zhou 2021",
                  objective=_arms, default_samples=2, min_samples=2, sample_unit="coupled sample")
registry.register("rodeo", family="control-variate", unbiased=True, needs_grad_f=True,
                  grad_depends_on_sample_only=False, variables=_BOTH,
                  reference="Shi, Zhou, Hwang, Titsias, Mackey 2022 (by name: fixed control function; trained: "
                            "quasigrad.objective.RODEO)",
                  objective=_rodeo_fixed, default_samples=2, min_samples=2, state=_rodeo_state)
for _info in registry.entries(layer=1):
    registry.update(_info.name, objective=_pathwise(_info))
