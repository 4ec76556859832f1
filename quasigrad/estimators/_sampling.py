"""Random draws shared by every estimator: categorical samples from one uniform number per row,
Gumbel noise that is never infinite, and Gumbel noise conditioned on the argmax.

The layer-1 functions draw from the streams of `_streams` (one seed from the caller's
generator per call), so that the same generator state gives the same sample on every path: the
fused kernels, the PyTorch operators, any layout or `dim`, `torch.compile`, `torch.func`.
`uniform` and `gumbel` are plain `torch.rand` draws for the other families.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._util import validate as V
from .._util.validate import is_compiling
from . import _native, _ops, _streams

__all__ = ["sample_categorical", "uniform", "gumbel", "conditional_gumbel", "compute_dtype", "is_compiling",
           "draw", "draw_index", "seed", "row_uniforms"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs are computed in float32 (probabilities and cumulative sums lose too
    much in 8 bits of mantissa); float32 and float64 are kept."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def uniform(shape, *, dtype: torch.dtype, device, generator: Optional[torch.Generator]) -> torch.Tensor:
    """U(0, 1) draws in `[tiny, 1)`: strictly positive, so that `-log U` is finite and positive."""
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return u.clamp_min_(torch.finfo(dtype).tiny)


def gumbel(shape, *, dtype: torch.dtype, device, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Gumbel(0, 1) noise `-log(-log U)`, always finite (unlike noise built from an exponential
    draw that can be exactly 0)."""
    u = uniform(shape, dtype=dtype, device=device, generator=generator)
    return -torch.log(-torch.log(u))


def seed(generator: Optional[torch.Generator], device) -> torch.Tensor:
    """The call's seed (`quasigrad.estimators._streams.draw_seed`)."""
    return _streams.seed(generator, device, _ops.dynamo_compiling())


def row_uniforms(generator: Optional[torch.Generator], shape, dtype: torch.dtype, device) -> torch.Tensor:
    """One uniform number in [0, 1) per position of `shape` from the row stream of a fresh seed:
    the fused kernel's fill on the CPU outside compiled graphs and torch.func, else PyTorch's."""
    s = seed(generator, device)
    cdt = compute_dtype(dtype)
    if torch.device(device).type == "cpu" and cdt in (torch.float32, torch.float64) and not is_compiling() \
            and not _ops.functorch_active() and _native.available():
        count = 1
        for d in shape:
            count *= int(d)
        return _native.uniform(_streams.seed_value(s), count, cdt).reshape(tuple(shape))
    return _streams.row_uniforms(s, tuple(shape), cdt)


def _draw_index(probs: torch.Tensor, dim: int, seed_tensor: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draw: one uniform number per row from the row stream. Returns ``(index,
    total)` where `total`` is each row's probability mass (NaN for an invalid row)."""
    moved = probs.movedim(dim, -1)
    total = moved.sum(-1)
    u = _streams.row_uniforms(seed_tensor, moved.shape[:-1], probs.dtype)
    return _ops.inverse_cdf(moved, u * total), total


def draw(logits: torch.Tensor, dim: int, generator: Optional[torch.Generator], *,
         seed_tensor: Optional[torch.Tensor] = None):
    """`(π, index)` for a fresh sample along `dim` by PyTorch operators (checked), under
    no_grad; `π = softmax` in the compute dtype. The seed is drawn from `generator` unless
    given."""
    with torch.no_grad():
        probs = torch.softmax(logits.detach(), dim, dtype=compute_dtype(logits.dtype))
        if seed_tensor is None:
            seed_tensor = seed(generator, logits.device)
        index, total = _draw_index(probs, dim, seed_tensor)
    V.check_finite_rows(total, logits, dim)
    return probs, index


def sample_categorical(logits: torch.Tensor, *, dim: int = -1, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw `D ~ Categorical(softmax(logits))` along `dim`; returns the category index (int64),
    shaped like `logits` without `dim`. Categories with logit `-inf` are never drawn.

    One uniform number per row is used (inverse CDF), so a draw costs a cumulative sum rather
    than per-element noise. It is the draw every straight-through estimator makes: the same
    generator state gives the same sample from this function and from them, on every path.
    """
    V.check_floating(logits)
    dim = V.category_dim(logits, dim)
    V.check_generator(generator, logits.device)
    return draw_index(logits, dim, generator)


def draw_index(logits: torch.Tensor, dim: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """The index of a fresh sample (arguments already checked): the fused operator where it
    applies, else PyTorch's operators; the same sample either way."""
    x = logits.detach()
    if _ops.use_kernels(x):
        last = dim == x.dim() - 1
        index = _ops.draw(x if last else x.movedim(dim, -1), seed(generator, x.device), dim)
        return index.clone()   # its own storage, not the discarded one-hot's
    return draw(logits, dim, generator)[1]


def conditional_gumbel(logits: torch.Tensor, index: torch.Tensor, dim: int, *, num: Optional[int] = None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Perturbed logits `z = θ + G` with `G ~ Gumbel` conditioned on `argmax z = index`
    (Maddison et al. 2014; Paulus et al. 2021):

        z_D = log Z - log E_D,    z_j = -log(E_j exp(-θ_j) + E_D / Z)   (j ≠ D),

    with `E ~ Exp(1)` from the noise stream of a fresh seed and `Z = Σ exp θ`, up to a
    common shift per row (`z − max θ` is returned). `num` adds a leading dimension of that
    many independent draws. Masked categories (`θ_j = -inf`) get `-inf`.
    """
    theta = logits.detach().movedim(dim, -1)
    e = torch.exp(theta - theta.amax(-1, keepdim=True))
    s = e.sum(-1, keepdim=True)
    rows, n = theta.numel() // theta.shape[-1], theta.shape[-1]
    u = _streams.noise_uniforms(seed(generator, theta.device), rows, n, draws=num, dtype=theta.dtype)
    u = u.reshape(((num,) if num is not None else ()) + tuple(theta.shape))
    idx = index.unsqueeze(-1) if num is None else index.unsqueeze(-1).expand((num,) + tuple(index.shape) + (1,))
    big_e = -torch.log(u)
    log_a = torch.log(s) - torch.log(big_e.gather(-1, idx))            # z_D − max θ
    z = log_a + torch.log(e) - torch.log(torch.addcmul(e, log_a.exp(), big_e))
    return z.scatter(-1, idx, log_a).movedim(-1, dim + (0 if num is None else 1))
