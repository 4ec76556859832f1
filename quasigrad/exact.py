r"""Exact expectations by enumeration: the ground truth that tests and the lab compare against.

For independent categorical variables with logits θ (or Bernoulli variables), and a loss
`f` of the whole sample,

$$ E_{D \sim p_\theta}[f(D)] = \sum_{d} p_\theta(d) f(d) $$

is computed by enumerating every joint outcome `d` of the variables of one example (all
examples at once). Its gradient (by autograd through `p_θ`) is the exact gradient.

`f` follows the convention of [`quasigrad.objective`][quasigrad.objective]: it takes a sample shaped like
`logits` (one-hot along `dim`; `{0, 1}` for Bernoulli) and returns one loss per example,
a tensor whose shape is a leading part of the sample's batch shape (a scalar: one example).
The variables of an example are the remaining positions.

[`estimator_expectation`][quasigrad.exact.estimator_expectation] computes `E_D[ĝ(D)]` exactly for an
estimator whose gradient is a function of the sample alone (ST, GST, ReinMax, ZGR, DARN), by running it on
every outcome through `index`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import torch

from . import registry
from ._util import validate as V

__all__ = ["expectation", "estimator_expectation", "gradient", "num_outcomes", "TooManyOutcomesError"]

DEFAULT_MAX_OUTCOMES = 1 << 16


class TooManyOutcomesError(ValueError):
    """Enumeration would be too large; the message says how many outcomes it would take."""


def _layout(logits, dim, variable):
    V.check_floating(logits)
    if variable not in ("categorical", "bernoulli"):
        raise ValueError(f"variable must be 'categorical' or 'bernoulli', got {variable!r}")
    if variable == "categorical":
        dim = V.category_dim(logits, dim)
        batch_shape = logits.shape[:dim] + logits.shape[dim + 1:]
        n_cat = logits.shape[dim]
    else:
        dim = None
        batch_shape = logits.shape
        n_cat = 2
    return dim, tuple(batch_shape), n_cat


def num_outcomes(logits: torch.Tensor, example_dims: int = 0, *, dim: int = -1, variable: str = "categorical") -> int:
    """How many joint outcomes one example has: `C ** (variables per example)`.

    Args:
        logits: floating logits of the variables.
        example_dims: how many leading batch dimensions index examples; the rest are one example's variables.
        dim: the category dimension (categorical variables).
        variable: `"categorical"` or `"bernoulli"` (then `C = 2`).

    Returns:
        The number of joint outcomes of one example.

    Raises:
        ValueError: `variable` is neither `"categorical"` nor `"bernoulli"`.
    """
    _, batch_shape, n_cat = _layout(logits, dim, variable)
    return n_cat ** math.prod(batch_shape[example_dims:])


def _index_to_sample(idx, logits, dim, variable):
    """Category indices `(..., *batch_shape)` → sample shaped like `(..., *logits.shape)`."""
    lead = idx.dim() - (logits.dim() - (1 if variable == "categorical" else 0))
    if variable == "bernoulli":
        return idx.to(logits.dtype)
    d = dim + lead
    out = torch.zeros(idx.shape[:d] + (logits.shape[dim],) + idx.shape[d:], dtype=logits.dtype, device=logits.device)
    return out.scatter_(d, idx.unsqueeze(d), 1)


def _log_probs(logits, dim, variable):
    if variable == "categorical":
        return torch.log_softmax(logits, dim)
    return torch.stack([torch.nn.functional.logsigmoid(-logits), torch.nn.functional.logsigmoid(logits)], -1)


def _call_many(f, samples):
    """`f` on each sample along the leading dimension, stacked. Uses `torch.vmap` where `f`
    allows it, else a loop."""
    try:
        return torch.vmap(f)(samples)
    except Exception:  # f not vmappable (in-place ops, .item(), Python control flow on values)
        return torch.stack([f(s) for s in samples.unbind(0)])


def _example_dims(f, sample, batch_shape):
    out = f(sample)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"f must return a tensor, got {type(out).__name__}")
    e = out.dim()
    if tuple(out.shape) != tuple(batch_shape[:e]):
        raise ValueError(f"f must return one loss per example: a tensor whose shape is a leading part of the "
                         f"sample's batch shape {tuple(batch_shape)}, got shape {tuple(out.shape)}")
    return e


def _enumerate(f, logits, dim, variable, max_outcomes, chunk_size, per_outcome):
    """Shared loop: for each chunk of outcomes call `per_outcome(idx, samples_fn)` and sum."""
    dim, batch_shape, n_cat = _layout(logits, dim, variable)
    # NaN, +inf or a row without a finite logit would weigh outcomes by NaN (or by nothing at all)
    if variable == "categorical":
        V.check_logits(logits, dim)
    else:
        V.check_not_nan(logits)
    first = torch.zeros(batch_shape, dtype=torch.long, device=logits.device)
    e = _example_dims(f, _index_to_sample(first, logits, dim, variable), batch_shape)
    var_shape = batch_shape[e:]
    n_var = math.prod(var_shape)
    total = n_cat ** n_var
    if total > max_outcomes:
        raise TooManyOutcomesError(
            f"exact enumeration would evaluate {total} outcomes per example ({n_cat} categories ^ {n_var} "
            f"variables), more than max_outcomes={max_outcomes}; use fewer variables, or a Monte Carlo estimate")
    powers = n_cat ** torch.arange(n_var - 1, -1, -1, device=logits.device)
    chunk_size = chunk_size or max(1, min(total, (1 << 22) // max(1, logits.numel())))
    acc = None
    for start in range(0, total, chunk_size):
        codes = torch.arange(start, min(total, start + chunk_size), device=logits.device)
        digits = (codes.unsqueeze(1) // powers) % n_cat                      # (k, n_var)
        k = digits.shape[0]
        idx = digits.view((k,) + (1,) * e + tuple(var_shape)).expand((k,) + tuple(batch_shape))
        part = per_outcome(idx, e, dim)
        acc = part if acc is None else acc + part
    return acc


def _weights(logits, idx, e, dim, variable):
    """`p(outcome)` per example, shape `(k, *example_shape)`, differentiable in `logits`."""
    logp = _log_probs(logits, dim, variable)
    k = idx.shape[0]
    if variable == "categorical":
        lp = logp.unsqueeze(0).expand((k,) + tuple(logp.shape)).gather(dim + 1, idx.unsqueeze(dim + 1)).squeeze(dim + 1)
    else:
        lp = logp.unsqueeze(0).expand((k,) + tuple(logp.shape)).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    return lp.flatten(1 + e).sum(-1).exp() if lp.dim() > 1 + e else lp.exp()


def _weighted_sum(p, values):
    return torch.where(p > 0, p * values, torch.zeros_like(values)).sum(0)


def expectation(f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, *, dim: int = -1,
                variable: str = "categorical", max_outcomes: int = DEFAULT_MAX_OUTCOMES,
                chunk_size: Optional[int] = None) -> torch.Tensor:
    """Exact `E[f(D)]` per example, by enumerating every joint outcome of an example's variables.

    The result is differentiable: its gradient with respect to `logits` (and any parameter
    `f` uses) is the exact gradient.

    Args:
        f: the loss: takes a sample shaped like `logits` (one-hot along `dim`; `{0, 1}` for Bernoulli) and
            returns one loss per example.
        logits: floating logits θ; NaN, `+inf` or a row without a finite logit is an error.
        dim: the category dimension (categorical variables).
        variable: `"categorical"` or `"bernoulli"`.
        max_outcomes: the most outcomes one example may have.
        chunk_size: how many outcomes to evaluate at once; by default chosen from the size of `logits`.

    Returns:
        `E[f(D)]`, one value per example (the shape of `f`'s output).

    Raises:
        TooManyOutcomesError: one example has more than `max_outcomes` outcomes.

    Example:
        >>> logits = torch.zeros(3, 2, requires_grad=True)       # three fair coins as categoricals
        >>> expectation(lambda d: d[..., 1].sum(), logits)        # expected number of heads
        tensor(1.5000, grad_fn=<SumBackward1>)
    """
    V.check_int(max_outcomes, "max_outcomes")

    def per_outcome(idx, e, d):
        values = _call_many(f, _index_to_sample(idx, logits, d, variable))
        return _weighted_sum(_weights(logits, idx, e, d, variable), values.to(logits.dtype))

    return _enumerate(f, logits, dim, variable, max_outcomes, chunk_size, per_outcome)


def gradient(f: Callable, logits: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The exact gradient `∇θ Σ_examples E[f(D)]` as a tensor shaped like `logits`.

    Args:
        f: the loss, as for [`expectation`][quasigrad.exact.expectation].
        logits: floating logits θ (detached inside; the gradient is with respect to them).
        **kwargs: passed to [`expectation`][quasigrad.exact.expectation] (`dim`, `variable`,
            `max_outcomes`, `chunk_size`).

    Returns:
        The exact gradient, shaped like `logits`.
    """
    V.check_floating(logits)
    theta = logits.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(expectation(f, theta, **kwargs).sum(), theta)
    return grad


def estimator_expectation(f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor,
                          estimator: Union[str, Callable], *, dim: int = -1, variable: str = "categorical",
                          max_outcomes: int = DEFAULT_MAX_OUTCOMES, chunk_size: Optional[int] = None,
                          **estimator_kwargs: Any) -> torch.Tensor:
    """A surrogate whose value is the exact `E[f(D)]` per example and whose gradient is the
    exact expectation `E_D[ĝ(D)]` of an estimator's gradient.

    Each outcome `d` is passed to the estimator as `index` and weighted by `sg(p(d))`.

    Args:
        f: the loss, as for [`expectation`][quasigrad.exact.expectation].
        logits: floating logits θ.
        estimator: a registered name or a sample-level function taking `index=`; it must have a gradient that
            is a function of the sample alone (`st`, `gst`, `reinmax`, `zgr`, `darn`).
        dim: the category dimension (categorical variables).
        variable: `"categorical"` or `"bernoulli"`.
        max_outcomes: the most outcomes one example may have.
        chunk_size: how many outcomes to evaluate at once; by default chosen from the size of `logits`.
        **estimator_kwargs: passed to the estimator (over a registered estimator's defaults).

    Returns:
        The surrogate, one value per example; backpropagate it to get `E_D[ĝ(D)]`.

    Raises:
        ValueError: a registered estimator draws noise beyond the sample.
        TypeError: `estimator` is neither a name nor a function.
        TooManyOutcomesError: one example has more than `max_outcomes` outcomes.
    """
    V.check_int(max_outcomes, "max_outcomes")
    if isinstance(estimator, str):
        info = registry.get(estimator)
        if not info.grad_depends_on_sample_only:
            raise ValueError(f"estimator {estimator!r} draws noise beyond the sample D, so its expected gradient "
                             f"cannot be enumerated; estimate it by Monte Carlo (quasigrad.lab.quality)")
        fn = info.function(variable)
        estimator_kwargs = {**info.defaults, **estimator_kwargs}
    elif callable(estimator):
        fn = estimator
    else:
        raise TypeError(f"estimator must be a registered name or a function, got {type(estimator).__name__}")

    def per_outcome(idx, e, d):
        k = idx.shape[0]
        expanded = logits.unsqueeze(0).expand((k,) + tuple(logits.shape))
        if variable == "categorical":
            y = fn(expanded, dim=d + 1, index=idx, **estimator_kwargs)
        else:
            y = fn(expanded, index=idx, **estimator_kwargs)
        values = _call_many(f, y)
        with torch.no_grad():
            p = _weights(logits.detach(), idx, e, d, variable)
        return _weighted_sum(p, values.to(logits.dtype))

    return _enumerate(f, logits, dim, variable, max_outcomes, chunk_size, per_outcome)
