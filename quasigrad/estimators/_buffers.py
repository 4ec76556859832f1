"""Where the fused kernels' outputs live: the one-hot, the index, and the row maxima or the
kept exponentials of a draw, allocated apart or side by side in one allocation.

Side by side they save allocator calls and keep small blocks from sitting between large ones:
apart, at (4096, 64) float32, their frees left glibc's heap top past its trim threshold on some
calls and not others, 0 to 60 page faults a call and up to 1.4× the time, where one allocation
gave none. Below `PACK_MIN_BYTES` of logits they are allocated apart, since there three
`torch.empty` calls cost less than the shared allocation's `set_` calls and tensors under
glibc's default mmap threshold (128 KiB) were not where the trimming faulted pages.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

__all__ = ["packed", "sample_outputs", "keep_outputs", "PACK_MIN_BYTES"]

PACK_MIN_BYTES = 128 << 10


def packed(*parts: Tuple[torch.dtype, torch.Size]) -> Tuple[torch.Tensor, ...]:
    """Contiguous tensors of the given `(dtype, shape)`s back to back in one allocation, each
    from an 8-byte boundary. None is a view of another (each has its own version counter) and
    none overlaps another."""
    offsets, end = [], 0
    for dtype, shape in parts:
        offsets.append(end)
        end += -(-math.prod(shape) * dtype.itemsize // 8) * 8
    storage = torch.empty(end, dtype=torch.uint8).untyped_storage()
    return tuple(torch.empty(0, dtype=dtype).set_(storage, at // dtype.itemsize, shape)  # type: ignore[call-overload]
                 for (dtype, shape), at in zip(parts, offsets))


def sample_outputs(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one-hot, index and row-max tensors for `_native.sample`; side by side from rows of 16
    categories up (the one-hot's storage is then larger than the one-hot by at most 12/64,
    float32 at n = 16, plus 4 bytes of padding)."""
    n, batch = x.shape[-1], x.shape[:-1]
    if n < 16:
        return torch.empty_like(x), torch.empty(batch, dtype=torch.int64), torch.empty(batch, dtype=x.dtype)
    return packed((x.dtype, x.shape), (torch.int64, batch), (x.dtype, batch))  # type: ignore[return-value]


def keep_outputs(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one-hot, kept-exponential and index tensors for `_native.sample_keep`. The one-hot
    and the index are side by side from `PACK_MIN_BYTES` of logits up; the exponentials always
    have their own allocation: the autograd graph holds them until the backward pass, and
    sharing the one-hot's storage they would hold the one-hot's memory too, after its user has
    let it go. Measured at (4096, 64) and (2048, 128) float32, this pair and one allocation apart
    took the same time, with no page faults."""
    e = torch.empty_like(x)
    if x.numel() * x.element_size() < PACK_MIN_BYTES:
        return torch.empty_like(x), e, torch.empty(x.shape[:-1], dtype=torch.int64)
    d, index = packed((x.dtype, x.shape), (torch.int64, x.shape[:-1]))
    return d, e, index
