"""The shortest route to the straight-through family's fused kernels, for the commonest call: an
eager CPU call on float32/float64 logits, contiguous, categories last, a fresh draw and a
gradient wanted. It skips the general route's layers (the full argument checks, moving `dim`,
the operator's seed tensor) and keeps the draw's exponentials for the backward kernel, which
then does a softmax backward's work; every other call takes the general route, with the same
sample and the same gradient."""

from __future__ import annotations

from typing import Optional

import torch

from . import _buffers, _native, _ops, _streams

__all__ = ["shortest"]

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_KERNEL_DTYPES = (torch.float32, torch.float64)


def shortest(logits, dim, generator, mode: int, cap: float) -> Optional[torch.Tensor]:
    """The straight-through family's estimator with formula `mode` by the shortest route, for the
    commonest call (eager, CPU, float32/float64, contiguous, categories last, a fresh draw, a
    gradient wanted, and nothing a full check could refuse); None for every other call, which
    then takes the general route (the same sample and gradient; every argument checked)."""
    kernels = _native._kernels
    if (kernels is None or type(logits) not in _PLAIN_TYPES or logits.dtype not in _KERNEL_DTYPES
            or logits.device.type != "cpu" or type(dim) is not int or logits.dim() == 0
            or (dim != -1 and dim != logits.dim() - 1) or not logits.requires_grad or not torch.is_grad_enabled()
            or not logits.is_contiguous() or logits.is_neg() or logits.is_conj() or logits.numel() == 0
            or logits.numel() * logits.element_size() > _native.KEEP_MAX_BYTES):
        return None
    if generator is not None and (type(generator) is not torch.Generator or generator.device.type != "cpu"):
        return None
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return None
    return _Kept.apply(logits, _streams.seed_int(generator), mode, cap, kernels.fn)


_DRAW = {torch.float32: "qg_sample_keep_f32", torch.float64: "qg_sample_keep_f64"}
_GRAD = {torch.float32: "qg_backward_kept_f32", torch.float64: "qg_backward_kept_f64"}


class _Kept(torch.autograd.Function):
    """[`shortest`][quasigrad.estimators._eager.shortest]'s autograd node: the kernels called
    directly (`fns`, the loaded library's functions), the draw's exponentials kept for the
    backward pass."""

    @staticmethod
    def forward(ctx, logits, key, mode, cap, fns):
        n = logits.shape[-1]
        rows = logits.numel() // n
        d, e, index = _buffers.keep_outputs(logits)
        threads = max(1, torch.get_num_threads())
        if fns[_DRAW[logits.dtype]](logits.data_ptr(), d.data_ptr(), e.data_ptr(), index.data_ptr(), key, rows, n,
                                    threads):
            _ops._raise_bad(logits, logits.dim() - 1)
        ctx.mode, ctx.cap, ctx.fns, ctx.rows, ctx.threads = mode, cap, fns, rows, threads
        ctx.save_for_backward(e, index)
        return d

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():   # create_graph: the general route's result that refuses a second pass
            ctx.kept = True
            return _ops._Categorical.backward(ctx, grad)[:4] + (None,)
        e, index = ctx.saved_tensors
        if grad.dtype != e.dtype or not grad.is_contiguous() or grad.is_neg() or grad.is_conj():
            grad = _native._plain(grad.to(e.dtype))
        out = torch.empty_like(e)
        ctx.fns[_GRAD[e.dtype]](e.data_ptr(), index.data_ptr(), grad.data_ptr(), out.data_ptr(), ctx.mode, ctx.cap,
                                ctx.rows, e.shape[-1], ctx.threads)
        return out, None, None, None, None
