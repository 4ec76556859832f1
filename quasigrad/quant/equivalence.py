r"""The "straight-through estimator in disguise" toolkit (Schoenbauer, Moro, Lew, Howard 2024).

For a uniform quantizer with step Δ and a surrogate derivative `Q̂′` in the theorem's class
(positive, the same shape in every cell, a function of the weight alone):

$$
α = \frac{Δ}{\int_{cell} ds / Q̂′(s)}\qquad
M(w) = w_b + α \int_{w_b}^{w} \frac{ds}{Q̂′(s)}
$$

(`α`: the harmonic mean of `Q̂′` over a cell; `w_b`: a rounding threshold). `M` is
increasing, maps every cell onto itself and fixes every threshold, so `Q(M(w)) = Q(w)`.
Theorem: SGD with `Q̂′` and learning rate `η` from `w₀` follows, to first order in `η`,
SGD with the STE and learning rate `αη` from `M(w₀)` (because `M′(w)·Q̂′(w) = α`); with
Adam, whose update does not see a slowly varying per-weight gradient scale, the STE from the
same `w₀` with the same learning rate follows it without any change.

Metrics of a pair of runs (the paper's): *quantized weight agreement* (share of weights whose
quantized values are equal) and *weight alignment error* `Σ|M(w_Q̂) − w_STE| / Σ|w_STE − w_STE,0|`
(the misalignment over the distance the STE run travelled). The *learning-rate jitter
baseline* is the same pair of metrics between the STE run and itself with the learning rate ×1.01.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .._util import validate as V
from . import functional as Q
from .estimators import QuantEstimator, get_estimator

__all__ = ["alpha", "remap", "check_in_class", "quantized_agreement", "alignment_error", "ste_twin",
           "quantized_weights", "least_squares_trend"]

_Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]
_GRID = 8193  # points per cell for the numerical integral (trapezoid: error ~1e-9 for smooth Q̂′)


def check_in_class(estimator: Union[str, QuantEstimator], params: Optional[dict] = None) -> QuantEstimator:
    """Return the estimator if it is in the theorem's class, else raise `ValueError` saying why.

    Args:
        estimator: a registered quantizer estimator name, or a `QuantEstimator`.
        params: its parameters over the defaults.

    Returns:
        The `QuantEstimator`.

    Raises:
        ValueError: the estimator (with these parameters) is outside the theorem's class.
    """
    est = get_estimator(estimator)
    ok, why = est.in_class(params)
    if not ok:
        raise ValueError(f"the equivalence needs an estimator in the theorem's class: {why}")
    return est


def _H(est: QuantEstimator, p: dict, tau: torch.Tensor) -> torch.Tensor:
    """`H(τ) = ∫_0^τ ds / Q̂′(s)` for `τ ∈ [-1/2, 1/2]` (closed form, or a tabulated trapezoid rule)."""
    if est.inv_antiderivative is not None:
        return est.inv_antiderivative(tau, **p)
    grid = torch.linspace(-0.5, 0.5, _GRID, dtype=torch.float64)
    inv = 1.0 / est.factor(grid, grid, p)  # tabulated on the CPU, then moved to tau's device
    h = 1.0 / (_GRID - 1)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((inv[1:] + inv[:-1]) * (h / 2), 0)])
    cum = cum - cum[(_GRID - 1) // 2]  # H(0) = 0
    cum = cum.to(tau.device)
    pos = (tau.clamp(-0.5, 0.5) + 0.5) * (_GRID - 1)
    i0 = pos.floor().long().clamp(0, _GRID - 2)
    frac = pos - i0
    return cum[i0] * (1 - frac) + cum[i0 + 1] * frac


def alpha(estimator: Union[str, QuantEstimator], **params: Any) -> float:
    """`α = 1 / mean_cell(1/Q̂′)`: the learning-rate factor of the STE twin under SGD.

    `Q̂′` is in units of the step, so `α` does not depend on Δ.

    Args:
        estimator: an estimator in the theorem's class (name or `QuantEstimator`).
        **params: its parameters.

    Returns:
        `α`.

    Raises:
        ValueError: the estimator is outside the theorem's class.
    """
    est = check_in_class(estimator, params)
    p = est.params(params)
    ends = _H(est, p, torch.tensor([-0.5, 0.5], dtype=torch.float64))
    return float(1.0 / (ends[1] - ends[0]))


def remap(w: torch.Tensor, estimator: Union[str, QuantEstimator], *, step: Union[float, torch.Tensor],
          threshold: Union[float, torch.Tensor] = 0.0, **params: Any) -> torch.Tensor:
    """`M(w)`: the weight remap that turns a run with `estimator` into its STE twin under SGD.

    Args:
        w: floating tensor (any shape) of latent weights.
        estimator: name of an estimator in the theorem's class; its parameters as keywords.
        step: the quantizer's step Δ (> 0).
        threshold: any one rounding threshold `w_b` (thresholds at `w_b + nΔ`); 0 for
            `quasigrad.quant.uniform_quantize`, `Δ/2` for rounding to multiples of Δ.
        **params: the estimator's parameters.

    Returns:
        `M(w)` in `w`'s dtype, computed in float64: `w_b + Δ·α·(n·P + H(τ))` with
        `u = (w − w_b)/Δ`, `n = round(u)`, `τ = u − n`, `P = ∫_cell 1/Q̂′`.
    """
    Q._check(w, "w")
    est = check_in_class(estimator, params)
    p = est.params(params)
    step = V.check_positive(step, "step")
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.item()
    a = alpha(est, **params)
    u = (w.detach().double() - threshold) / step
    n = torch.round(u)
    g = n / a + _H(est, p, u - n)
    return (threshold + step * a * g).to(w.dtype)


def quantized_agreement(a: _Tensors, b: _Tensors) -> float:
    """Share of entries where two (lists of) quantized tensors are equal.

    Args:
        a: a tensor, or a sequence of tensors.
        b: the same, shaped like `a`.

    Returns:
        The share in [0, 1] (NaN for no entries).

    Raises:
        ValueError: the tensors' shapes (or counts) differ.
    """
    a = [a] if isinstance(a, torch.Tensor) else list(a)
    b = [b] if isinstance(b, torch.Tensor) else list(b)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError("quantized_agreement needs tensors of equal shapes")
    same = sum(int((x == y).sum()) for x, y in zip(a, b))
    total = sum(x.numel() for x in a)
    return same / total if total else float("nan")


def alignment_error(w_mapped: _Tensors, w_ste: _Tensors, w_ste_init: _Tensors) -> float:
    """`Σ|M(w_Q̂) − w_STE| / Σ|w_STE − w_STE,0|` over (lists of) tensors: the paper's weight alignment error.

    Args:
        w_mapped: the remapped weights `M(w_Q̂)` of the run with the estimator (a tensor or a sequence).
        w_ste: the STE run's weights, alike.
        w_ste_init: the STE run's initial weights, alike.

    Returns:
        The alignment error (NaN when the STE run did not move).
    """
    w_mapped = [w_mapped] if isinstance(w_mapped, torch.Tensor) else list(w_mapped)
    w_ste = [w_ste] if isinstance(w_ste, torch.Tensor) else list(w_ste)
    w_ste_init = [w_ste_init] if isinstance(w_ste_init, torch.Tensor) else list(w_ste_init)
    num = sum(float((x.double() - y.double()).abs().sum()) for x, y in zip(w_mapped, w_ste))
    den = sum(float((y.double() - y0.double()).abs().sum()) for y, y0 in zip(w_ste, w_ste_init))
    return num / den if den > 0 else float("nan")


def _quant_layers(model):
    from .modules import QuantConv2d, QuantLinear, UniformQuantizer

    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (QuantLinear, QuantConv2d)) and isinstance(m.weight_quantizer, UniformQuantizer)]


def quantized_weights(model: torch.nn.Module) -> List[torch.Tensor]:
    """The quantized weights of every layer with a `UniformQuantizer`, detached, in module order.

    Args:
        model: a model with `QuantLinear` or `QuantConv2d` layers.

    Returns:
        One tensor per such layer.
    """
    with torch.no_grad():
        return [m.weight_quantizer(m.weight.detach()) for _, m in _quant_layers(model)]


def ste_twin(model: torch.nn.Module, optimizer: str = "sgd") -> Tuple[torch.nn.Module, float, List[str]]:
    """A copy of `model` that trains like it with the STE.

    Every layer with a `UniformQuantizer` gets the STE; with `optimizer="sgd"` its weight
    is remapped by `M` and the returned `alpha` is the factor for its learning rate; with
    `"adam"` nothing else changes (`alpha = 1`).

    Args:
        model: a model with `QuantLinear` or `QuantConv2d` layers whose weight quantizer is a
            `UniformQuantizer` with an estimator in the theorem's class.
        optimizer: `"sgd"` or `"adam"`.

    Returns:
        `(twin, alpha, names)`: the copy, the learning-rate factor of the quantized weights,
        and the qualified names of those weight parameters.

    Raises:
        ValueError: a bad `optimizer`, no such layer, or layers whose estimators have different α.
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    twin = copy.deepcopy(model)
    layers = _quant_layers(twin)
    if not layers:
        raise ValueError("model has no QuantLinear/QuantConv2d layer with a UniformQuantizer weight quantizer")
    alphas = set()
    for _, m in layers:
        wq = m.weight_quantizer
        a = alpha(wq.estimator, **wq.params)  # also checks the class
        alphas.add(round(a, 12))
        if optimizer == "sgd":
            with torch.no_grad():
                m.weight.copy_(remap(m.weight, wq.estimator, step=wq.step, threshold=0.0, **wq.params))
        wq.estimator, wq.params = "ste", {}
    if len(alphas) != 1:
        raise ValueError(f"the quantized layers use estimators with different α ({sorted(alphas)}); "
                         f"train them with separate parameter groups")
    a = alphas.pop() if optimizer == "sgd" else 1.0
    return twin, a, [f"{n}.weight" if n else "weight" for n, _ in layers]


