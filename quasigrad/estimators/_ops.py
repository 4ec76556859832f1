"""The fused kernels as PyTorch operators (`torch.ops.quasigrad.*`), and the PyTorch
computations they stand for.

Each operator has a fake implementation (shapes only), so `torch.compile` keeps it as one node
of the graph, and a registered autograd formula, whose backward is another operator where a
kernel computes it. Its implementation runs the fused kernel on float32/float64 CPU tensors when
the library is loaded (`_native`) and the PyTorch computation otherwise (CUDA, other dtypes,
no compiler): both draw from the same random streams (`_streams`), so they give the same
sample. Every operator takes its categories along the last dimension (callers move `dim`);
`dim` is passed only for error messages.

- `categorical(logits, seed, mode, cap, dim) -> (one_hot, index, row_max)`: a fresh draw;
  backward: `categorical_backward` with formula `mode` (ST, ZGR, DARN, GST).
- `gumbel_softmax(logits, seed, index?, tau, hard, dim) -> (y, one_hot, index)`: the relaxed
  sample `y` (and its one-hot when `hard`); backward `gumbel_softmax_backward`,
  `(1/τ) J(y) g`.
- `gumbel_rao(logits, seed, index?, tau, k, dim) -> (one_hot, index)`; backward:
  `gumbel_rao_backward` (k conditional draws made again from `seed`).

The estimators call `categorical`, `gumbel_softmax` and `gumbel_rao`: the
operators while `torch.compile` traces, and in eager mode the same implementations through a
plain `autograd.Function` (going through the dispatcher costs a round trip from C++ back into
Python per operator, more than the kernel itself on small inputs). Under `torch.func`
transforms the estimators do not come here (see `use_kernels`): they run the PyTorch
computations directly, which vmap and grad can see through.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._util import validate as V
from . import _native, _streams

__all__ = ["use_kernels", "functorch_active", "dynamo_compiling", "inverse_cdf", "relaxed", "gumbel_rao_grad",
           "categorical_backward_ref", "categorical", "categorical_eager", "gumbel_softmax", "gumbel_rao"]

_COMPUTE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def functorch_active() -> bool:
    """Whether a `torch.func` transform (vmap, grad, jacrev, ...) is running."""
    return bool(torch._C._are_functorch_transforms_active())


def dynamo_compiling() -> bool:
    """Whether `torch.compile` is tracing the caller."""
    return bool(torch.compiler.is_compiling())


def use_kernels(x: torch.Tensor) -> bool:
    """Whether `x` goes through the operators here: a float32/float64 CPU tensor, the library
    loaded, and no `torch.func` transform running (whose tensors have no memory to hand to C)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.numel() == 0:
        return False
    if not dynamo_compiling() and functorch_active():
        return False
    return _kernels_loaded()


@torch.compiler.assume_constant_result
def _kernels_loaded() -> bool:
    return _native.available()


# --------------------------------------------------------------------------------------------
# The PyTorch computations (categories last)


