r"""Quantizers whose forward value is exact and whose backward pass is a named estimator.

Every function returns a tensor of `x`'s shape and dtype holding the exact quantized value;
`estimator=` (a name from `quasigrad.quant.estimator_names`) chooses the gradient,
with the estimator's parameters as keyword arguments (`estimator="tanh", k=4`). The
backward pass computes `∂L/∂x = g · Q̂′(t) · mask` where `t` is the signed distance to the
nearest rounding threshold in steps and `mask` is zero where a clamp is active (see
`quasigrad.quant.estimators`). For EWGS it is `g·(1 + δ·sign(g)·(x − q))·mask` with
`x − q` in steps.

References:
    Bengio, Léonard, Courville 2013 (STE); Jacob et al. 2018 (affine fake quantization);
    Esser et al. 2020, Learned step size quantization (LSQ); Choi et al. 2018, PACT;
    Zhou et al. 2016, DoReFa-Net; Schoenbauer, Moro, Lew, Howard 2024, Custom gradient
    estimators are straight-through estimators in disguise.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Union

import torch

from .._util import validate as V
from .estimators import get_estimator

__all__ = ["round", "floor", "ceil", "sign", "heaviside", "ternary", "uniform_quantize",
           "fake_quantize", "fake_quantize_per_channel", "lsq", "pact", "dorefa_weight", "dorefa_activation",
           "grad_scale"]

_round = torch.round
_floor = torch.floor
_ceil = torch.ceil


class _Surrogate(torch.autograd.Function):
    """Forward: `value`. Backward: `g·factor + |g|·extra` to `x` (`extra` only for EWGS)."""

    @staticmethod
    def forward(ctx, x, value, factor, extra):
        ctx.save_for_backward(factor, extra)
        ctx.has_extra = extra is not None
        return value

    @staticmethod
    def backward(ctx, g):
        factor, extra = ctx.saved_tensors
        grad = g * factor
        if ctx.has_extra:
            grad = grad + g.abs() * extra
        return grad.to(g.dtype), None, None, None


def _attach(x, value, t, mask, estimator, params, step=1.0):
    """Give `value` (exact, computed without grad) the estimator's gradient with respect to `x`.

    `t`: signed distance to the nearest threshold in steps; `mask`: bool tensor or None;
    `step`: the step (for EWGS's `x − q` in steps)."""
    est = get_estimator(estimator)
    p = est.params(params)
    if not x.requires_grad:
        return value
    with torch.no_grad():
        factor = est.factor(t, _c(x), p)
        extra = None
        if est.needs_grad:
            extra = p["delta"] * (_c(x) - value) / step
        if mask is not None:
            factor = factor * mask
            extra = None if extra is None else extra * mask
    return _Surrogate.apply(x, value, factor, extra)


def _c(x):
    """`x` detached, in float32 if it is a half type (the distance to a threshold needs the precision)."""
    x = x.detach()
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check(x, name="x"):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"bits must be an integer >= 1, got {bits!r} ({type(bits).__name__})")
    if bits < 1:
        raise ValueError(f"bits must be an integer >= 1, got {bits}")
    return int(bits)


# --------------------------------------------------------------------------------------------
# Elementwise steps