def least_squares_trend(estimator: str = "tanh", etas: Sequence[float] = (0.8, 0.4, 0.2, 0.1, 0.05), *,
                        eta_steps: float = 40.0, batch_time: Optional[float] = None, dim: int = 256,
                        batch: int = 16, pool: int = 512, bits: int = 2, clip: float = 1.0, realizable: bool = True,
                        seed: int = 0, **params: Any) -> List[Dict[str, float]]:
    """Agreement against η on least squares with `bits`-bit weights and a shared mini-batch sequence.

    Problem: `min_w ‖X Q(w) − y‖²/(2B)` on mini-batches of `batch` rows of a fixed pool of
    `pool` Gaussian rows `X` (`dim` columns), `y = X w*` with `w*` uniform in
    `[−clip, clip]`. For each `η` (with `T = eta_steps/η` steps, so `η·T` is fixed) three
    SGD runs share the mini-batch sequence: the estimator from `w₀`, its STE twin from
    `M(w₀)` with `αη`, and the plain STE from `w₀` with `η`.

    Args:
        estimator: an estimator in the theorem's class.
        etas: the learning rates η.
        eta_steps: `η·T`, the same for every η.
        batch_time: how long (in η-time) one mini-batch is held; default the largest η (one step).
        dim: the number of weights.
        batch: rows per mini-batch.
        pool: rows in the fixed pool.
        bits: the weights' bits.
        clip: the quantizer's clipping range (and the range of `w*` and `w₀`).
        realizable: put the targets' weights `w*` on the quantization grid.
        seed: the seed of the data, the initial weights and the batches.
        **params: the estimator's parameters.

    Returns:
        one dict per η: `eta, steps, agreement_twin, agreement_plain, alignment_twin, alignment_plain`.
    """
    est = check_in_class(estimator, params)
    a = alpha(est, **params)
    step = 2.0 * clip / 2 ** bits
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(pool, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
    w_star = (torch.rand(dim, generator=gen, dtype=torch.float64) * 2 - 1) * clip
    if realizable:  # targets on the grid: the gradient vanishes at the solution (no chattering)
        w_star = Q.uniform_quantize(w_star, bits, clip)
    y = X @ w_star
    w0 = (torch.rand(dim, generator=gen, dtype=torch.float64) * 2 - 1) * clip
    rows = []
    for eta in etas:
        eta = V.check_positive(eta, "eta")
        steps = int(round(eta_steps / eta))
        hold = max(1, int(round((batch_time or max(etas)) / eta)))
        bgen = torch.Generator().manual_seed(seed + 1)
        runs = {"est": (w0.clone(), eta, est.name, params),
                "twin": (remap(w0, est, step=step, **params), a * eta, "ste", {}),
                "plain": (w0.clone(), eta, "ste", {})}
        init = {k: v[0].clone() for k, v in runs.items()}
        for i in range(steps):
            if i % hold == 0:  # the same batch for the same stretch of η-time, whatever η
                idx = torch.randint(pool, (batch,), generator=bgen)
                Xb, yb = X[idx], y[idx]
            for k, (w, lr, name, p) in runs.items():
                w.requires_grad_(True)
                loss = 0.5 * ((Xb @ Q.uniform_quantize(w, bits, clip, estimator=name, **p) - yb) ** 2).mean()
                (grad,) = torch.autograd.grad(loss, w)
                with torch.no_grad():
                    w = w.detach() - lr * grad
                runs[k] = (w, lr, name, p)
        q = {k: Q.uniform_quantize(v[0].detach(), bits, clip) for k, v in runs.items()}
        m_est = remap(runs["est"][0].detach(), est, step=step, **params)
        rows.append({"eta": eta, "steps": steps,
                     "agreement_twin": quantized_agreement(q["est"], q["twin"]),
                     "agreement_plain": quantized_agreement(q["est"], q["plain"]),
                     "alignment_twin": alignment_error(m_est, runs["twin"][0], init["twin"]),
                     "alignment_plain": alignment_error(runs["est"][0], runs["plain"][0], init["plain"])})
    return rows
