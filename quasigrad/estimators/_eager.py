"""The shortest route to the straight-through family's fused kernels, for the commonest call: an
eager CPU call on float32/float64 logits, contiguous, categories last, a fresh draw and a
gradient wanted. It skips the general route's layers (the full argument checks, moving `dim`,
the operator's seed tensor) and keeps the draw's exponentials for the backward kernel, which
then does a softmax backward's work; every other call takes the general route, with the same
sample and the same gradient."""

from __future__ import annotations

from typing import Optional

import torch

from . import _native, _ops, _streams

__all__ = ["shortest"]

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_KERNEL_DTYPES = (torch.float32, torch.float64)


def shortest(logits, dim, generator, mode: int, cap: float) -> Optional[torch.Tensor]:
    """The straight-through family's estimator with formula `mode` by the shortest route, for the
    commonest call (eager, CPU, float32/float64, contiguous, categories last, a fresh draw, a
    gradient wanted, and nothing a full check could refuse); None for every other call, which
    then takes the general route (the same sample and gradient; every argument checked)."""
    if (type(logits) not in _PLAIN_TYPES or logits.dtype not in _KERNEL_DTYPES or logits.device.type != "cpu"
            or type(dim) is not int or logits.dim() == 0 or (dim != -1 and dim != logits.dim() - 1)
            or not logits.requires_grad or not torch.is_grad_enabled() or not logits.is_contiguous()
            or logits.is_neg() or logits.is_conj() or logits.numel() == 0 or not _native.keeps(logits)):
        return None
    if generator is not None and (type(generator) is not torch.Generator or generator.device.type != "cpu"):
        return None
    if _ops.dynamo_compiling() or _ops.functorch_active() or not _ops._kernels_loaded():
        return None
    return _Kept.apply(logits, _streams.seed_int(generator), mode, cap)


class _Kept(torch.autograd.Function):
    """[`shortest`][quasigrad.estimators._eager.shortest]'s autograd node: the kernels called
    directly, the draw's exponentials kept for the backward pass."""

    @staticmethod
    def forward(ctx, logits, key, mode, cap):
        d, e, index, bad = _native.sample_keep(logits, key)
        if bad:
            _ops._raise_bad(logits, logits.dim() - 1)
        ctx.mode, ctx.cap, ctx.kept = mode, cap, True
        ctx.save_for_backward(e, index)
        return d

    @staticmethod
    def backward(ctx, grad):
        # the general route's eager backward, which reads the kept exponentials (ctx.kept)
        return _ops._Categorical.backward(ctx, grad)[:4]