def round(x: torch.Tensor, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """Round half to even (`torch.round`); thresholds at half-integers.

    Forward: `round(x)` exactly. Backward: `g·Q̂′(x − floor(x) − 1/2)` (`1` for the STE).

    Args:
        x: floating tensor, any shape.
        estimator: the gradient estimator `Q̂′` through the step (a registered quantizer estimator name).
        **params: the estimator's parameters.

    Returns:
        `round(x)`, shaped like `x`.
    """
    _check(x)
    with torch.no_grad():
        value = _round(x)
        t = _c(x) - _floor(_c(x)) - 0.5
    return _attach(x, value, t, None, estimator, params)


def floor(x: torch.Tensor, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """`floor(x)`; thresholds at integers, backward `g·Q̂′(x − round(x))`.

    Args:
        x: floating tensor, any shape.
        estimator: the gradient estimator `Q̂′` through the step (a registered quantizer estimator name).
        **params: the estimator's parameters.

    Returns:
        `floor(x)`, shaped like `x`.
    """
    _check(x)
    with torch.no_grad():
        value = _floor(x)
        t = _c(x) - _round(_c(x))
    return _attach(x, value, t, None, estimator, params)


def ceil(x: torch.Tensor, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """`ceil(x)`; thresholds at integers, backward `g·Q̂′(x − round(x))`.

    Args:
        x: floating tensor, any shape.
        estimator: the gradient estimator `Q̂′` through the step (a registered quantizer estimator name).
        **params: the estimator's parameters.

    Returns:
        `ceil(x)`, shaped like `x`.
    """
    _check(x)
    with torch.no_grad():
        value = _ceil(x)
        t = _c(x) - _round(_c(x))
    return _attach(x, value, t, None, estimator, params)


def sign(x: torch.Tensor, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """`sign(x)` in {−1, +1} with `sign(0) = +1`; backward `g·Q̂′(x)` (unwrapped: one threshold).

    Common choices: `"clipped-ste"` (hard tanh), `"approx-sign"`, `"swish-sign"`,
    `"tanh"`, `"magnitude-aware"`.

    Args:
        x: floating tensor, any shape.
        estimator: the gradient estimator `Q̂′` through the step (a registered quantizer estimator name).
        **params: the estimator's parameters.

    Returns:
        `sign(x)` in {−1, +1}, shaped like `x`.
    """
    _check(x)
    with torch.no_grad():
        value = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return _attach(x, value, x.detach(), None, estimator, params)


def heaviside(x: torch.Tensor, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """`1[x ≥ 0]` in {0, 1}; backward `g·Q̂′(x)`.

    Args:
        x: floating tensor, any shape.
        estimator: the gradient estimator `Q̂′` through the step (a registered quantizer estimator name).
        **params: the estimator's parameters.

    Returns:
        `1[x ≥ 0]` in `x`'s dtype, shaped like `x`.
    """
    _check(x)
    with torch.no_grad():
        value = (x >= 0).to(x.dtype)
    return _attach(x, value, x.detach(), None, estimator, params)


def ternary(x: torch.Tensor, threshold: Optional[float] = None, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """Ternary weights in {−1, 0, +1}: `sign(x)·1[|x| > Δ]`.

    Backward: `g·Q̂′(|x| − Δ)` (distance to the nearer threshold ±Δ).

    Args:
        x: floating tensor, any shape.
        threshold: Δ (> 0); default `0.7·mean|x|` (Li, Zhang, Liu 2016, Ternary weight networks).
        estimator: the gradient estimator `Q̂′` through the step (a registered quantizer estimator name).
        **params: the estimator's parameters.

    Returns:
        `sign(x)·1[|x| > Δ]`, shaped like `x`.

    Raises:
        ValueError: `x` is not finite where the default threshold is computed from it.
    """
    _check(x)
    with torch.no_grad():
        if threshold is None:
            mean_abs = 0.7 * x.abs().mean()
            if not bool(torch.isfinite(mean_abs)):
                raise ValueError("x must be finite to compute the default threshold 0.7·mean|x|")
            delta: Union[torch.Tensor, float] = mean_abs
        else:
            delta = V.check_positive(threshold, "threshold")
        value = torch.sign(x) * (x.abs() > delta).to(x.dtype)
        t = x.abs() - delta
    return _attach(x, value, t, None, estimator, params)


def uniform_quantize(x: torch.Tensor, bits: int, clip: Union[float, torch.Tensor], *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """Symmetric mid-rise uniform quantizer on `[-clip, clip]` with `2**bits` levels.

    With step `Δ = 2·clip / 2**bits` and `u = x / Δ`, the forward value is
    `Δ·(clamp(floor(u), −2**(bits−1), 2**(bits−1) − 1) + 1/2)`: levels `±Δ/2, ±3Δ/2, …`,
    thresholds at `nΔ`. Backward: `g·Q̂′(u − round(u))·1[|x| ≤ clip]`. This is the weight
    quantizer of the qat-equivalence benchmark (2 bits, `clip = √(6/fan_in)`).

    Args:
        x: floating tensor, any shape.
        bits: number of bits (>= 1).
        clip: positive number (or 0-dim tensor): the clipping range.
        estimator: the gradient estimator `Q̂′` through the step (a registered quantizer estimator name).
        **params: the estimator's parameters.

    Returns:
        The quantized values, shaped like `x`, in its dtype.
    """
    _check(x)
    bits = _check_bits(bits)
    clip = V.check_positive(clip, "clip")
    step = 2.0 * clip / 2 ** bits
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    with torch.no_grad():
        u = _c(x) / step
        n = _floor(u)
        value = ((torch.clamp(n, lo, hi) + 0.5) * step).to(x.dtype)
        mask = (n >= lo) & (n <= hi)
        t = u - _round(u)
    return _attach(x, value, t, mask, estimator, params, step=step)


# --------------------------------------------------------------------------------------------
# Affine fake quantization (PyTorch's argument order)


def _check_qrange(quant_min, quant_max):
    for name, v in (("quant_min", quant_min), ("quant_max", quant_max)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
    if quant_min > quant_max:
        raise ValueError(f"quant_min must be <= quant_max, got quant_min={quant_min}, quant_max={quant_max}")


def _fq(x, scale, zero_point, quant_min, quant_max, estimator, params, value_in_float32):
    # PyTorch's kernel: inv_scale = 1.0f / scale in float32; q = nearbyint(x * inv_scale) + zp
    # (round half to even), clamped; value = (clamp(q) - zp) * scale; mask = q in range.
    with torch.no_grad():
        # float64 inputs are multiplied in float64 (by the float32 inverse scale), others in float32
        cd = torch.float64 if x.dtype == torch.float64 else torch.float32
        inv_scale = (1.0 / scale.float()).to(cd)
        u = x.to(cd) * inv_scale
        q = _round(u) + zero_point
        mask = (q >= quant_min) & (q <= quant_max)
        # PyTorch's per-tensor kernel forms the value in float32 even for float64 inputs
        vd = torch.float32 if value_in_float32 else cd
        value = ((torch.clamp(q, quant_min, quant_max) - zero_point).to(vd) * scale.to(vd)).to(x.dtype)
        t = u - _floor(u) - 0.5
    return _attach(x, value, t, mask, estimator, params)


def fake_quantize(x: torch.Tensor, scale: Union[float, torch.Tensor], zero_point: Union[int, float, torch.Tensor],
                  quant_min: int, quant_max: int, *,
                  estimator: str = "ste", **params: Any) -> torch.Tensor:
    r"""Per-tensor affine fake quantization, bit-exact with `torch.fake_quantize_per_tensor_affine`.

    $$ q = \mathrm{clamp}(\mathrm{round}(x / s) + z,\ q_{min},\ q_{max}),\quad y = (q - z)\,s $$

    (`1/s` computed in float32 as PyTorch does; round half to even). Backward:
    `g·Q̂′(t)·1[q_{min} ≤ round(x/s) + z ≤ q_{max}]` — for the STE exactly PyTorch's gradient
    mask, including values at and beyond the clamp bounds.

    Args:
        x: floating tensor, any shape.
        scale: positive number or one-element tensor.
        zero_point: integer (or one-element integer tensor), in `[quant_min, quant_max]`.
        quant_min: the least integer code.
        quant_max: the largest integer code.
        estimator: the gradient estimator `Q̂′` through the rounding.
        **params: the estimator's parameters.

    Returns:
        `y = (q − z)·s`, shaped like `x`, in its dtype.

    Raises:
        TypeError: `quant_min`, `quant_max` or `zero_point` is not an integer.
        ValueError: an empty range, or `zero_point` outside it.
    """
    _check(x)
    _check_qrange(quant_min, quant_max)
    s = V.check_positive(scale, "scale")
    if isinstance(zero_point, torch.Tensor):
        if zero_point.numel() != 1:
            raise ValueError(f"zero_point must be one number, got a tensor of shape {tuple(zero_point.shape)}")
        zero_point = zero_point.item()
    if isinstance(zero_point, bool) or not isinstance(zero_point, numbers.Integral) and \
            not (isinstance(zero_point, float) and zero_point.is_integer()):
        raise TypeError(f"zero_point must be an integer, got {zero_point!r}")
    zero_point = int(zero_point)
    if not quant_min <= zero_point <= quant_max:
        raise ValueError(f"zero_point must be in [quant_min, quant_max] = [{quant_min}, {quant_max}], got {zero_point}")
    scale_t = torch.tensor(s, dtype=torch.float32, device=x.device)
    return _fq(x, scale_t, zero_point, quant_min, quant_max, estimator, params, True)


def fake_quantize_per_channel(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
                              quant_min: int, quant_max: int, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """Per-channel affine fake quantization, bit-exact with `torch.fake_quantize_per_channel_affine`.

    Same forward and gradient mask as `fake_quantize`, channel by channel.

    Args:
        x: floating tensor, any shape.
        scale: 1-D tensor of `x.shape[axis]` positive scales.
        zero_point: 1-D integer tensor of `x.shape[axis]` zero points in `[quant_min, quant_max]`.
        axis: the channel dimension.
        quant_min: the least integer code.
        quant_max: the largest integer code.
        estimator: the gradient estimator `Q̂′` through the rounding.
        **params: the estimator's parameters.

    Returns:
        The fake-quantized values, shaped like `x`, in its dtype.
    """
    _check(x)
    _check_qrange(quant_min, quant_max)
    axis = V.normalize_dim(axis, x.dim(), "axis")
    c = x.shape[axis]
    if not isinstance(scale, torch.Tensor) or scale.dim() != 1 or scale.numel() != c:
        raise ValueError(f"scale must be a 1-D tensor of x.shape[axis] = {c} values, got "
                         f"{tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__}")
    if not bool((scale > 0).all()) or not bool(torch.isfinite(scale).all()):
        raise ValueError(f"scale must be positive and finite, got min {float(scale.min())}")
    if not isinstance(zero_point, torch.Tensor) or zero_point.shape != scale.shape:
        raise ValueError(f"zero_point must be a tensor shaped like scale ({c},)")
    if zero_point.dtype.is_floating_point:
        if not bool((zero_point == zero_point.round()).all()):
            raise ValueError("zero_point must hold integers")
    if bool((zero_point < quant_min).any()) or bool((zero_point > quant_max).any()):
        raise ValueError(f"zero_point must lie in [quant_min, quant_max] = [{quant_min}, {quant_max}]")
    shape = [1] * x.dim()
    shape[axis] = c
    s = scale.to(device=x.device, dtype=torch.float32).reshape(shape)
    z = zero_point.to(device=x.device, dtype=torch.float32).reshape(shape)
    return _fq(x, s, z, quant_min, quant_max, estimator, params, False)


# --------------------------------------------------------------------------------------------
# Learned quantizers


def grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward, gradient multiplied by `factor` (LSQ's step-size gradient scale).

    The forward value is exactly `x` (`x + (a − a)` with `a = factor·x`), so a quantizer that
    scales by it gives the same bits as one that multiplies by `x` itself; this is what lets
    `quasigrad.quant.convert` store LSQ's step as the scale of integer weights.

    Args:
        x: tensor (the learned step).
        factor: the gradient multiplier.

    Returns:
        A tensor equal to `x` whose gradient with respect to `x` is `factor` times the incoming one.
    """
    scaled = x * factor
    return x.detach() + (scaled - scaled.detach())


def lsq(x: torch.Tensor, step: torch.Tensor, bits: int, *, signed: bool = True, estimator: str = "ste",
        **params: Any) -> torch.Tensor:
    r"""Learned step size quantization (Esser et al. 2020).

    $$ y = s\,\mathrm{round}(\mathrm{clamp}(x/s, -Q_N, Q_P)) $$

    with `Q_N = 2**(bits−1), Q_P = 2**(bits−1) − 1` (signed) or `0, 2**bits − 1`. The step `s`
    is a learned tensor, one element (per tensor) or broadcastable to `x` (per channel, e.g.
    shaped `(C, 1)` for a `(C, K)` weight), whose gradient is scaled by `1/√(N·Q_P)` with
    `N` the number of elements that share one step (`x.numel() / s.numel()`), giving LSQ's
    `∂y/∂s = round(x/s) − x/s` inside the range and `−Q_N` or `Q_P` outside; `∂y/∂x` is
    the estimator's inside the range, 0 outside.

    Args:
        x: floating tensor to quantize.
        step: positive step `s`, one element or broadcastable to `x`.
        bits: number of bits (>= 2 when `signed`).
        signed: signed range `[−Q_N, Q_P]` or unsigned `[0, 2**bits − 1]`.
        estimator: gradient estimator through the rounding; further keywords are its parameters.

    Returns:
        `s·round(clamp(x/s, −Q_N, Q_P))`, shaped like `x` broadcast with `s`.
    """
    _check(x)
    bits = _check_bits(bits)
    if not isinstance(step, torch.Tensor):
        raise TypeError(f"step must be a tensor (a learned parameter), got {type(step).__name__}")
    if not bool((step.detach() > 0).all()):
        raise ValueError(f"step must be positive, got min {float(step.detach().min())}")
    qn, qp = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    if qp == 0:
        raise ValueError("signed LSQ needs bits >= 2 (with 1 bit the positive range is empty)")
    per_step = max(x.numel() // max(step.numel(), 1), 1)
    s = grad_scale(step, 1.0 / math.sqrt(per_step * qp))
    v = torch.clamp(x / s, -qn, qp)
    return round(v, estimator=estimator, **params) * s


def pact(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    r"""PACT activation quantization (Choi et al. 2018): `y = round(clamp(x, 0, α)·n/α)·α/n`.

    With `n = 2**bits − 1` and the straight-through gradient `∂y/∂x = 1[0 ≤ x ≤ α]`,
    `∂y/∂α = 1[x ≥ α]` (PACT's choice).

    Args:
        x: floating tensor, any shape.
        alpha: the learned clipping level α, a positive tensor.
        bits: number of bits.

    Returns:
        `y`, shaped like `x` broadcast with `alpha`.
    """
    _check(x)
    bits = _check_bits(bits)
    if not isinstance(alpha, torch.Tensor):
        raise TypeError(f"alpha must be a tensor (a learned parameter), got {type(alpha).__name__}")
    if not bool((alpha.detach() > 0).all()):
        raise ValueError(f"alpha must be positive, got min {float(alpha.detach().min())}")
    n = 2 ** bits - 1
    y = torch.minimum(torch.clamp(x, min=0), alpha)
    with torch.no_grad():
        q = _round(y * (n / alpha)) * (alpha / n)
    return y + (q - y).detach()


def dorefa_weight(w: torch.Tensor, bits: int, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    r"""DoReFa weight quantization (Zhou et al. 2016).

    `bits = 1`: `sign(w)·mean|w|`. Otherwise `2·quantize_k(tanh(w)/(2 max|tanh w|) + 1/2) − 1` with
    `quantize_k(r) = round((2^k − 1) r)/(2^k − 1)` and the estimator through the rounding.

    Args:
        w: floating weight tensor.
        bits: number of bits `k`.
        estimator: the gradient estimator through the rounding (or the sign, at 1 bit).
        **params: the estimator's parameters.

    Returns:
        The quantized weights, shaped like `w`.
    """
    _check(w, "w")
    bits = _check_bits(bits)
    if bits == 1:
        return sign(w, estimator=estimator, **params) * w.abs().mean().detach()
    n = 2 ** bits - 1
    t = torch.tanh(w)
    r = t / (2 * t.abs().max().detach().clamp_min(torch.finfo(w.dtype).tiny)) + 0.5
    return 2 * round(r * n, estimator=estimator, **params) / n - 1


def dorefa_activation(x: torch.Tensor, bits: int, *, estimator: str = "ste", **params: Any) -> torch.Tensor:
    """DoReFa activation quantization: `round((2^k − 1)·clamp(x, 0, 1))/(2^k − 1)` (gradient 0 outside [0, 1]).

    Args:
        x: floating tensor, any shape.
        bits: number of bits `k`.
        estimator: the gradient estimator through the rounding.
        **params: the estimator's parameters.

    Returns:
        The quantized activations, shaped like `x`.
    """
    _check(x)
    bits = _check_bits(bits)
    n = 2 ** bits - 1
    return round(torch.clamp(x, 0, 1) * n, estimator=estimator, **params) / n
