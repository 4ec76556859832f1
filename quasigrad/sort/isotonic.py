"""Fast soft sort and rank (Blondel et al. 2020): one sort, then an isotonic regression by
pool-adjacent-violators, with l2 or KL regularisation.

The isotonic regression runs, on float32/float64 CPU tensors where the fused kernels are loaded,
in the C kernel `qg_isotonic` (`quasigrad/estimators/_isotonic.c`: the sequential PAV, one
row per thread) as the PyTorch operator `torch.ops.quasigrad.isotonic` (with a fake
implementation and an autograd formula whose backward is `quasigrad::isotonic_backward`);
elsewhere (CUDA, half precision, no compiler, `torch.func`) in PyTorch operators, vectorised
across rows (`_isotonic_torch`). Both give the same blocks and values.
"""

from __future__ import annotations

import torch

from .._util import validate as V
from ..estimators import _native, _ops
from ._common import _rows, _standardize


def _check_regularization(regularization):
    if regularization not in ("l2", "kl"):
        raise ValueError(f"regularization must be 'l2' or 'kl', got {regularization!r}")


def _segments(start):
    """Flat segment ids (B·n) of the blocks whose first elements are marked in `start` (B, n)."""
    b, n = start.shape
    offset = torch.arange(b, device=start.device).unsqueeze(1) * n
    return (start.long().cumsum(1) - 1 + offset).reshape(-1)


def _segment_mean(y, seg):
    flat = y.reshape(-1)
    sums = torch.zeros_like(flat).index_add(0, seg, flat)
    counts = torch.zeros_like(flat).index_add(0, seg, torch.ones_like(flat))
    return (sums.gather(0, seg) / counts.gather(0, seg)).reshape(y.shape)


def _segment_logsumexp(y, seg):
    flat = y.reshape(-1)
    top = torch.full_like(flat, -torch.inf).scatter_reduce(0, seg, flat.detach(), "amax", include_self=True)
    top = top.gather(0, seg)                         # the block maximum, a constant for the gradient
    sums = torch.zeros_like(flat).index_add(0, seg, torch.exp(flat - top))
    return (top + torch.log(sums.gather(0, seg))).reshape(y.shape)


def _block_values(s, w, seg, regularization):
    """The isotonic solution on fixed blocks: l2, the block mean of `s − w`; KL,
    `log Σ_B e^s − log Σ_B e^w`. Differentiable (the Jacobian is block averaging / block softmax)."""
    if regularization == "l2":
        return _segment_mean(s - w, seg)
    return _segment_logsumexp(s, seg) - _segment_logsumexp(w, seg)


def _block_bounds(start):
    """First and last index of the block holding each element (blocks start where `start` is set)."""
    b, n = start.shape
    pos = torch.arange(n, device=start.device).expand(b, n)
    first = torch.where(start, pos, 0).cummax(1).values
    end = torch.ones_like(start)
    end[:, :-1] = start[:, 1:]
    last = torch.where(end, pos, n - 1).flip(1).cummin(1).values.flip(1)
    return first, last


def _block_sums(y, first, last):
    """Block sums of `y` by prefix sums (used without gradient, in float64)."""
    csum = torch.nn.functional.pad(y.cumsum(1), (1, 0))
    return csum.gather(1, last + 1) - csum.gather(1, first)


def _block_values_nograd(s, w, start, regularization):
    """Block values of the isotonic problem for the partition `start`, in float64 without gradient:
    l2 by prefix sums; KL by prefix sums of `exp(y − y_first)`, exact for the non-increasing
    `s` and `w` that soft sort and rank pass (the first element of a block is its maximum)."""
    first, last = _block_bounds(start)
    if regularization == "l2":
        return _block_sums(s - w, first, last) / (last - first + 1)

    def lse(y):
        ref = y.gather(1, first)
        return ref + torch.log(_block_sums(torch.exp(y - ref), first, last))

    return lse(s) - lse(w)


