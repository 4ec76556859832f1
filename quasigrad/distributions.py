r"""`torch.distributions` classes whose `rsample()` is a quasigrad estimator.

`OneHotCategorical` and `Bernoulli` subclass the PyTorch distributions of the same
name, so `log_prob`, `entropy`, `mean`, `mode`, `enumerate_support` and the registered
KL divergences (`torch.distributions.kl_divergence`) are PyTorch's own; what they add is
`has_rsample = True` and an `rsample()` whose value is the hard sample (one-hot, or {0, 1})
and whose gradient is the chosen estimator's (any registered layer-1 name: `"st"`,
`"reinmax"`, `"gst"`, `"zgr"`, `"darn"`, `"stgs"`, `"gumbel_rao"`):

```python
q = quasigrad.distributions.OneHotCategorical(logits=encoder_logits, estimator="reinmax", tau=1.0)
z = q.rsample()                              # one-hot, ReinMax gradient
kl = torch.distributions.kl_divergence(q, prior).sum()
```

`rsample()` on a draw equals the layer-1 function on the same draw:
`OneHotCategorical(logits=θ, estimator="reinmax", tau=τ).rsample()` gives the gradient of
`quasigrad.reinmax(θ, tau=τ)`. A distribution built from `probs` differentiates through
`logits = log(probs)` (normalised), which gives the same gradient along the simplex.

Differences from PyTorch's `OneHotCategoricalStraightThrough`: the first positional
argument is `logits` (PyTorch's is `probs`; pass `probs=` by keyword), draws take an
optional `generator`, and `sample()` draws with the same sampler as `rsample()`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import distributions as D

from . import registry
from ._util import validate as V

__all__ = ["OneHotCategorical", "Bernoulli", "estimator_sampler"]

_RESERVED = ("index", "generator", "dim", "tau")


def estimator_sampler(estimator: str, variable: str = "categorical", *, tau: float = 1.0,
                      **params: Any) -> Tuple[str, Callable, Dict[str, object]]:
    """Look up a registered layer-1 estimator and check its settings.

    Args:
        estimator: a registered name with a sample-level function for `variable`.
        variable: `"categorical"` or `"bernoulli"`.
        tau: temperature (> 0); an estimator without one accepts only `1.0`.
        **params: the estimator's other parameters (`gap=` for `"gst"`, `k=` for
            `"gumbel_rao"`); registered defaults fill the rest.

    Returns:
        `(name, function, keywords)`: `function(logits, **keywords, generator=...)` draws
        the hard sample with the estimator's gradient.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        ValueError: no sample-level function for `variable`, a bad `tau`, or `hard=False`
            (a relaxed sample is not a draw; use `torch.distributions.RelaxedOneHotCategorical`).
        TypeError: a parameter the estimator does not take.
    """
    if not isinstance(estimator, str):
        raise TypeError(f"estimator must be a registered name (str), got {type(estimator).__name__}")
    info = registry.get(estimator)
    fn = {"categorical": info.categorical, "bernoulli": info.bernoulli}.get(variable)
    if variable not in ("categorical", "bernoulli"):
        raise ValueError(f"variable must be 'categorical' or 'bernoulli', got {variable!r}")
    if fn is None:
        usable = [e.name for e in registry.entries(layer=1) if getattr(e, variable) is not None]
        raise ValueError(f"estimator {estimator!r} has no sample-level function for {variable} variables "
                         f"(it is an objective-layer estimator); sample-level estimators: {', '.join(usable)}")
    tau = V.check_positive(tau, "tau")
    if not info.has_tau and tau != 1.0:
        raise ValueError(f"estimator {estimator!r} has no temperature; tau must be 1.0, got {tau}")
    first = next(iter(inspect.signature(fn).parameters))
    accepted = sorted(n for n, p in inspect.signature(fn).parameters.items()
                      if n != first and n not in _RESERVED
                      and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(f"estimator {estimator!r} takes no parameter(s) {', '.join(unknown)}; "
                        f"its parameters: {', '.join(accepted) or 'none besides tau'}")
    kwargs: Dict[str, object] = {k: v for k, v in info.defaults.items() if k in accepted}
    kwargs.update(params)
    if kwargs.get("hard", True) is not True:
        raise ValueError("hard=False gives a relaxed sample, not a draw; use "
                         "torch.distributions.RelaxedOneHotCategorical (or quasigrad.gumbel_softmax) for that")
    if info.has_tau:
        kwargs["tau"] = tau
    return info.name, fn, kwargs


class _EstimatorMixin:
    """What both distributions share: the estimator settings, `rsample`, `sample` and `repr`."""

    has_rsample = True
    _variable = "categorical"

    def _setup(self, estimator, tau, generator, params) -> None:
        self.estimator, self._fn, self._kwargs = estimator_sampler(estimator, self._variable, tau=tau, **params)
        self.tau = float(tau)
        self.estimator_params = dict(params)
        self.generator = generator

    def _copy_setup(self, new) -> None:
        for name in ("estimator", "_fn", "_kwargs", "tau", "estimator_params", "generator"):
            setattr(new, name, getattr(self, name))

    def _draw(self, logits: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError

    def rsample(self, sample_shape=(), *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The hard sample, shaped `sample_shape + batch_shape + event_shape`, whose gradient
        with respect to the parameters is the estimator's.

        Args:
            sample_shape: leading shape of independent draws.
            generator: for this draw (default: the distribution's `generator`, else PyTorch's).

        Returns:
            One-hot vectors (`OneHotCategorical`) or 0/1 values (`Bernoulli`) in the
            parameters' dtype.
        """
        shape = self._extended_shape(torch.Size(sample_shape))  # type: ignore[attr-defined]
        logits = self.logits.expand(shape)                       # type: ignore[attr-defined]
        gen = self.generator if generator is None else generator
        V.check_generator(gen, logits.device)
        return self._draw(logits, gen)

    def sample(self, sample_shape=(), *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A draw without gradient, by the same sampler as `rsample`."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def __repr__(self) -> str:
        base = super().__repr__()  # type: ignore[misc]
        extra = f"estimator={self.estimator!r}, tau={self.tau}" + "".join(
            f", {k}={v!r}" for k, v in self.estimator_params.items())
        return base[:-1] + (", " if not base.endswith("()") else "") + extra + ")"


class OneHotCategorical(_EstimatorMixin, D.OneHotCategorical):
    """One-hot categorical distribution whose `rsample` is a quasigrad estimator.

    Args:
        logits: unnormalised log-probabilities, shape `batch_shape + (K,)`.
        probs: probabilities (instead of `logits`).
        estimator: a registered layer-1 estimator name (default `"st"`).
        tau: the estimator's temperature (`1.0` for those without one).
        generator: default `torch.Generator` for draws.
        validate_args: as in `torch.distributions`.
        **params: the estimator's other parameters (`gap=`, `k=`).

    Example:
        >>> theta = torch.zeros(2, 3, requires_grad=True)
        >>> q = OneHotCategorical(logits=theta, estimator="reinmax", generator=torch.Generator().manual_seed(0))
        >>> z = q.rsample((4,))
        >>> tuple(z.shape), z.sum(-1).unique().tolist()
        ((4, 2, 3), [1.0])
    """

    _variable = "categorical"

    def __init__(self, logits: Optional[torch.Tensor] = None, probs: Optional[torch.Tensor] = None, *,
                 estimator: str = "st", tau: float = 1.0, generator: Optional[torch.Generator] = None,
                 validate_args: Optional[bool] = None, **params: Any):
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)
        self._setup(estimator, tau, generator, params)

    def expand(self, batch_shape: Sequence[int], _instance: Optional["OneHotCategorical"] = None) -> "OneHotCategorical":
        """A view of this distribution with batch shape `batch_shape`, keeping the estimator settings.

        Args:
            batch_shape: the new batch shape (as `torch.distributions.Distribution.expand`).
            _instance: internal to `torch.distributions`.

        Returns:
            The expanded distribution, with the same estimator, temperature, generator and parameters.
        """
        new = self._get_checked_instance(OneHotCategorical, _instance)
        new = super().expand(batch_shape, _instance=new)
        self._copy_setup(new)
        return new

    def _draw(self, logits, generator):
        return self._fn(logits, dim=-1, generator=generator, **self._kwargs)


