"""The random streams every layer-1 function draws from, by PyTorch operators.

One seed `S` (a 64-bit integer, as a 0-dim int64 tensor) is drawn from the caller's generator
per call (`draw_seed`). Every random number the call uses is then a function of `S` and
of the position it is used at in the *logical* layout (the batch shape in C order, the category
last), never of the memory layout, the device's kernel or the number of threads:

- the **row stream** gives each categorical row (or Bernoulli element) `r` one uniform number
  `u_r`: output `r` of SplitMix64 seeded at `S` (Steele, Lea, Flood 2014), its top 24 bits
  for float32 or 53 bits for float64 (so the float32 value is the float64 one truncated);
- the **noise stream** gives draw `i` of row `r` the row key
  `k = SplitMix64(K) output i·rows + r` with `K = mix64(S ^ NOISE_SALT)`, and element `j`
  the uniform `U = (h32((j·0x9E3779B9 + lo(k)) mod 2³²) ^ hi(k)) >> 9` `+ ½` over `2²³` in
  (0, 1), `h32` being a 32-bit integer hash; `U` is exactly a float32 number, the same in
  float32 and float64.

The fused kernels (`_kernels.c`) compute the same numbers in C, so a sample is the same on the
kernel path, on the PyTorch path, on any layout, under `torch.compile` and `torch.func`.
Integer arithmetic here is int64 with wrap-around (two's complement), which is what PyTorch's
CPU and CUDA kernels do; right shifts are made logical by masking.
"""

from __future__ import annotations

import threading
from typing import Optional

import torch

__all__ = ["draw_seed", "seed_value", "noise_key", "row_uniforms", "noise_uniforms", "mix64_int", "NOISE_SALT"]

MASK64 = (1 << 64) - 1
_LOW, _HIGH = -(1 << 63), (1 << 63) - 1      # a seed is any int64 (torch.randint's bounds)
GAMMA = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
NOISE_SALT = 0xD6E8FEB86659FD93
_H1, _H2, _GOLDEN32 = 0x7FEB352D, 0x846CA68B, 0x9E3779B9
_M32 = 0xFFFFFFFF


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 that holds it."""
    value &= MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def mix64_int(z: int) -> int:
    """SplitMix64's finaliser on a Python integer (mod 2⁶⁴)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _srl(z, 30)) * _signed(_M1)
    z = (z ^ _srl(z, 27)) * _signed(_M2)
    return z ^ _srl(z, 31)


def _bits64(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """SplitMix64 output `counter` of the stream seeded at `key` (int64 tensors, broadcast)."""
    return _mix64(key + (counter + 1) * _signed(GAMMA))


def _h32(x: torch.Tensor) -> torch.Tensor:
    """The 32-bit hash of `_kernels.c` on int64 tensors holding values in [0, 2³²)."""
    x = x ^ (x >> 16)
    x = (x * _H1) & _M32
    x = x ^ (x >> 15)
    x = (x * _H2) & _M32
    return x ^ (x >> 16)


def draw_seed(generator: Optional[torch.Generator], device) -> torch.Tensor:
    """One 64-bit seed from `generator` (a 0-dim int64 tensor on `device`).

    Under `torch.compile` this runs outside the graph (inductor would replace the draw by its
    own random numbers); under `torch.func.vmap` it follows vmap's `randomness` argument
    (`"different"`: one seed per batch element; `"same"`: one for all; the default
    `"error"` raises PyTorch's error saying so)."""
    return torch.randint(_LOW, _HIGH, (), dtype=torch.int64, device=device, generator=generator)


_draw_seed_eager = torch.compiler.disable(draw_seed)


def seed_int(generator: Optional[torch.Generator]) -> int:
    """`seed_value(draw_seed(generator, "cpu"))` in one step: the same draw from `generator`
    (eager CPU calls only), by `random_` into this thread's 0-dim tensor, which is what
    `torch.randint` does into a new one."""
    box = getattr(_SEED_BOX, "t", None)
    if box is None:
        with torch.inference_mode(False):   # a normal tensor, which may be written in and out of inference mode
            box = _SEED_BOX.t = torch.empty((), dtype=torch.int64)
    return int(box.random_(_LOW, _HIGH, generator=generator)) & MASK64


_SEED_BOX = threading.local()


def seed(generator: Optional[torch.Generator], device, compiling: bool) -> torch.Tensor:
    """`draw_seed`, kept out of compiled graphs when `compiling`."""
    return _draw_seed_eager(generator, device) if compiling else draw_seed(generator, device)


def seed_value(seed_tensor: torch.Tensor) -> int:
    """The seed as an unsigned 64-bit Python integer (reads the tensor)."""
    return int(seed_tensor) & MASK64


def noise_key(seed_int: int) -> int:
    """The noise stream's key `K` for the seed (Python integers)."""
    return mix64_int(seed_int ^ NOISE_SALT)


def row_uniforms(seed_tensor: torch.Tensor, shape, dtype: torch.dtype) -> torch.Tensor:
    """The row stream's `u` for every position of `shape` (C order), in `dtype` (float32:
    24 bits; float64: 53 bits; half precision: the float32 values)."""
    count = 1
    for s in shape:
        count *= int(s)
    counter = torch.arange(count, dtype=torch.int64, device=seed_tensor.device).reshape(tuple(shape))
    z = _bits64(seed_tensor, counter)
    if dtype == torch.float64:
        return _srl(z, 11).to(torch.float64) * 2.0 ** -53
    return (_srl(z, 40).to(torch.float32) * 2.0 ** -24).to(dtype)


def noise_uniforms(seed_tensor: torch.Tensor, rows: int, n: int, *, first: int = 0, draws: Optional[int] = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The noise stream's `U` for draws `first, first+1, ...` (`draws` of them, or one
    without a leading dimension if `draws` is None) of `rows` rows of `n` categories:
    shape `(draws, rows, n)` or `(rows, n)`, in `dtype`."""
    device = seed_tensor.device
    key = _mix64(seed_tensor ^ _signed(NOISE_SALT))
    count = 1 if draws is None else draws
    row_counter = (torch.arange(first, first + count, dtype=torch.int64, device=device)[:, None] * rows
                   + torch.arange(rows, dtype=torch.int64, device=device))
    k = _bits64(key, row_counter)[..., None]                  # (draws, rows, 1)
    lo, hi = k & _M32, _srl(k, 32)
    j = torch.arange(n, dtype=torch.int64, device=device)
    h = _h32(((j * _GOLDEN32 + lo) & _M32) ^ hi)
    u = ((h >> 9).to(torch.float32) + 0.5) * 2.0 ** -23
    if draws is None:
        u = u[0]
    return u.to(dtype)
