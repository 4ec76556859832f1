r"""Sample-level estimators for Bernoulli (binary) variables.

`logits` are Bernoulli logits `a` of any shape; the forward value is `b ∈ {0, 1}` with
`P(b = 1) = σ(a)`, in `logits`' dtype. Each function equals its categorical twin in
[`quasigrad.estimators.categorical`][quasigrad.estimators.categorical] applied to the two logits `[0, a]`
(category 1 is `b = 1`): the same forward value and the same gradient with respect to `a` for the same sample.

For the estimators whose gradient is a function of `b` alone the twin reduces to
`∇a = w(a, b) · g` with a closed-form weight `w`, computed elementwise (`p = σ(a)`,
`q = σ(a/τ)`):

| estimator   | weight `w`                                                                   |
|-------------|------------------------------------------------------------------------------|
| `st`        | `q(1 − q)/τ`                                                                 |
| `reinmax`   | `2 r(1 − r) − ½ p(1 − p)`, `r = ½(q + b)`                                    |
| `zgr`       | `½ [p(1 − p) + (b − p)²]`                                                    |
| `darn`      | `(b − p)²`                                                                   |
| `gapped_st` | `s(1 − s)/τ`, `s = σ(δ/τ)`, `δ = max(a, gap)` if `b = 1` else `min(a, −gap)` |

`index` (named as in the categorical functions) is a sample the caller already drew: a tensor
shaped like `logits` holding 0 and 1 (bool, integer or floating).
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import registry
from .._util import validate as V
from . import categorical as C
from ._sampling import compute_dtype, is_compiling, row_uniforms

__all__ = ["st", "gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "zgr", "darn", "sample"]


def _check_sample(index, logits):
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"index must be a tensor of 0s and 1s, got {type(index).__name__}")
    if index.shape != logits.shape:
        raise ValueError(f"index must have the shape of logits {tuple(logits.shape)}, got {tuple(index.shape)}")
    if index.device != logits.device:
        raise ValueError(f"index is on {index.device} but logits are on {logits.device}")
    if index.dtype.is_complex:
        raise TypeError(f"index must hold 0s and 1s, got dtype {index.dtype}")
    if not is_compiling() and index.numel() and not bool(((index == 0) | (index == 1)).all()):
        raise ValueError("index must hold only 0s and 1s")
    return index.to(torch.bool)


def sample(logits: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw `b ~ Bernoulli(σ(logits))` as a bool tensor.

    One uniform number is drawn per element, from the row stream that the categorical draws use, so that
    `b` is the sample of the categorical twin `[0, a]` with the same generator state; `-inf` gives 0 and
    `+inf` gives 1 with certainty.

    Args:
        logits: floating Bernoulli logits `a`, any shape.
        generator: optional `torch.Generator` for the draw.

    Returns:
        A bool tensor shaped like `logits`.

    Raises:
        ValueError: `logits` contains NaN.
    """
    V.check_floating(logits)
    V.check_generator(generator, logits.device)
    a = logits.detach().to(compute_dtype(logits.dtype))
    if not is_compiling() and bool(torch.isnan(a).any()):
        raise ValueError(f"logits contains NaN ({int(torch.isnan(a).sum())} value(s)); it needs real values")
    u = row_uniforms(generator, a.shape, a.dtype, a.device)
    return u >= torch.sigmoid(-a)


_NO_TAU = object()


def _prepare(logits, index, generator, tau=_NO_TAU):
    V.check_floating(logits)
    V.check_generator(generator, logits.device)
    if tau is not _NO_TAU:
        tau = V.check_temperature(tau, compute_dtype(logits.dtype))
    b = sample(logits, generator=generator) if index is None else _check_sample(index, logits)
    if index is not None and not is_compiling() and bool(torch.isnan(logits).any()):
        raise ValueError("logits contains NaN; it needs real values")
    a = logits.detach().to(compute_dtype(logits.dtype))
    if index is not None and not is_compiling():
        impossible = (b & torch.isneginf(a)) | (~b & torch.isposinf(a))
        if bool(impossible.any()):
            raise ValueError("index holds an outcome of probability 0 (b = 1 where logits = -inf, "
                             "or b = 0 where logits = +inf)")
    return a, b.to(a.dtype), tau


