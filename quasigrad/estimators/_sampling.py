"""Random draws shared by every estimator: categorical samples from one uniform number per row,
Gumbel noise that is never infinite, and Gumbel noise conditioned on the argmax."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _native
from .._util import validate as V
from .._util.validate import is_compiling

__all__ = ["sample_categorical", "uniform", "gumbel", "conditional_gumbel", "compute_dtype", "is_compiling",
           "draw", "draw_index", "fused_draw"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs are computed in float32 (probabilities and cumulative sums lose too
    much in 8 bits of mantissa); float32 and float64 are kept."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def uniform(shape, *, dtype: torch.dtype, device, generator: Optional[torch.Generator]) -> torch.Tensor:
    """U(0, 1) draws in ``[tiny, 1)``: strictly positive, so that ``-log U`` is finite and positive."""
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return u.clamp_min_(torch.finfo(dtype).tiny)


def gumbel(shape, *, dtype: torch.dtype, device, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Gumbel(0, 1) noise ``-log(-log U)``, always finite (unlike noise built from an exponential
    draw that can be exactly 0)."""
    u = uniform(shape, dtype=dtype, device=device, generator=generator)
    return -torch.log(-torch.log(u))


def _draw_index(probs: torch.Tensor, dim: int, generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draw: one uniform number per row. Returns ``(index, total)`` where ``total``
    is each row's probability mass (NaN for an invalid row)."""
    n = probs.shape[dim]
    cdf = probs.cumsum(dim)
    total = cdf.narrow(dim, n - 1, 1)
    # v = u·total with u ≤ 1 − 2⁻²⁴ (float32; 1 − 2⁻⁵³ in float64) rounds strictly below total for
    # any total in (0.5, 2), which a normalised row always is; so the draw never runs past the last
    # category of positive mass, and a category of zero mass (cdf equal to its predecessor's) is
    # never chosen.
    v = torch.rand(total.shape, dtype=cdf.dtype, device=cdf.device, generator=generator).mul_(total)
    if n > 16 and dim == probs.dim() - 1 and cdf.is_contiguous():  # binary search pays off past ~16
        index = torch.searchsorted(cdf, v, right=True).squeeze(dim)
    else:
        index = (cdf <= v).sum(dim)
    return index.clamp_(max=n - 1), total.squeeze(dim)


def fused_draw(logits: torch.Tensor, dim: int, generator: Optional[torch.Generator]):
    """``(one_hot, index, row_max)`` for a fresh sample by the fused CPU kernel (checked), or None
    where it does not apply (see :mod:`quasigrad._native`)."""
    if is_compiling() or not _native.usable(logits, dim):
        return None
    with torch.no_grad():
        onehot, index, row_max, bad = _native.sample(logits.detach(), generator)
    if bad:
        V.describe_bad_logits(logits, dim)
    return onehot, index, row_max


def draw(logits: torch.Tensor, dim: int, generator: Optional[torch.Generator]):
    """``(π, index)`` for a fresh sample along ``dim`` by PyTorch operators (checked), under
    no_grad; ``π = softmax`` in the compute dtype."""
    with torch.no_grad():
        probs = torch.softmax(logits.detach(), dim, dtype=compute_dtype(logits.dtype))
        index, total = _draw_index(probs, dim, generator)
    V.check_finite_rows(total, logits, dim)
    return probs, index


def sample_categorical(logits: torch.Tensor, *, dim: int = -1, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw ``D ~ Categorical(softmax(logits))`` along ``dim``; returns the category index (int64),
    shaped like ``logits`` without ``dim``. Categories with logit ``-inf`` are never drawn.

    One uniform number per row is used (inverse CDF), so a draw costs a cumulative sum rather
    than per-element noise. On contiguous float32/float64 CPU logits along the last dimension it
    is the fused kernel's draw, the same one the straight-through estimators make with the same
    generator.
    """
    V.check_floating(logits)
    dim = V.category_dim(logits, dim)
    V.check_generator(generator, logits.device)
    return draw_index(logits, dim, generator)


def draw_index(logits: torch.Tensor, dim: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """The index of a fresh sample (arguments already checked): the fused kernel's draw where it
    applies, so the same one the straight-through estimators make with the same generator, else
    PyTorch's."""
    fused = fused_draw(logits, dim, generator)
    if fused is not None:
        return fused[1].clone()   # its own storage, not the discarded one-hot's
    return draw(logits, dim, generator)[1]


def conditional_gumbel(logits: torch.Tensor, index: torch.Tensor, dim: int, *, num: Optional[int] = None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Perturbed logits ``z = θ + G`` with ``G ~ Gumbel`` conditioned on ``argmax z = index``
    (Maddison et al. 2014; Paulus et al. 2021)::

        z_D = log Z - log E_D,    z_j = -log(E_j exp(-θ_j) + E_D / Z)   (j ≠ D),

    with ``E ~ Exp(1)`` and ``Z = Σ exp θ``, computed in log space. ``num`` adds a leading
    dimension of that many independent draws. Masked categories (``θ_j = -inf``) get ``-inf``.
    """
    theta = logits.detach()
    shape = theta.shape if num is None else (num,) + tuple(theta.shape)
    d = dim if num is None else dim + 1
    log_e = torch.log(-torch.log(uniform(shape, dtype=theta.dtype, device=theta.device, generator=generator)))
    log_z = torch.logsumexp(theta, dim, keepdim=True)
    idx = index.unsqueeze(dim)
    if num is not None:
        idx = idx.unsqueeze(0).expand((num,) + tuple(idx.shape))
    log_e_d = log_e.gather(d, idx)
    top = log_z - log_e_d                                    # z_D: the max, distributed Gumbel(log Z)
    rest = -torch.logaddexp(log_e - theta, log_e_d - log_z)  # truncated below z_D
    return rest.scatter(d, idx, top)
