"""Pieces every relaxation shares: rows in the compute dtype with `dim` last, and the spread
that `relative=True` measures in."""

from __future__ import annotations

import math

import torch

from .._util import validate as V
from ..estimators._sampling import compute_dtype, is_compiling

# --------------------------------------------------------------------------------------------
# Shared pieces


def _all_finite(t):
    """Whether every value of `t` is finite: one sum (a NaN or an infinity carries into it), and
    the elementwise check only when the sum is not finite (an overflow of finite values)."""
    t = t.detach()
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def _rows(values, dim, name="values"):
    """Check `values` and return `(x, restore)`: `x` is a (B, n) view in the compute dtype
    with `dim` last; `restore(y)` maps a (B, n) result back to `values`' shape and dtype."""
    V.check_floating(values, name)
    dim = V.normalize_dim(dim, values.dim())
    if values.shape[dim] == 0:
        raise ValueError(f"{name} has size 0 along dim {dim}; it needs at least one element")
    if not is_compiling() and not _all_finite(values):
        raise ValueError(f"{name} contains NaN or infinite values; it needs finite values")
    last = dim == values.dim() - 1
    moved = values if last else values.movedim(dim, -1)
    shape = moved.shape
    # no view where none is needed (each is one more node for the backward pass to walk)
    x = (moved if moved.dim() == 2 else moved.reshape(-1, shape[-1])).to(compute_dtype(values.dtype))

    def restore(y):
        if y.shape != shape:
            y = y.reshape(shape)
        return (y if last else y.movedim(-1, dim)).to(values.dtype)

    return x, restore, shape[:-1]


def _spread(x):
    """Each row's standard deviation (detached; 1 for a constant row): the unit of `relative=True`.
    Computed on the row divided by its largest magnitude, so that values near the float range do
    not overflow when squared."""
    x = x.detach()
    top = x.abs().amax(-1, keepdim=True)
    top = torch.where(top > 0, top, torch.ones_like(top))
    std = (x / top).std(-1, unbiased=False, keepdim=True) * top
    return torch.where(std > 0, std, torch.ones_like(std))


def _standardize(x):
    """`(x − mean) / spread` per row (both detached) and the two, for `relative=True`. Soft sort
    and rank commute with a shift (sort(θ + c) = sort(θ) + c, rank(θ + c) = rank(θ)), so centring
    only keeps the division from overflowing."""
    xd = x.detach()
    top = xd.abs().amax(-1, keepdim=True)
    top = torch.where(top > 0, top, torch.ones_like(top))
    centre = (xd / top).mean(-1, keepdim=True) * top     # a sum of values near the float range overflows
    scale = _spread(x)
    return (x - centre) / scale, centre, scale