def _outer_blocks(s, w, regularization):
    """The starting partition: singletons, except that the first and the last block of the solution
    are found exactly in O(n) and pooled at once (they are where merges otherwise cascade, one
    block per round). On the cumulative-sum diagram, the last block is the chord of least slope to
    the last point, i.e. it starts at `argmin_k value(k..n)`, and the first block ends at
    `argmax_j value(1..j)` (KL: value = `log Σ e^s − log Σ e^w`, the same argument on the
    weighted diagram). Every prefix of these blocks has a value on the right side of the block's
    value, which is the property PAV's merges keep, so starting from them is exact."""
    b, n = s.shape
    if regularization == "l2":
        y = s - w
        count = torch.arange(1, n + 1, dtype=y.dtype, device=y.device)
        prefix = y.cumsum(1) / count
        suffix = y.flip(1).cumsum(1).flip(1) / count.flip(0)
    else:
        prefix = s.logcumsumexp(1) - w.logcumsumexp(1)
        suffix = s.flip(1).logcumsumexp(1).flip(1) - w.flip(1).logcumsumexp(1).flip(1)
    first_end = prefix.argmax(1, keepdim=True)          # the first block is [0, first_end]
    last_start = suffix.argmin(1, keepdim=True)         # the last block is [last_start, n)
    pos = torch.arange(n, device=s.device).expand(b, n)
    start = (pos > first_end) & (pos <= last_start)
    start[:, 0] = True
    return start


def _blocks_torch(s, w, regularization, count_rounds=False):
    """Where the blocks of the isotonic solution start (bool, (B, n)), by parallel PAV rounds (see
    `_isotonic_torch`); with `count_rounds`, the number of rounds instead."""
    w = w.expand_as(s)
    rounds = 0
    with torch.no_grad():
        sd, wd = s.detach().double(), w.detach().double().contiguous()
        start = _outer_blocks(sd, wd, regularization)
        while True:
            rounds += 1
            v = _block_values_nograd(sd, wd, start, regularization)
            violate = start[:, 1:] & (v[:, :-1] < v[:, 1:])
            if not bool(violate.any()):
                break
            start[:, 1:] &= ~violate
    return rounds if count_rounds else start


_REG = {"l2": 0, "kl": 1}


def _isotonic(s, w, regularization, *, count_rounds=False):
    """Decreasing isotonic regression of each row of `s` (B, n) against `w` (B, n) or (n,):
    the fused operator where it applies, else `_isotonic_torch` (see there)."""
    if count_rounds:
        return _blocks_torch(s, w, regularization, count_rounds=True)
    if _ops.use_kernels(s) and w.dtype == s.dtype and w.device == s.device:
        return torch.ops.quasigrad.isotonic(s, w, _REG[regularization])[0]
    return _isotonic_torch(s, w, regularization)


def _isotonic_torch(s, w, regularization):
    r"""Decreasing isotonic regression of each row of `s` (B, n) against `w` (B, n) or (n,):

    $$
    l2:\ \arg\min_{v_1 \ge \dots \ge v_n} \tfrac12 \|v - (s - w)\|^2, \qquad
    KL:\ \arg\min_{v_1 \ge \dots \ge v_n} \langle e^{s - v}, 1\rangle + \langle e^w, v\rangle.
    $$

    Pool adjacent violators, in parallel: every round computes the block values of every row at
    once and merges, in every row, every run of adjacent blocks that violates the order (adjacent
    violators always belong to one block of the solution, so merging them all at once is as exact
    as merging them one by one). Each round costs O(n) per row and removes at least one boundary;
    the number of rounds is data dependent and at most n, because a merged block can absorb one
    neighbour per round (a cascade). Cascades happen mostly at the two ends of a row, so the first
    and the last block are computed exactly beforehand (`_outer_blocks`, O(n)); with that,
    Gaussian rows of n = 1000 take 1–8 rounds for l2 and KL from ε = 0.01 to 100 (without it, up
    to ~50). `sort-speed` reports the rounds of soft rank (of this implementation; the kernel's
    sequential PAV has no rounds).

    The blocks are found without gradient; the returned solution is recomputed on them
    differentiably, so the backward pass is the exact Jacobian (piecewise constant partition),
    O(n) per row.
    """
    w = w.expand_as(s)
    return _block_values(s, w, _segments(_blocks_torch(s, w, regularization)), regularization)


# --------------------------------------------------------------------------------------------
# The operators: quasigrad::isotonic(s, w, reg) -> (v, starts) and its backward


_lib = torch.library.Library("quasigrad", "FRAGMENT")
_lib.define("isotonic(Tensor s, Tensor w, int reg) -> (Tensor, Tensor)")
_lib.define("isotonic_backward(Tensor grad, Tensor s, Tensor w, Tensor starts, int reg, bool need_s, bool need_w) "
            "-> (Tensor, Tensor)")
_NAMES = {0: "l2", 1: "kl"}


