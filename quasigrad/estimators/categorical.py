r"""Sample-level estimators for categorical variables (layer 1).

Every function takes `logits` θ and returns the hard one-hot sample `D ~ Categorical(softmax(θ))` along `dim`, in
`logits`' dtype; what differs is the backward pass. Notation: `π = softmax(θ)`, `π_τ = softmax(θ/τ)`, `J(q) = diag(q) − q qᵀ`
(the Jacobian of softmax at output `q`), `g = ∂L/∂D`.

Each function's `Args:` describe `logits`, `tau`, `dim`, `index` and `generator`. `1/τ` must be finite in the compute
dtype, where `θ/τ` is formed after subtracting each row's max (for `τ < 1`), so logits near the float range or a small
`τ` give finite values, never `inf − inf`. A given `index` lets two estimators be compared on the same draws and lets
[`quasigrad.exact`][quasigrad.exact] enumerate them.

Half-precision logits are computed in float32 inside and the gradient is returned in the logits' dtype. The estimators
whose gradient is a function of `D` alone (`st`, `gapped_st`, `reinmax`, `zgr`, `darn`) are `torch.autograd.Function`s
with hand-written backward passes that store only the probabilities and the drawn index. On float32/float64 CPU
logits, with `τ = 1` and no `index`, they (and `gumbel_softmax` and `gumbel_rao`) run through the fused kernels as
PyTorch operators (`torch.ops.quasigrad`, see `quasigrad.estimators._ops`), which store the logits (not a copy) and
each row's max instead of the probabilities: there, modifying the logits in place between forward and backward raises
autograd's usual error. Every path draws from the same random streams, so the same generator state gives the same
sample with or without the kernels, on any layout and `dim`, compiled or not.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Dict, Optional

import torch

from .. import registry
from .._util import validate as V
from . import _eager, _native, _ops, _streams
from ._backward import _k_darn, _k_reinmax, _k_st, _k_zgr
from ._sampling import compute_dtype, draw, is_compiling, seed

__all__ = ["st", "gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "zgr", "darn"]


# --------------------------------------------------------------------------------------------
# Shared pieces


_NO_TAU = object()


def _prepare(logits, dim, generator, tau=_NO_TAU):
    V.check_floating(logits)
    dim = V.category_dim(logits, dim)
    V.check_generator(generator, logits.device)
    if tau is not _NO_TAU:
        tau = V.check_temperature(tau, compute_dtype(logits.dtype))
    return dim, tau


def _tempered_softmax(z, tau, dim, dtype=None):
    """`softmax(z/τ)` (in `dtype`, default `z`'s) that is finite wherever the softmax of
    `z` is: for `τ < 1` the row max (detached) is subtracted before dividing, so that a
    `|z|/τ` beyond the float range gives the limit rather than `inf − inf`."""
    z = z if dtype is None else z.to(dtype)
    if tau < 1.0:
        z = z - z.detach().amax(dim, keepdim=True)
    return torch.softmax(z / tau, dim)


def _draw(logits, dim, index, generator):
    """`(π, index)`: a fresh draw by PyTorch operators (`quasigrad._sampling.draw`), or the
    caller's `index`, checked, with `π = softmax` in the compute dtype."""
    if index is None:
        return draw(logits, dim, generator)
    with torch.no_grad():
        probs = torch.softmax(logits.detach(), dim, dtype=compute_dtype(logits.dtype))
        index = V.check_index(index, logits, dim)
        if not is_compiling():
            if not bool(torch.isfinite(probs).all()):
                V.describe_bad_logits(logits, dim)
            V.check_index_possible(logits, index, dim)
    return probs, index


def _moved(x, dim):
    """`x` with `dim` last (a view), and the function that moves a result back."""
    if dim == x.dim() - 1:
        return x, lambda y: y
    return x.movedim(dim, -1), lambda y: y.movedim(-1, dim)


def _fused(logits, dim, index, generator, mode, cap=0.0):
    """The estimator through the fused operator `quasigrad::categorical` (a fresh draw, and the
    backward formula `mode`), or None where it does not apply."""
    if index is not None or not _ops.use_kernels(logits):
        return None
    x, back = _moved(logits, dim)
    if _ops.dynamo_compiling():
        return back(_ops.categorical(x, seed(generator, logits.device), mode, cap, dim))
    return back(_ops.categorical_eager(x, generator, mode, cap, dim))


def _one_hot(index, like, dim):
    if _ops.functorch_active():   # vmap has a batching rule for scatter, not for scatter_
        return torch.zeros_like(like).scatter(dim, index.unsqueeze(dim), 1)
    return torch.zeros_like(like).scatter_(dim, index.unsqueeze(dim), 1)


class _LinearInG(torch.autograd.Function):
    """Forward: the one-hot of `index`. Backward: `kernel(g, saved)`, a function linear in `g`
    defined by each estimator. Saves only its probability tensors and the index. A separate
    `setup_context` and a generated vmap rule let `torch.func` (grad, jacrev, vmap) see
    through it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, index, dim, kernel, *saved):
        return _one_hot(index, logits, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, index, dim, kernel, *saved = inputs
        ctx.dim, ctx.kernel, ctx.dtype = dim, kernel, logits.dtype
        ctx.save_for_backward(index, *saved)
        ctx.set_materialize_grads(True)

    @staticmethod
    def backward(ctx, grad):
        index, *saved = ctx.saved_tensors
        g = grad.to(saved[0].dtype)
        out = ctx.kernel(g, index, ctx.dim, *saved)
        return (out.to(ctx.dtype), None, None, None) + (None,) * len(saved)


def _apply(logits, index, dim, kernel, *saved):
    return _LinearInG.apply(logits, index, dim, kernel, *saved)


def _estimate(logits, dim, tau, index, generator, mode, kernel, tau_kernel=None):
    """A sample-level estimator: at `τ = 1` the fused kernels with formula `mode` where they
    apply, else `kernel` on `π`; at `τ ≠ 1`, `tau_kernel(π, π_τ)` gives the kernel and the
    tensors it saves."""
    fused = _fused(logits, dim, index, generator, mode) if tau == 1.0 else None
    if fused is not None:
        return fused
    probs, index = _draw(logits, dim, index, generator)
    if tau == 1.0:
        return _apply(logits, index, dim, kernel, probs)
    with torch.no_grad():
        pi_tau = _tempered_softmax(logits.detach(), tau, dim, probs.dtype)
    return _apply(logits, index, dim, *tau_kernel(probs, pi_tau))


# --------------------------------------------------------------------------------------------
# Public estimators


def st(logits: torch.Tensor, *, tau: float = 1.0, dim: int = -1, index: Optional[torch.Tensor] = None,
       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Straight-through estimator (Bengio et al. 2013; Liu et al. 2023, Algorithm 1).

    Forward: the one-hot sample `D ~ Categorical(softmax(θ))`. Backward: the gradient of the surrogate `softmax(θ/τ)`:

    $$ \hat\nabla_\theta = \tfrac{1}{\tau} J(\pi_\tau)\, g $$

    (the factor `1/τ` is what differentiating `softmax(θ/τ)` gives, as in the paper's algorithm and in PyTorch's
    straight-through Gumbel-softmax; at `τ = 1` it is `J(π) g`).

    Bias: exact in expectation at `τ = 1` when the loss is linear in `D` (`E[J(π) g] = ∇θ ⟨π, g⟩`); biased for
    non-linear losses (first-order accurate).

    Args:
        logits: the logits θ, floating, any shape; `-inf` masks a category.
        tau: the surrogate's temperature, > 0.
        dim: the category dimension.
        index: optional int64 sample already drawn (`logits`' shape without `dim`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The one-hot sample `D`, shaped like `logits`, in its dtype.

    Example:
        >>> logits = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
        >>> y = st(logits, generator=torch.Generator().manual_seed(0))
        >>> y.sum(-1).tolist()
        [1.0]
        >>> (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
        >>> [round(v, 4) for v in logits.grad[0].tolist()]   # J(π) g: sums to zero
        [-0.1418, -0.1408, 0.2826]
    """
    if index is None and type(tau) is float and tau == 1.0:
        fast = _eager.shortest(logits, dim, generator, _native.ST, 0.0)
        if fast is not None:
            return fast
    dim, tau = _prepare(logits, dim, generator, tau)
    return _estimate(logits, dim, tau, index, generator, _native.ST, _k_st,
                     lambda probs, q: (functools.partial(_k_st, scale=1.0 / tau), q))


def reinmax(logits: torch.Tensor, *, tau: float = 1.0, dim: int = -1, index: Optional[torch.Tensor] = None,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""ReinMax (Liu, Liu, Gao, Chen, Han 2023, "Bridging Discrete and Backpropagation:
    Straight-Through and Beyond", Algorithm 2): a second-order (Heun's method) estimator.

    Forward: the one-hot sample `D`. Backward, with `π₁ = ½(π_τ + D)`:

    $$ \hat\nabla_\theta = 2 J(\pi_1)\, g - \tfrac12 J(\pi)\, g $$

    Bias: at `τ = 1` exact in expectation for every loss quadratic in `D` (several independent variables included);
    biased beyond second order. At `τ = 1` its gradient equals [`zgr`][quasigrad.estimators.categorical.zgr]'s on
    every draw.

    Args:
        logits: the logits θ, floating, any shape; `-inf` masks a category.
        tau: the temperature of `π_τ`, > 0.
        dim: the category dimension.
        index: optional int64 sample already drawn (`logits`' shape without `dim`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The one-hot sample `D`, shaped like `logits`, in its dtype.
    """
    if index is None and type(tau) is float and tau == 1.0:
        fast = _eager.shortest(logits, dim, generator, _native.ZGR, 0.0)
        if fast is not None:
            return fast
    dim, tau = _prepare(logits, dim, generator, tau)
    # At τ = 1, 2 J(½(π + D)) g − ½ J(π) g reduces to ZGR's kernel (same values, fewer passes).
    return _estimate(logits, dim, tau, index, generator, _native.ZGR, _k_zgr,
                     lambda probs, pi_tau: (_k_reinmax, probs, pi_tau))


def zgr(logits: torch.Tensor, *, dim: int = -1, index: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""ZGR, the Gumbel-Rao estimator at zero temperature (Shekhovtsov 2023, "Cold Analysis of
    Rao-Blackwellized Straight-Through Gumbel-Softmax Gradient Estimator").

    Forward: the one-hot sample `D`. Backward: the average of straight-through (`τ = 1`) and DARN on the same draw:

    $$ \hat\nabla_\theta = \tfrac12 \big[J(\pi)\, g + \langle g, D-\pi\rangle (D-\pi)\big] $$

    Bias: exact in expectation for losses quadratic in `D`; biased beyond. No temperature.

    Args:
        logits: the logits θ, floating, any shape; `-inf` masks a category.
        dim: the category dimension.
        index: optional int64 sample already drawn (`logits`' shape without `dim`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The one-hot sample `D`, shaped like `logits`, in its dtype.
    """
    if index is None:
        fast = _eager.shortest(logits, dim, generator, _native.ZGR, 0.0)
        if fast is not None:
            return fast
    dim, _ = _prepare(logits, dim, generator)
    return _estimate(logits, dim, 1.0, index, generator, _native.ZGR, _k_zgr)


def darn(logits: torch.Tensor, *, dim: int = -1, index: Optional[torch.Tensor] = None,
         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""DARN estimator (Gregor, Danihelka, Mnih, Blundell, Wierstra 2014, "Deep AutoRegressive
    Networks"), in its categorical form as written by Shekhovtsov (2023).

    Forward: the one-hot sample `D`. Backward:

    $$ \hat\nabla_\theta = \langle g, D-\pi\rangle\,(D-\pi) $$

    Bias: biased in general (exact for linear losses only when `g` is constant across categories up to a shift). No
    temperature.

    Args:
        logits: the logits θ, floating, any shape; `-inf` masks a category.
        dim: the category dimension.
        index: optional int64 sample already drawn (`logits`' shape without `dim`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The one-hot sample `D`, shaped like `logits`, in its dtype.
    """
    if index is None:
        fast = _eager.shortest(logits, dim, generator, _native.DARN, 0.0)
        if fast is not None:
            return fast
    dim, _ = _prepare(logits, dim, generator)
    return _estimate(logits, dim, 1.0, index, generator, _native.DARN, _k_darn)


def gapped_st(logits: torch.Tensor, *, gap: float = 1.0, tau: float = 1.0, dim: int = -1,
              index: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Gapped straight-through, GST (Fan, Zhong, Qian, Dong, Chen, Zhang 2022, "Training Discrete
    Deep Generative Models via Gapped Straight-Through Estimator").

    With `m = argmax θ`, the perturbed logits (the shift computed on detached logits) are `θ'_D = θ_m` and `θ'_j =
    min(θ_j, θ_m − gap)` for `j ≠ D`, so that the drawn category leads every other by at least `gap`. Forward: the
    one-hot sample `D`. Backward: straight-through through `softmax(θ'/τ)`, i.e. `(1/τ) J(softmax(θ'/τ)) g`.

    Bias: biased; no noise beyond `D` (deterministic given the draw).

    Args:
        logits: the logits θ, floating, any shape; `-inf` masks a category.
        gap: the least lead of the drawn category in the perturbed logits, > 0.
        tau: the surrogate's temperature, > 0.
        dim: the category dimension.
        index: optional int64 sample already drawn (`logits`' shape without `dim`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The one-hot sample `D`, shaped like `logits`, in its dtype.
    """
    if index is None and type(tau) is float and tau == 1.0 and type(gap) is float and 0.0 < gap < math.inf:
        fast = _eager.shortest(logits, dim, generator, _native.GST, math.exp(-gap))
        if fast is not None:
            return fast
    dim, tau = _prepare(logits, dim, generator, tau)
    gap = V.check_positive(gap, "gap")
    fused = _fused(logits, dim, index, generator, _native.GST, math.exp(-gap)) if tau == 1.0 else None
    if fused is not None:
        return fused
    probs, index = _draw(logits, dim, index, generator)
    with torch.no_grad():
        idx = index.unsqueeze(dim)
        if tau == 1.0:
            # softmax(θ') straight from π: exp θ'_j = min(exp θ_j, exp(θ_m − gap)), exp θ'_D = exp θ_m
            top = probs.amax(dim, keepdim=True)
            q = torch.minimum(probs, top * math.exp(-gap)).scatter(dim, idx, top)
            q = q.div_(q.sum(dim, keepdim=True))
        else:
            # θ' − θ_m: every entry at most 0, so that dividing by τ cannot overflow to inf − inf
            theta = logits.detach().to(probs.dtype)
            shifted = (theta - theta.amax(dim, keepdim=True)).clamp_max_(-gap).scatter_(dim, idx, 0.0)
            q = torch.softmax(shifted / tau, dim)
    return _apply(logits, index, dim, _k_st if tau == 1.0 else functools.partial(_k_st, scale=1.0 / tau), q)


def gumbel_softmax(logits: torch.Tensor, tau: float = 1.0, hard: bool = False, eps: float = 1e-10, dim: int = -1, *,
                   index: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Gumbel-softmax / Concrete relaxation (Jang, Gu, Poole 2017; Maddison, Mnih, Teh 2017) and,
    with `hard=True`, straight-through Gumbel-softmax (STGS).

    Draws `G ~ Gumbel(0, 1)` and returns the relaxed sample `y = softmax((θ + G)/τ)`; with `hard=True` returns the
    one-hot of `D = argmax(θ + G)` (distributed as `Categorical(softmax θ)`) with backward `(1/τ) J(y) g`, the
    gradient of `one_hot(D) − sg(y) + y`.

    `D` and `G` are drawn as `D` first (the draw every straight-through estimator makes, so the same generator state
    gives the same `D` as [`st`][quasigrad.estimators.categorical.st]), then `G` conditioned on `argmax(θ + G) = D`
    (Maddison et al. 2014), which together is exactly unconditioned Gumbel noise. The noise is built from exponential
    draws that are never 0 or infinite, so the output is never NaN or inf on finite logits
    (`torch.nn.functional.gumbel_softmax` can produce NaN/inf). With `index` given, `D = index` and `G` is conditioned
    on it (the noise Gumbel-Rao averages over).

    Bias: the relaxed sample is a biased estimator of the discrete expectation for any `τ > 0`; STGS is biased (it
    depends on `G` beyond `D`).

    Args:
        logits: the logits θ, floating, any shape; `-inf` masks a category.
        tau: the relaxation's temperature, > 0.
        hard: return the one-hot `D` (STGS) instead of the relaxed `y`; must be a bool.
        eps: unused and deprecated, as in PyTorch (the positional arguments are those of
            `torch.nn.functional.gumbel_softmax`): a value other than the default gives a `DeprecationWarning`.
        dim: the category dimension.
        index: optional int64 sample `D` already drawn (`logits`' shape without `dim`).
        generator: optional `torch.Generator` for the draws.

    Returns:
        `y` (or, with `hard=True`, the one-hot `D`), shaped like `logits`, in its dtype.
    """
    dim, tau = _prepare(logits, dim, generator, tau)
    if not isinstance(hard, bool):
        raise TypeError(f"hard must be a bool, got {hard!r}")
    if eps != 1e-10:
        warnings.warn("gumbel_softmax: eps is deprecated and has no effect", DeprecationWarning, stacklevel=2)
    if index is not None:
        index = V.check_index(index, logits, dim)
    s_ = seed(generator, logits.device)
    x, back = _moved(logits, dim)
    # the fused operator: draw, noise and softmax in one sweep (a given index takes the PyTorch path, which
    # stays exact where the chosen category's probability underflows)
    if index is None and _ops.use_kernels(logits):
        return back(_ops.gumbel_softmax(x, s_, index, tau, hard, dim))
    cdt = compute_dtype(logits.dtype)
    with torch.no_grad():
        theta = x.detach().to(cdt)
        m = theta.amax(-1, keepdim=True)
        e = torch.exp(theta - m)
        total = e.sum(-1, keepdim=True)
        V.check_finite_rows(total.squeeze(-1), logits, dim)
        if index is None:
            u = _streams.row_uniforms(s_, theta.shape[:-1], cdt)
            index = _ops.inverse_cdf(e, u * total.squeeze(-1))
        elif not is_compiling() and bool(torch.isneginf(theta.gather(-1, index.unsqueeze(-1))).any()):
            raise ValueError("index selects a category whose probability is 0 (logit -inf); "
                             "a sample can only hold categories with finite logits")
        rows = theta.numel() // theta.shape[-1]
        big_e = -torch.log(_streams.noise_uniforms(s_, rows, theta.shape[-1], dtype=cdt).reshape(theta.shape))
        idx = index.unsqueeze(-1)
        a = total / big_e.gather(-1, idx)
        # G with θ + G − max θ = log r (see quasigrad.estimators._ops.relaxed); finite where θ = −inf
        noise = torch.log(torch.addcmul(e, a, big_e)).neg_().scatter(-1, idx, (m - theta).gather(-1, idx))
    y = _tempered_softmax(x.to(cdt) + noise, tau, -1)
    if not hard:
        return back(y).to(logits.dtype)
    return _apply(logits, index, dim, functools.partial(_k_st, scale=1.0 / tau), back(y.detach()))


class _GumbelRao(torch.autograd.Function):
    """GR-MCK by PyTorch operators (where the fused operator does not apply): the k conditional
    Gumbel draws are made in backward, in chunks, from the noise stream of the call's seed, so
    peak memory does not grow with k."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, index, seed_, dim, tau, k):
        return _one_hot(index, logits, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, index, seed_, dim, tau, k = inputs
        ctx.save_for_backward(logits.detach(), index, seed_)
        ctx.args = (dim, tau, k)

    @staticmethod
    def backward(ctx, grad):
        theta, index, seed_ = ctx.saved_tensors
        dim, tau, k = ctx.args
        cdt = compute_dtype(theta.dtype)
        out = _ops.gumbel_rao_grad(theta.to(cdt).movedim(dim, -1), index, grad.to(cdt).movedim(dim, -1), seed_, tau, k)
        return out.movedim(-1, dim).to(theta.dtype), None, None, None, None, None


def gumbel_rao(logits: torch.Tensor, *, tau: float = 1.0, k: int = 10, dim: int = -1,
               index: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Gumbel-Rao Monte Carlo estimator, GR-MCK (Paulus, Maddison, Krause 2021, "Rao-Blackwellizing the
    Straight-Through Gumbel-Softmax Gradient Estimator").

    Forward: the one-hot sample `D`. Backward: given `D`, draw `k` perturbed logits `z⁽ⁱ⁾ = θ + G⁽ⁱ⁾` conditioned on
    `argmax z⁽ⁱ⁾ = D` (`z_D = log Z − log E_D`, `z_j = −log(E_j e^{−θ_j} + E_D/Z)`, `E ~ Exp(1)`) and use the average
    of `softmax((θ + sg(G⁽ⁱ⁾))/τ)` as the straight-through surrogate:

    $$ \hat\nabla_\theta = \frac{1}{k\tau} \sum_i J\big(\mathrm{softmax}(z^{(i)}/\tau)\big)\, g $$

    This is STGS with its noise beyond `D` integrated out by Monte Carlo: same expectation, lower variance. As `τ → 0`
    (and `k → ∞`) it tends to [`zgr`][quasigrad.estimators.categorical.zgr]. Biased. Peak memory does not grow with
    `k`: the draws are made in the backward pass, from a seed drawn from `generator` with the sample (on the CPU one
    row at a time in the fused kernel, elsewhere in chunks). Draw `i = 0` is the noise
    [`gumbel_softmax`][quasigrad.estimators.categorical.gumbel_softmax] uses with the same generator state, so at `k =
    1` the two give the same gradient.

    Args:
        logits: the logits θ, floating, any shape; `-inf` masks a category.
        tau: the surrogate's temperature, > 0.
        k: the number of conditional Gumbel draws, ≥ 1.
        dim: the category dimension.
        index: optional int64 sample already drawn (`logits`' shape without `dim`); then nothing is drawn.
        generator: optional `torch.Generator` for the draws.

    Returns:
        The one-hot sample `D`, shaped like `logits`, in its dtype.
    """
    dim, tau = _prepare(logits, dim, generator, tau)
    k = V.check_int(k, "k", minimum=1)
    if index is not None:
        index = _draw(logits, dim, index, generator)[1]
    s_ = seed(generator, logits.device)
    if _ops.use_kernels(logits):
        x, back = _moved(logits, dim)
        return back(_ops.gumbel_rao(x, s_, index, tau, k, dim))
    if index is None:
        index = draw(logits, dim, generator, seed_tensor=s_)[1]
    return _GumbelRao.apply(logits, index, s_, dim, tau, k)


# --------------------------------------------------------------------------------------------
# Registry entries (the Bernoulli twins are attached in quasigrad.bernoulli)

_COMMON: Dict[str, Any] = dict(variables=("categorical", "bernoulli"), needs_grad_f=True, unbiased=False)
registry.register("st", family="straight-through", grad_depends_on_sample_only=True, has_tau=True,
                  reference="Bengio, Leonard, Courville 2013", categorical=st, **_COMMON)
registry.register("reinmax", family="straight-through", grad_depends_on_sample_only=True, has_tau=True,
                  reference="Liu et al. 2023", categorical=reinmax, **_COMMON)
registry.register("zgr", family="straight-through", grad_depends_on_sample_only=True,
                  reference="Shekhovtsov 2023", categorical=zgr, **_COMMON)
registry.register("darn", family="straight-through", grad_depends_on_sample_only=True,
                  reference="Gregor et al. 2014", categorical=darn, **_COMMON)
registry.register("gapped_st", family="straight-through", grad_depends_on_sample_only=True, has_tau=True,
                  reference="Fan et al. 2022", categorical=gapped_st, defaults={"gap": 1.0}, aliases=("gst",),
                  **_COMMON)
registry.register("gumbel_softmax", family="relaxation", grad_depends_on_sample_only=False, has_tau=True,
                  reference="Jang, Gu, Poole 2017; Maddison, Mnih, Teh 2017 (straight-through: hard=True)",
                  categorical=gumbel_softmax, defaults={"hard": True}, aliases=("stgs",), **_COMMON)
registry.register("gumbel_rao", family="relaxation", grad_depends_on_sample_only=False, has_tau=True,
                  reference="Paulus, Maddison, Krause 2021", categorical=gumbel_rao, defaults={"k": 10},
                  **_COMMON)