def inverse_cdf(e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The first `j` whose running sum of the masses `e` exceeds `v` (one per row), else the
    last `j` with `e_j > 0`: the kernel's search, so a category of zero mass is never taken."""
    n = e.shape[-1]
    cdf = e.cumsum(-1)
    if n > 16 and cdf.is_contiguous() and not V.is_compiling():
        k = torch.searchsorted(cdf, v.unsqueeze(-1), right=True).squeeze(-1)
    else:
        k = (cdf <= v.unsqueeze(-1)).sum(-1)
    last = (n - 1) - (e > 0).flip(-1).to(torch.uint8).argmax(-1)
    return torch.where(k >= n, last, k)


def _bad_rows(x: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
    return torch.isnan(x).any(-1) | torch.isinf(row_max)


def _raise_bad(logits: torch.Tensor, dim: int) -> None:
    V.describe_bad_logits(logits.movedim(-1, dim), dim)


def _check_rows(logits: torch.Tensor, dim: int) -> None:
    if bool(_bad_rows(logits, logits.amax(-1)).any()):
        _raise_bad(logits, dim)


def _check_given(logits: torch.Tensor, index: torch.Tensor) -> None:
    if bool(torch.isneginf(logits.gather(-1, index.unsqueeze(-1))).any()):
        raise ValueError("index selects a category whose probability is 0 (logit -inf); "
                         "a sample can only hold categories with finite logits")


def _categorical_ref(x: torch.Tensor, seed: torch.Tensor, dim: int):
    m = x.amax(-1)
    bad = _bad_rows(x, m)
    if not V.is_compiling() and bool(bad.any()):
        _raise_bad(x, dim)
    e = torch.exp(x - m.unsqueeze(-1))
    u = _streams.row_uniforms(seed, x.shape[:-1], x.dtype)
    index = inverse_cdf(e, u * e.sum(-1))
    return torch.zeros_like(x).scatter_(-1, index.unsqueeze(-1), 1), index, m


def categorical_backward_ref(mode: int, g: torch.Tensor, x: torch.Tensor, row_max: torch.Tensor,
                             index: torch.Tensor, cap: float) -> torch.Tensor:
    """The kernels' backward formulas by PyTorch operators (see `_kernels.c`)."""
    q = torch.exp(x - row_max.unsqueeze(-1))
    idx = index.unsqueeze(-1)
    if mode == _native.GST:
        q = q.clamp(max=cap).scatter(-1, idx, 1.0)
    p = q / q.sum(-1, keepdim=True)
    c = (p * g).sum(-1, keepdim=True)
    g_k = g.gather(-1, idx)
    if mode in (_native.ST, _native.GST):
        return p * (g - c)
    onehot = torch.zeros_like(p).scatter_(-1, idx, 1.0)
    if mode == _native.ZGR:
        return 0.5 * p * (g - g_k) + 0.5 * (g_k - c) * onehot
    return (g_k - c) * (onehot - p)


def relaxed(e: torch.Tensor, s: torch.Tensor, index: torch.Tensor, u: torch.Tensor, tau: float) -> torch.Tensor:
    """`r^(1/τ)` before normalisation, for the noise conditioned on `index`: with `E = −log U`,
    `a = s / E_k`, `r_j = e_j / (a E_j + e_j)` and `r_k = 1` (`e = exp(θ − max)`, `s` its
    row sums kept as a size-1 dimension; leading dimensions of `u` are draws)."""
    idx = index.unsqueeze(-1).expand(u.shape[:-1] + (1,))
    big_e = -torch.log(u)
    a = s / big_e.gather(-1, idx)
    r = e / torch.addcmul(e, a, big_e)
    r = r.scatter(-1, idx, 1.0)
    return r if tau == 1.0 else torch.exp(torch.log(r) / tau)


def _gumbel_ref(x: torch.Tensor, seed: torch.Tensor, index: Optional[torch.Tensor], tau: float, dim: int):
    m = x.amax(-1, keepdim=True)
    bad = _bad_rows(x, m.squeeze(-1))
    if not V.is_compiling() and bool(bad.any()):
        _raise_bad(x, dim)
    e = torch.exp(x - m)
    s = e.sum(-1, keepdim=True)
    if index is None:
        u = _streams.row_uniforms(seed, x.shape[:-1], x.dtype)
        index = inverse_cdf(e, u * s.squeeze(-1))
    rows = x.numel() // x.shape[-1]
    noise = _streams.noise_uniforms(seed, rows, x.shape[-1], dtype=x.dtype).reshape(x.shape)
    r = relaxed(e, s, index, noise, tau)
    return r / r.sum(-1, keepdim=True), index


def gumbel_rao_grad(x: torch.Tensor, index: torch.Tensor, g: torch.Tensor, seed: torch.Tensor, tau: float,
                    k: int) -> torch.Tensor:
    """GR-MCK's gradient by PyTorch operators (categories last), the draws made in chunks so that
    memory does not grow with `k`."""
    shape, n = x.shape, x.shape[-1]
    rows = x.numel() // n
    x, g, index = x.reshape(rows, n), g.reshape(rows, n), index.reshape(rows)
    e = torch.exp(x - x.amax(-1, keepdim=True))
    s = e.sum(-1, keepdim=True)
    acc = torch.zeros_like(x)
    chunk = max(1, min(k, (1 << 22) // max(1, rows * n)))
    done = 0
    while done < k:
        c = min(chunk, k - done)
        u = _streams.noise_uniforms(seed, rows, n, first=done, draws=c, dtype=x.dtype)
        y = relaxed(e, s, index, u, tau)
        y = y / y.sum(-1, keepdim=True)
        acc = acc + (y * (g - (y * g).sum(-1, keepdim=True))).sum(0)
        done += c
    return (acc / (k * tau)).reshape(shape)


# --------------------------------------------------------------------------------------------
# The operators

_lib = torch.library.Library("quasigrad", "DEF")
_lib.define("categorical(Tensor logits, Tensor seed, int mode, float cap, int dim) -> (Tensor, Tensor, Tensor)")
_lib.define("categorical_backward(Tensor grad, Tensor logits, Tensor row_max, Tensor index, int mode, float cap) "
            "-> Tensor")
_lib.define("gumbel_softmax(Tensor logits, Tensor seed, Tensor? index, float tau, bool hard, int dim) "
            "-> (Tensor, Tensor, Tensor)")
_lib.define("gumbel_softmax_backward(Tensor grad, Tensor y, float tau) -> Tensor")
_lib.define("gumbel_rao(Tensor logits, Tensor seed, Tensor? index, float tau, int k, int dim) -> (Tensor, Tensor)")
_lib.define("gumbel_rao_backward(Tensor grad, Tensor logits, Tensor index, Tensor seed, float tau, int k) -> Tensor")


def _kernel_ok(x: torch.Tensor) -> bool:
    return _native.usable(x)


def _categorical(logits, seed, mode, cap, dim):
    if _kernel_ok(logits):
        d, index, row_max, bad = _native.sample(logits, _streams.seed_value(seed))
        if bad:
            _raise_bad(logits, dim)
        return d, index, row_max
    return _categorical_ref(logits, seed, dim)


def _categorical_backward(grad, logits, row_max, index, mode, cap):
    if _kernel_ok(logits):
        return _native.backward(mode, grad, logits, row_max, index, cap)
    return categorical_backward_ref(mode, grad.to(logits.dtype), logits, row_max, index, cap)


def _gumbel_softmax(logits, seed, index, tau, hard, dim):
    if _kernel_ok(logits):
        s = _streams.seed_value(seed)
        y, d, drawn, bad = _native.gumbel(logits, s, _streams.noise_key(s), tau, hard, index)
        if bad:
            _check_rows(logits, dim)
            _check_given(logits, index)
        return y, (d if hard else logits.new_empty(0)), drawn
    if index is not None and not V.is_compiling():
        _check_given(logits, index)
    y, drawn = _gumbel_ref(logits, seed, index, tau, dim)
    onehot = torch.zeros_like(y).scatter_(-1, drawn.unsqueeze(-1), 1) if hard else logits.new_empty(0)
    return y, onehot, drawn


def _gumbel_softmax_backward(grad, y, tau):
    if _kernel_ok(y):
        return _native.softmax_backward(y, grad, 1.0 / tau)
    g = grad.to(y.dtype)
    return y * (g - (y * g).sum(-1, keepdim=True)) / tau


def _gumbel_rao(logits, seed, index, tau, k, dim):
    if index is None:
        d, index, _ = _categorical(logits, seed, 0, 0.0, dim)
        return d, index
    return torch.zeros_like(logits).scatter_(-1, index.unsqueeze(-1), 1), index.clone()


def _gumbel_rao_backward(grad, logits, index, seed, tau, k):
    if _kernel_ok(logits):
        s = _streams.seed_value(seed)
        return _native.gumbel_rao_backward(logits, index, grad, _streams.noise_key(s), tau, k)
    return gumbel_rao_grad(logits, index, grad.to(logits.dtype), seed, tau, k)


for _name, _impl in (("categorical", _categorical), ("categorical_backward", _categorical_backward),
                     ("gumbel_softmax", _gumbel_softmax), ("gumbel_softmax_backward", _gumbel_softmax_backward),
                     ("gumbel_rao", _gumbel_rao),
                     ("gumbel_rao_backward", _gumbel_rao_backward)):
    _lib.impl(_name, _impl, "CompositeExplicitAutograd")


@torch.library.register_fake("quasigrad::categorical", lib=_lib)
def _(logits, seed, mode, cap, dim):
    batch = logits.shape[:-1]
    return torch.empty_like(logits), logits.new_empty(batch, dtype=torch.int64), logits.new_empty(batch)


@torch.library.register_fake("quasigrad::categorical_backward", lib=_lib)
def _(grad, logits, row_max, index, mode, cap):
    return torch.empty_like(logits)


@torch.library.register_fake("quasigrad::gumbel_softmax", lib=_lib)
def _(logits, seed, index, tau, hard, dim):
    return (torch.empty_like(logits), torch.empty_like(logits) if hard else logits.new_empty(0),
            logits.new_empty(logits.shape[:-1], dtype=torch.int64))


@torch.library.register_fake("quasigrad::gumbel_softmax_backward", lib=_lib)
def _(grad, y, tau):
    return torch.empty_like(y)


@torch.library.register_fake("quasigrad::gumbel_rao", lib=_lib)
def _(logits, seed, index, tau, k, dim):
    return torch.empty_like(logits), logits.new_empty(logits.shape[:-1], dtype=torch.int64)


@torch.library.register_fake("quasigrad::gumbel_rao_backward", lib=_lib)
def _(grad, logits, index, seed, tau, k):
    return torch.empty_like(logits)


def _categorical_setup(ctx, inputs, output):
    logits, _, mode, cap, _ = inputs
    ctx.mode, ctx.cap = mode, cap
    ctx.save_for_backward(logits, output[1], output[2])


def _categorical_grad(ctx, grad, _index, _row_max):
    logits, index, row_max = ctx.saved_tensors
    return torch.ops.quasigrad.categorical_backward(grad, logits, row_max, index, ctx.mode, ctx.cap), None, None, None, None


def _gumbel_setup(ctx, inputs, output):
    ctx.tau, ctx.hard = inputs[3], inputs[4]
    ctx.save_for_backward(output[0])


def _gumbel_grad(ctx, grad_y, grad_onehot, _index):
    (y,) = ctx.saved_tensors
    g = grad_y
    if ctx.hard and grad_onehot is not None:
        g = grad_onehot if g is None else g + grad_onehot
    if g is None:
        return None, None, None, None, None, None
    return torch.ops.quasigrad.gumbel_softmax_backward(g, y, ctx.tau), None, None, None, None, None


def _gumbel_rao_setup(ctx, inputs, output):
    logits, seed, _, tau, k, _ = inputs
    ctx.tau, ctx.k = tau, k
    ctx.save_for_backward(logits, output[1], seed)


def _gumbel_rao_grad(ctx, grad, _index):
    logits, index, seed = ctx.saved_tensors
    out = torch.ops.quasigrad.gumbel_rao_backward(grad, logits, index, seed, ctx.tau, ctx.k)
    return out, None, None, None, None, None


torch.library.register_autograd("quasigrad::categorical", _categorical_grad, setup_context=_categorical_setup, lib=_lib)
torch.library.register_autograd("quasigrad::gumbel_softmax", _gumbel_grad, setup_context=_gumbel_setup, lib=_lib)
torch.library.register_autograd("quasigrad::gumbel_rao", _gumbel_rao_grad, setup_context=_gumbel_rao_setup, lib=_lib)


# --------------------------------------------------------------------------------------------
# Entry points: the operator under torch.compile, the same implementation directly in eager mode


class _Categorical(torch.autograd.Function):
    """The eager entry to `quasigrad::categorical`'s implementation. Given the seed as a Python
    integer (from [`categorical_eager`][quasigrad.estimators._ops.categorical_eager], logits the
    kernels take), it calls the kernels directly, which keeps the per-call cost of small inputs
    near that of a softmax; given the seed tensor, it goes through `_categorical` (kernel or
    PyTorch operators)."""

    @staticmethod
    def forward(ctx, logits, seed, mode, cap, dim):
        ctx.direct = isinstance(seed, int)
        ctx.mode, ctx.cap = mode, cap
        ctx.kept = False
        if ctx.direct:
            x = _native._plain(logits)
            ctx.kept = _native.keeps(x)
            if ctx.kept:
                d, e, index, bad = _native.sample_keep(x, seed)
                saved = (e, index)
            else:
                d, index, row_max, bad = _native.sample(x, seed)
                saved = (x, index, row_max)
            if bad:
                _raise_bad(logits, dim)
            ctx.save_for_backward(*saved)
        else:
            d, index, row_max = _categorical(logits, seed, mode, cap, dim)
            ctx.save_for_backward(logits, index, row_max)
        return d

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():   # create_graph: a result that refuses to be differentiated again
            return _eager_grad_once(ctx, grad)
        return _eager_grad(ctx, grad)


def _eager_grad(ctx, grad):
    if ctx.kept:
        e, index = ctx.saved_tensors
        return _native.backward_kept(ctx.mode, grad, e, index, ctx.cap), None, None, None, None
    logits, index, row_max = ctx.saved_tensors
    return _categorical_backward(grad, logits, row_max, index, ctx.mode, ctx.cap), None, None, None, None


_eager_grad_once = torch.autograd.function.once_differentiable(_eager_grad)


def categorical_eager(logits: torch.Tensor, generator: Optional[torch.Generator], mode: int, cap: float,
                      dim: int) -> torch.Tensor:
    """[`categorical`][quasigrad.estimators._ops.categorical] with the seed drawn here from
    `generator` (the same draw `_streams.draw_seed` makes), for eager calls on logits that
    [`use_kernels`][quasigrad.estimators._ops.use_kernels] accepts."""
    key = _streams.seed_int(generator)
    if torch.is_grad_enabled() and logits.requires_grad:
        return _Categorical.apply(logits, key, mode, cap, dim)
    d, _, _, bad = _native.sample(logits, key)
    if bad:
        _raise_bad(logits, dim)
    return d


def categorical(logits: torch.Tensor, seed: torch.Tensor, mode: int, cap: float, dim: int) -> torch.Tensor:
    """The one-hot of a fresh draw from `logits` (categories last) with the straight-through
    family's backward formula `mode`: `quasigrad::categorical`."""
    if dynamo_compiling():
        return torch.ops.quasigrad.categorical(logits, seed, mode, cap, dim)[0]
    if torch.is_grad_enabled() and logits.requires_grad:
        return _Categorical.apply(logits, seed, mode, cap, dim)
    return _categorical(logits, seed, mode, cap, dim)[0]


def draw(logits: torch.Tensor, seed: torch.Tensor, dim: int) -> torch.Tensor:
    """The index of a fresh draw (no gradient): `quasigrad::categorical`'s second output."""
    if dynamo_compiling():
        return torch.ops.quasigrad.categorical(logits, seed, 0, 0.0, dim)[1]
    return _categorical(logits.detach(), seed, 0, 0.0, dim)[1]


class _GumbelSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, seed, index, tau, hard, dim):
        y, onehot, _ = _gumbel_softmax(logits, seed, index, tau, hard, dim)
        ctx.tau = tau
        ctx.save_for_backward(y)
        return onehot if hard else y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return _gumbel_softmax_backward(grad, y, ctx.tau), None, None, None, None, None


def gumbel_softmax(logits: torch.Tensor, seed: torch.Tensor, index: Optional[torch.Tensor], tau: float, hard: bool,
                   dim: int) -> torch.Tensor:
    """The relaxed sample (or, with `hard`, its one-hot) with backward `(1/τ) J(y) g`:
    `quasigrad::gumbel_softmax`."""
    if dynamo_compiling():
        y, onehot, _ = torch.ops.quasigrad.gumbel_softmax(logits, seed, index, tau, hard, dim)
        return onehot if hard else y
    if torch.is_grad_enabled() and logits.requires_grad:
        return _GumbelSoftmax.apply(logits, seed, index, tau, hard, dim)
    y, onehot, _ = _gumbel_softmax(logits, seed, index, tau, hard, dim)
    return onehot if hard else y


class _GumbelRaoFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, seed, index, tau, k, dim):
        d, drawn = _gumbel_rao(logits, seed, index, tau, k, dim)
        ctx.tau, ctx.k = tau, k
        ctx.save_for_backward(logits, drawn, seed)
        return d

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        logits, index, seed = ctx.saved_tensors
        return _gumbel_rao_backward(grad, logits, index, seed, ctx.tau, ctx.k), None, None, None, None, None


def gumbel_rao(logits: torch.Tensor, seed: torch.Tensor, index: Optional[torch.Tensor], tau: float, k: int,
               dim: int) -> torch.Tensor:
    """The one-hot sample with GR-MCK's backward: `quasigrad::gumbel_rao`."""
    if dynamo_compiling():
        return torch.ops.quasigrad.gumbel_rao(logits, seed, index, tau, k, dim)[0]
    if torch.is_grad_enabled() and logits.requires_grad:
        return _GumbelRaoFused.apply(logits, seed, index, tau, k, dim)
    return _gumbel_rao(logits, seed, index, tau, k, dim)[0]