def _iso_impl(s, w, reg):
    if _native.usable(s) and w.dtype == s.dtype:
        return _native.isotonic(s, w, reg)
    shape = torch.broadcast_shapes(s.shape, w.shape)
    start = _blocks_torch(s.expand(shape), w.expand(shape), _NAMES[reg])
    v = _block_values(s.expand(shape), w.expand(shape), _segments(start), _NAMES[reg])
    return v, start.to(torch.uint8)


def _vjp_torch(grad, s, w, starts, reg, need_s, need_w):
    """The isotonic solution's vector-Jacobian product on the blocks `starts` by differentiable
    PyTorch operators (so that it has a gradient itself): with `G` the block sums of `grad`,
    l2: `±G/|B|`; KL: `G softmax_B(s)` and `−G softmax_B(w)`."""
    shape = starts.shape
    seg = _segments(starts.bool())
    flat = grad.reshape(-1)
    block_sum = torch.zeros_like(flat).index_add(0, seg, flat).gather(0, seg).reshape(shape)
    if reg == 0:
        counts = torch.zeros_like(flat).index_add(0, seg, torch.ones_like(flat)).gather(0, seg).reshape(shape)
        mean = block_sum / counts
        return (mean if need_s else None), (-mean if need_w else None)

    def softmax(y):
        y = y.expand(shape)
        return torch.exp(y - _segment_logsumexp(y, seg))

    return (block_sum * softmax(s) if need_s else None), (-block_sum * softmax(w) if need_w else None)


def _iso_backward_impl(grad, s, w, starts, reg, need_s, need_w):
    if _native.usable(s) and w.dtype == s.dtype:
        gs, gw = _native.isotonic_backward(grad, s, w, starts, reg, need_s, need_w)
    else:
        gs, gw = _vjp_torch(grad, s, w, starts, reg, need_s, need_w)
    empty = grad.new_empty(0)
    return (empty if gs is None else gs), (empty if gw is None else gw)


_lib.impl("isotonic", _iso_impl, "CompositeExplicitAutograd")
_lib.impl("isotonic_backward", _iso_backward_impl, "CompositeExplicitAutograd")


@torch.library.register_fake("quasigrad::isotonic", lib=_lib)
def _(s, w, reg):
    shape = torch.broadcast_shapes(s.shape, w.shape)
    return s.new_empty(shape), s.new_empty(shape, dtype=torch.uint8)


@torch.library.register_fake("quasigrad::isotonic_backward", lib=_lib)
def _(grad, s, w, starts, reg, need_s, need_w):
    return (grad.new_empty(starts.shape) if need_s else grad.new_empty(0),
            grad.new_empty(starts.shape) if need_w else grad.new_empty(0))


def _iso_setup(ctx, inputs, output):
    s, w, reg = inputs
    ctx.reg = reg
    ctx.save_for_backward(s, w, output[1])


def _iso_grad(ctx, grad, _starts):
    s, w, starts = ctx.saved_tensors
    need_s, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if torch.is_grad_enabled():   # create_graph: a backward pass that is differentiable itself
        gs, gw = _vjp_torch(grad, s, w, starts, ctx.reg, need_s, need_w)
    else:
        gs, gw = torch.ops.quasigrad.isotonic_backward(grad, s, w, starts, ctx.reg, need_s, need_w)
    return (gs.sum_to_size(s.shape) if need_s else None), (gw.sum_to_size(w.shape) if need_w else None), None


torch.library.register_autograd("quasigrad::isotonic", _iso_grad, setup_context=_iso_setup, lib=_lib)


# --------------------------------------------------------------------------------------------
# Fast soft sort and rank (Blondel et al. 2020)


# --------------------------------------------------------------------------------------------
# Soft rank and sort of (B, n) rows: one fused kernel call on the CPU, the pieces elsewhere


_TARGETS: dict = {}


def _target_row(n, kind, like):
    """`ρ = (n, …, 1)` (`kind` "l2"), `log ρ` ("kl") or `ρ/ε` (a number), one row; a few recent
    ones are kept (they are never written to)."""
    key = (n, kind, like.dtype, like.device)
    row = _TARGETS.get(key)
    if row is None:
        row = torch.arange(n, 0, -1, dtype=like.dtype, device=like.device)
        row = torch.log(row) if kind == "kl" else row if kind == "l2" else row / kind
        if len(_TARGETS) >= 16:
            _TARGETS.clear()
        _TARGETS[key] = row
    return row


def _rank_targets(n, regularization, like):
    """`ρ = (n, …, 1)` (l2) or `log ρ` (KL), one row."""
    return _target_row(n, regularization, like)