class Bernoulli(_EstimatorMixin, D.Bernoulli):
    """Bernoulli distribution whose `rsample` is a quasigrad estimator (the binary form in
    `quasigrad.bernoulli`). Arguments as `OneHotCategorical`, with `logits` the
    log-odds of 1.

    Example:
        >>> a = torch.zeros(5, requires_grad=True)
        >>> b = Bernoulli(logits=a, estimator="st", generator=torch.Generator().manual_seed(0)).rsample()
        >>> set(b.tolist()) <= {0.0, 1.0}
        True
    """

    _variable = "bernoulli"

    def __init__(self, logits=None, probs=None, *, estimator: str = "st", tau: float = 1.0,
                 generator: Optional[torch.Generator] = None, validate_args: Optional[bool] = None, **params: Any):
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)
        if not self._param.dtype.is_floating_point:
            raise TypeError(f"logits/probs must be floating point, got dtype {self._param.dtype}")
        self._setup(estimator, tau, generator, params)

    def expand(self, batch_shape: Sequence[int], _instance: Optional["Bernoulli"] = None) -> "Bernoulli":
        """A view of this distribution with batch shape `batch_shape`, keeping the estimator settings.

        Args:
            batch_shape: the new batch shape (as `torch.distributions.Distribution.expand`).
            _instance: internal to `torch.distributions`.

        Returns:
            The expanded distribution, with the same estimator, temperature, generator and parameters.
        """
        new = self._get_checked_instance(Bernoulli, _instance)
        new = super().expand(batch_shape, _instance=new)
        self._copy_setup(new)
        return new

    def _draw(self, logits, generator):
        return self._fn(logits, generator=generator, **self._kwargs)