def _weighted(logits, b, w):
    """Forward `b`; backward `w ⊙ g` (`w` detached): `b + (a − sg(a)) ⊙ sg(w)`."""
    w = torch.nan_to_num(w.detach(), nan=0.0)  # ±inf logits give 0·inf in some weights: no gradient there
    a = logits.to(w.dtype)
    a = torch.where(torch.isfinite(a.detach()), a, torch.zeros_like(a))  # ±inf: a certain outcome, no gradient
    return (b + (a - a.detach()) * w).to(logits.dtype)


def st(logits: torch.Tensor, *, tau: float = 1.0, index: Optional[torch.Tensor] = None,
       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Straight-through for Bernoulli variables: `∇a = σ'(a/τ)/τ · g`.

    See [`quasigrad.st`][quasigrad.estimators.categorical.st].

    Args:
        logits: floating Bernoulli logits `a`, any shape.
        tau: the temperature, > 0.
        index: optional sample already drawn (0s and 1s shaped like `logits`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The sample `b` (0 or 1), shaped like `logits`, in its dtype.
    """
    a, b, tau = _prepare(logits, index, generator, tau)
    q = torch.sigmoid(a / tau)
    return _weighted(logits, b, q * (1 - q) / tau)


def reinmax(logits: torch.Tensor, *, tau: float = 1.0, index: Optional[torch.Tensor] = None,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """ReinMax for Bernoulli variables: `∇a = [2 r(1 − r) − ½ p(1 − p)] g` with `r = ½(σ(a/τ) + b)`.

    See [`quasigrad.reinmax`][quasigrad.estimators.categorical.reinmax].

    Args:
        logits: floating Bernoulli logits `a`, any shape.
        tau: the temperature, > 0.
        index: optional sample already drawn (0s and 1s shaped like `logits`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The sample `b` (0 or 1), shaped like `logits`, in its dtype.
    """
    a, b, tau = _prepare(logits, index, generator, tau)
    p = torch.sigmoid(a)
    r = 0.5 * (torch.sigmoid(a / tau) + b)
    return _weighted(logits, b, 2 * r * (1 - r) - 0.5 * p * (1 - p))


def zgr(logits: torch.Tensor, *, index: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """ZGR for Bernoulli variables: `∇a = ½ [p(1 − p) + (b − p)²] g`.

    See [`quasigrad.zgr`][quasigrad.estimators.categorical.zgr].

    Args:
        logits: floating Bernoulli logits `a`, any shape.
        index: optional sample already drawn (0s and 1s shaped like `logits`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The sample `b` (0 or 1), shaped like `logits`, in its dtype.
    """
    a, b, _ = _prepare(logits, index, generator)
    p = torch.sigmoid(a)
    return _weighted(logits, b, 0.5 * (p * (1 - p) + (b - p) ** 2))


def darn(logits: torch.Tensor, *, index: Optional[torch.Tensor] = None,
         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """DARN for Bernoulli variables: `∇a = (b − p)² g`.

    See [`quasigrad.darn`][quasigrad.estimators.categorical.darn].

    Args:
        logits: floating Bernoulli logits `a`, any shape.
        index: optional sample already drawn (0s and 1s shaped like `logits`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The sample `b` (0 or 1), shaped like `logits`, in its dtype.
    """
    a, b, _ = _prepare(logits, index, generator)
    p = torch.sigmoid(a)
    return _weighted(logits, b, (b - p) ** 2)


def gapped_st(logits: torch.Tensor, *, gap: float = 1.0, tau: float = 1.0, index: Optional[torch.Tensor] = None,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Gapped straight-through for Bernoulli variables.

    The drawn outcome's logit leads the other by `δ = max(a, gap)` (`b = 1`) or `−δ = −max(−a, gap)`
    (`b = 0`); `∇a = σ'(δ/τ)/τ · g`. See [`quasigrad.gapped_st`][quasigrad.estimators.categorical.gapped_st].

    Args:
        logits: floating Bernoulli logits `a`, any shape.
        gap: the least lead of the drawn outcome's logit, > 0.
        tau: the temperature, > 0.
        index: optional sample already drawn (0s and 1s shaped like `logits`); then nothing is drawn.
        generator: optional `torch.Generator` for the draw.

    Returns:
        The sample `b` (0 or 1), shaped like `logits`, in its dtype.
    """
    gap = V.check_positive(gap, "gap")
    a, b, tau = _prepare(logits, index, generator, tau)
    delta = torch.where(b.bool(), a.clamp_min(gap), a.clamp_max(-gap))
    s = torch.sigmoid(delta / tau)
    return _weighted(logits, b, s * (1 - s) / tau)


def _twin(logits):
    # Logits [x0, x1] with x1 − x0 = a: [0, a] for a ≤ 0 and [−a, 0] for a > 0, so that a = +inf
    # stays a valid categorical ([−inf, 0]). The categorical estimators' gradients are invariant to
    # a common shift of the logits (they sum to zero over categories), so ∂/∂a is unchanged.
    zero = torch.zeros_like(logits)
    pos = logits > 0
    return torch.stack([torch.where(pos, -logits, zero), torch.where(pos, zero, logits)], dim=-1)


def _twin_index(logits, index, generator):
    # The sample is drawn as for the other Bernoulli functions, then handed to the twin.
    _, b, _ = _prepare(logits, index, generator)
    return b.long()


def gumbel_softmax(logits: torch.Tensor, *, tau: float = 1.0, hard: bool = False, index: Optional[torch.Tensor] = None,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Binary Concrete / straight-through Gumbel-softmax.

    [`quasigrad.gumbel_softmax`][quasigrad.estimators.categorical.gumbel_softmax] on the twin `[0, a]`.
    Without `index` the logistic noise is unconditioned; with `index` it is conditioned on `b`.

    Args:
        logits: floating Bernoulli logits `a`, any shape.
        tau: the relaxation's temperature, > 0.
        hard: return `b` (straight-through) instead of the relaxed probability.
        index: optional sample already drawn (0s and 1s shaped like `logits`).
        generator: optional `torch.Generator` for the draws.

    Returns:
        The probability of `b = 1` (relaxed) or `b` (`hard=True`), shaped like `logits`.
    """
    V.check_floating(logits)
    tau = V.check_temperature(tau, compute_dtype(logits.dtype))
    if index is not None:
        index = _twin_index(logits, index, generator)
    y = C.gumbel_softmax(_twin(logits), tau=tau, hard=hard, dim=-1, index=index, generator=generator)
    return y[..., 1]


def gumbel_rao(logits: torch.Tensor, *, tau: float = 1.0, k: int = 10, index: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """GR-MCK for Bernoulli variables.

    [`quasigrad.gumbel_rao`][quasigrad.estimators.categorical.gumbel_rao] on the twin `[0, a]`.

    Args:
        logits: floating Bernoulli logits `a`, any shape.
        tau: the surrogate's temperature, > 0.
        k: the number of conditional Gumbel draws, ≥ 1.
        index: optional sample already drawn (0s and 1s shaped like `logits`); then nothing is drawn.
        generator: optional `torch.Generator` for the draws.

    Returns:
        The sample `b` (0 or 1), shaped like `logits`, in its dtype.
    """
    V.check_floating(logits)
    tau = V.check_temperature(tau, compute_dtype(logits.dtype))
    if index is not None:
        index = _twin_index(logits, index, generator)
    return C.gumbel_rao(_twin(logits), tau=tau, k=k, dim=-1, index=index, generator=generator)[..., 1]


for _name, _fn in (("st", st), ("reinmax", reinmax), ("zgr", zgr), ("darn", darn), ("gapped_st", gapped_st),
                   ("gumbel_softmax", gumbel_softmax), ("gumbel_rao", gumbel_rao)):
    registry.update(_name, bernoulli=_fn)