def _soft_rank_on_blocks(z, perm, starts, regularization):
    """The soft rank of rows `z` given their sort and the blocks, by differentiable PyTorch
    operators (the fused kernel's double backward)."""
    s = z.gather(-1, perm)
    w = _rank_targets(z.shape[-1], regularization, z).expand_as(s)
    v = _block_values(s, w, _segments(starts.bool()), regularization)
    sol = s - v if regularization == "l2" else torch.exp(s - v)
    return torch.empty_like(sol).scatter(-1, perm, sol)


def _soft_sort_on_blocks(y, perm, starts, eps, regularization):
    """The descending soft sort of rows `y` given their sort and the blocks (as above)."""
    w = y.gather(-1, perm)
    z = (torch.arange(y.shape[-1], 0, -1, dtype=y.dtype, device=y.device) / eps).expand_as(w)
    return z - _block_values(z, w, _segments(starts.bool()), regularization)


class _SoftRank(torch.autograd.Function):
    """The soft rank of rows `x` with `z = scale·x` (`scale = ±1/ε`): sort, then one kernel
    call for the isotonic regression and the scatter back; the backward pass is one kernel call
    too (the scale folded in). Its own backward is differentiable (on the blocks of the forward
    pass) when a double backward asks for it."""

    @staticmethod
    def forward(ctx, x, scale, regularization):
        reg = _REG[regularization]
        s, perm = (x * scale).sort(dim=-1, descending=True)
        out, starts = _native.isotonic(s, _rank_targets(x.shape[-1], regularization, s), reg, perm=perm)
        ctx.args = (scale, regularization)
        ctx.save_for_backward(x, s, perm, starts, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, s, perm, starts, out = ctx.saved_tensors
        scale, regularization = ctx.args
        if torch.is_grad_enabled():
            with torch.enable_grad():
                ref = _soft_rank_on_blocks(x * scale, perm, starts, regularization)
            return torch.autograd.grad(ref, x, grad, create_graph=True)[0], None, None
        reg = _REG[regularization]
        return _native.soft_backward(grad, s, out if reg else None, perm, starts, reg, sort=False, scale=scale), None, None


class _SoftSort(torch.autograd.Function):
    """`sign` times the descending soft sort of rows `sign·x`: sort, then one kernel call;
    backward one kernel call (see `_SoftRank`)."""

    @staticmethod
    def forward(ctx, x, sign, eps, regularization):
        y = x if sign == 1.0 else -x
        w, perm = y.sort(dim=-1, descending=True)
        out, starts = _native.isotonic(_target_row(x.shape[-1], float(eps), x), w, _REG[regularization], sign=sign)
        ctx.args = (sign, eps, regularization)
        ctx.save_for_backward(x, w, perm, starts)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, w, perm, starts = ctx.saved_tensors
        sign, eps, regularization = ctx.args
        if torch.is_grad_enabled():
            with torch.enable_grad():
                ref = sign * _soft_sort_on_blocks(x * sign, perm, starts, eps, regularization)
            return torch.autograd.grad(ref, x, grad, create_graph=True)[0], None, None, None
        # d out / d w = sign·share, and d y / d x = sign: the signs cancel
        return (_native.soft_backward(grad, w, None, perm, starts, _REG[regularization], sort=True, scale=1.0),
                None, None, None)


def _fused_rows(x):
    return _ops.use_kernels(x) and not _ops.dynamo_compiling() and x.dim() == 2 and x.shape[-1] > 0


def _soft_rank_rows(x, scale, regularization):
    """The soft rank of each row of `z = scale·x` (B, n) (`scale = ±1/ε`)."""
    if _fused_rows(x):
        return _SoftRank.apply(x, scale, regularization)
    s, perm = (x * scale).sort(dim=-1, descending=True)
    w = _rank_targets(x.shape[-1], regularization, s)
    v = _isotonic(s, w, regularization)
    sol = s - v if regularization == "l2" else torch.exp(s - v)
    return torch.empty_like(sol).scatter(-1, perm, sol)


def _soft_sort_rows(x, sign, eps, regularization):
    """`sign` times the descending soft sort of each row of `sign·x` (B, n)."""
    if _fused_rows(x):
        return _SoftSort.apply(x, sign, eps, regularization)
    w, _ = (sign * x).sort(dim=-1, descending=True)
    n = w.shape[-1]
    z = torch.arange(n, 0, -1, dtype=w.dtype, device=w.device) / eps
    return sign * (z - _isotonic(z.expand_as(w), w, regularization))


def soft_rank(values: torch.Tensor, regularization: str = "l2", regularization_strength: float = 1.0, *,
              descending: bool = False, dim: int = -1, relative: bool = False) -> torch.Tensor:
    r"""Soft ranks of `values` along `dim` (Blondel et al. 2020), ranks in `[1, n]`.

    Ascending ranks (the default, as `torchsort.soft_rank`) give rank `n` to the largest
    value; `descending=True` gives it rank 1. With `ρ = (n, n−1, …, 1)` and `z = ±θ/ε`:

    $$
    r_{εQ}(θ) = P_Q(z, ρ) = z - v_Q(z_σ, ρ)_{σ^{-1}}, \qquad
    r_{εE}(θ) = \exp P_E(z, \log ρ),
    $$

    the Euclidean (l2) or KL projection of `z` onto the permutahedron of `ρ`, computed by
    one sort (`σ` sorts `z` descending) and one isotonic regression `v` (pool adjacent
    violators). As `ε → 0` the result is the hard rank; as `ε → ∞` every rank tends to
    `(n+1)/2` (l2).

    The first three arguments may be given by position, in the order of `torchsort.soft_rank`;
    the others are keyword-only.

    Args:
        values: floating tensor, any shape; ranked along `dim`.
        regularization: `"l2"` (ranks piecewise linear in θ) or `"kl"`.
        regularization_strength: ε > 0; smaller is closer to the hard ranks.
        descending: rank 1 for the largest value instead of the smallest.
        dim: the dimension to rank along.
        relative: ε is in units of each row's standard deviation (detached; the values are
            standardised first), so that ranks of `a + c·θ` equal ranks of `θ` for `c > 0`.

    Returns:
        Tensor shaped like `values`. Differentiable: the backward pass is the exact Jacobian,
        O(n) per row (block averages of the isotonic solution).

    Example:
        >>> soft_rank(torch.tensor([5., 1., 2.]), regularization_strength=2.0)
        tensor([3.0000, 1.2500, 1.7500])
    """
    _check_regularization(regularization)
    eps = V.check_positive(regularization_strength, "regularization_strength")
    x, restore, _ = _rows(values, dim)
    if relative:
        x = _standardize(x)[0]
    return restore(_soft_rank_rows(x, (-1.0 if descending else 1.0) / eps, regularization))


def soft_sort(values: torch.Tensor, regularization: str = "l2", regularization_strength: float = 1.0, *,
              descending: bool = False, dim: int = -1, relative: bool = False) -> torch.Tensor:
    r"""Soft sort of `values` along `dim` (Blondel et al. 2020).

    Descending: with `ρ = (n, …, 1)` and `w = sort(θ)` descending,

    $$
    s_{εQ}(θ) = P_Q(ρ/ε, θ) = ρ/ε - v_Q(ρ/ε, w), \qquad s_{εE}(θ) = ρ/ε - v_E(ρ/ε, w),
    $$

    the projection of `ρ/ε` onto the permutahedron of θ (for KL in the log-space form of the
    paper, so no sign restriction on θ). Ascending (the default, as `torchsort`) is
    `−soft_sort(−θ, descending=True)`. `ε → 0` gives `torch.sort`; large ε pools every value
    to the mean (l2; the l2 output keeps the row's sum, the KL output does not).

    The first three arguments may be given by position, in the order of `torchsort.soft_sort`;
    the others are keyword-only.

    Args:
        values: floating tensor, any shape; sorted along `dim`.
        regularization: `"l2"` or `"kl"`.
        regularization_strength: ε > 0.
        descending: sort from largest to smallest.
        dim: the dimension to sort along.
        relative: the values are standardised per row (mean and standard deviation, detached)
            before the soft sort and mapped back after, so that
            `soft_sort(a + c·θ) = a + c·soft_sort(θ)` for `c > 0`.

    Returns:
        The soft-sorted values, shaped like `values`, in their dtype.

    Note:
        The reference NumPy code of the paper computes `arange(n)[::-1] + 1/ε` where the paper
        writes `ρ/ε`; the two agree at ε = 1 and here the paper's `ρ/ε` is used.

    Example:
        >>> soft_sort(torch.tensor([5., 1., 2.]), regularization_strength=1.0)
        tensor([1.6667, 2.6667, 3.6667])
    """
    _check_regularization(regularization)
    eps = V.check_positive(regularization_strength, "regularization_strength")
    x, restore, _ = _rows(values, dim)
    if relative:
        x, centre, scale = _standardize(x)
    sign = 1.0 if descending else -1.0
    out = _soft_sort_rows(x, sign, eps, regularization)
    if relative:
        out = out * scale + centre
    return restore(out)
