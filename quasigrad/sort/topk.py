"""Top-k: Gumbel-top-k draws without replacement with Plackett–Luce log-probabilities of the
ordered sample and of the unordered set, and the relaxed k-hot mask."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._util import validate as V
from ..estimators._sampling import compute_dtype, gumbel, is_compiling
from ._common import _rows, _spread

#: Largest k for which the unordered-set log-probability is computed (memory grows as k·2^k per row).
MAX_SET_K = 16


# --------------------------------------------------------------------------------------------
# Top-k


class GumbelTopK(NamedTuple):
    """Result of `gumbel_topk`."""

    indices: torch.Tensor          #: the k items in the order drawn, shaped like logits with k along dim
    log_prob: torch.Tensor         #: Plackett–Luce log-probability of that ordered sample (batch shape)
    set_log_prob: Optional[torch.Tensor]  #: log-probability of the unordered set, if asked


def _check_k(k, n):
    k = V.check_int(k, "k")
    if k > n:
        raise ValueError(f"k={k} is larger than the number of items n={n} along dim")
    return k


def gumbel_topk(logits: torch.Tensor, k: int, *, dim: int = -1, set_log_prob: bool = False,
                generator: Optional[torch.Generator] = None) -> GumbelTopK:
    r"""Draw k items without replacement from `softmax(logits)` by the Gumbel-top-k trick.

    The indices of the k largest of `θ + G` (`G` i.i.d. Gumbel), in decreasing order, are a
    sample of the first k draws of a Plackett–Luce distribution with weights `e^θ` (i.e. of
    sampling without replacement) (Kool et al. 2019).

    Args:
        logits: floating logits θ; items along `dim`.
        k: how many items to draw, at most the number of items along `dim`.
        dim: the item dimension.
        set_log_prob: also compute the log-probability of the unordered set (k ≤ `MAX_SET_K`).
        generator: optional `torch.Generator` for the Gumbel noise.

    Returns:
        `GumbelTopK` `(indices, log_prob, set_log_prob)`: the ordered sample, its
        Plackett–Luce log-probability, and (`set_log_prob=True`, k ≤ `MAX_SET_K`) the exact
        log-probability of the unordered set, as used by the unordered set estimator (Kool et al.
        2020). Both log-probabilities are differentiable in `logits` (for score-function
        estimators); the indices are not.
    """
    V.check_floating(logits, "logits")
    dim = V.category_dim(logits, dim)
    V.check_generator(generator, logits.device)
    k = _check_k(k, logits.shape[dim])
    with torch.no_grad():
        perturbed = logits.detach().to(compute_dtype(logits.dtype))
        perturbed = perturbed + gumbel(perturbed.shape, dtype=perturbed.dtype, device=perturbed.device,
                                       generator=generator)  # ~ Gumbel(θ, 1)
        indices = perturbed.topk(k, dim=dim).indices
    log_prob = plackett_luce_log_prob(logits, indices, dim=dim)
    set_lp = plackett_luce_log_prob(logits, indices, dim=dim, ordered=False) if set_log_prob else None
    return GumbelTopK(indices, log_prob, set_lp)


def plackett_luce_log_prob(logits: torch.Tensor, indices: torch.Tensor, *, dim: int = -1,
                           ordered: bool = True) -> torch.Tensor:
    r"""Plackett–Luce log-probability of drawing `indices` first (without replacement).

    Ordered: with `θ` the logits and `i_1..i_k` the indices,

    $$
    \log p(i_1, …, i_k) = \sum_{j=1}^k \Big[θ_{i_j} - \log\big(\textstyle\sum_{m \notin \{i_1..i_{j-1}\}} e^{θ_m}\big)\Big].
    $$

    Unordered (`ordered=False`): `log p({i_1..i_k}) = log Σ_orderings p(ordering)`, computed
    exactly by dynamic programming over the subsets of the sample (`p(T) = Σ_{i∈T} p(T∖i)
    e^{θ_i} / R(T∖i)` with `R` the mass not yet drawn): O(k·2^k) time and memory per row,
    instead of the k! orderings. Limited to k ≤ `MAX_SET_K` (16); larger k raises.

    Args:
        logits: floating tensor; items along `dim`.
        indices: integer tensor shaped like `logits` with k ≤ n along `dim`, distinct per row.
        ordered: the ordered sample's probability (default) or the unordered set's.

    Returns:
        Log-probabilities, shape `logits.shape` without `dim`; differentiable in `logits`.
    """
    V.check_floating(logits, "logits")
    dim = V.category_dim(logits, dim)
    if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got {getattr(indices, 'dtype', type(indices).__name__)}")
    if indices.dim() != logits.dim() or any(a != b for i, (a, b) in enumerate(zip(indices.shape, logits.shape))
                                            if i != dim):
        raise ValueError(f"indices must be shaped like logits {tuple(logits.shape)} except along dim {dim}, "
                         f"got {tuple(indices.shape)}")
    n, k = logits.shape[dim], indices.shape[dim]
    if k == 0:
        raise ValueError(f"indices has size 0 along dim {dim} (shape {tuple(indices.shape)}); "
                         f"it needs at least one drawn item per row")
    k = _check_k(k, n)
    theta = logits.movedim(dim, -1)
    batch = theta.shape[:-1]
    theta = theta.reshape(-1, n).to(compute_dtype(logits.dtype))
    idx = indices.movedim(dim, -1).reshape(-1, k).long()
    if not is_compiling():
        if bool(torch.isnan(theta).any() | torch.isposinf(theta).any() | torch.isneginf(theta).all(-1).any()):
            V.describe_bad_logits(logits, dim)       # -inf masks an item; NaN, +inf, all masked: no weights
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ValueError(f"indices must be in [0, {n - 1}], got values in [{int(idx.min())}, {int(idx.max())}]")
        if k > 1 and bool((idx.sort(-1).values.diff(dim=-1) == 0).any()):
            raise ValueError("indices must be distinct within each row (a sample without replacement)")
        if not bool(torch.isfinite(theta.gather(-1, idx)).all()):
            raise ValueError("indices select an item whose logit is not finite (probability 0 or invalid)")
    chosen = theta.gather(-1, idx)                                                   # (B, k)
    taken = torch.zeros_like(theta, dtype=torch.bool).scatter(-1, idx, True)
    log_out = torch.logsumexp(theta.masked_fill(taken, -torch.inf), dim=-1)          # mass never drawn
    if ordered:
        remaining = torch.logcumsumexp(chosen.flip(-1), dim=-1).flip(-1)             # Σ_{m ≥ j} e^{θ_{i_m}}
        out = (chosen - torch.logaddexp(log_out.unsqueeze(-1), remaining)).sum(-1)
    else:
        if k > MAX_SET_K:
            raise ValueError(f"the unordered-set log-probability is computed exactly for k <= {MAX_SET_K} "
                             f"(cost k·2^k per row), got k={k}")
        out = _set_log_prob(chosen, log_out)
    return out.reshape(batch).to(logits.dtype)


def _set_log_prob(chosen, log_out):
    """log Σ over the k! orderings of the PL probability, by DP over the 2^k subsets."""
    b, k = chosen.shape
    masks = torch.arange(2 ** k, device=chosen.device)
    bits = (masks.unsqueeze(-1) >> torch.arange(k, device=chosen.device)) & 1        # (2^k, k)
    drawn = bits.bool()
    # log R(T): mass still available after the items of T are drawn.
    rest = torch.logsumexp(chosen.unsqueeze(-2).masked_fill(drawn, -torch.inf), dim=-1)   # (B, 2^k)
    log_r = torch.logaddexp(log_out.unsqueeze(-1), rest)
    popcount = bits.sum(-1)
    f = torch.full((b, 2 ** k), -torch.inf, dtype=chosen.dtype, device=chosen.device)
    f = f.index_copy(1, torch.zeros(1, dtype=torch.long, device=chosen.device),
                     torch.zeros(b, 1, dtype=chosen.dtype, device=chosen.device))
    for level in range(1, k + 1):
        level_masks = masks[popcount == level]                                       # (C,)
        has = drawn[level_masks]                                                     # (C, k)
        sub = level_masks.unsqueeze(-1) ^ (1 << torch.arange(k, device=chosen.device))  # T ∖ i
        terms = f[:, sub] + chosen.unsqueeze(-2) - log_r[:, sub]                     # (B, C, k)
        terms = terms.masked_fill(~has, -torch.inf)
        f = f.index_copy(1, level_masks, torch.logsumexp(terms, dim=-1))
    return f[:, -1]


def relaxed_topk(logits: torch.Tensor, k: int, *, tau: float = 1.0, hard: bool = False, stochastic: bool = False,
                 dim: int = -1, relative: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Relaxed k-hot mask of the k largest `logits` (successive softmax, Xie & Ermon 2019).

    $$
    α^{(1)} = \mathrm{softmax}(s/τ),\quad s^{(j+1)} = s^{(j)} + \log(1 - α^{(j)}),\quad
    \mathrm{mask} = \textstyle\sum_{j=1}^k α^{(j)}
    $$

    with `s = logits` (plus Gumbel noise if `stochastic`: a relaxed sample of k items without
    replacement). The mask is non-negative and sums to k; at large τ an entry can exceed 1 (as in
    the original method); `τ → 0` gives the exact top-k mask.
    `hard=True` returns the exact k-hot mask of `s` with the relaxation's gradient
    (straight-through). `relative`: τ in units of each row's standard deviation.

    Args:
        logits: floating scores; items along `dim`.
        k: the size of the mask, at most the number of items along `dim`.
        tau: the temperature τ, > 0.
        hard: return the exact k-hot mask with the relaxation's gradient (straight-through).
        stochastic: add Gumbel noise to the scores (a relaxed sample without replacement).
        dim: the item dimension.
        relative: measure τ in units of each row's standard deviation.
        generator: optional `torch.Generator` for the noise.

    Returns:
        The relaxed (or, with `hard=True`, exact) k-hot mask, shaped like `logits`.

    Raises:
        ValueError: `k` is larger than the number of items.
    """
    tau = V.check_positive(tau, "tau")
    V.check_floating(logits, "logits")
    V.check_generator(generator, logits.device)
    s, restore, _ = _rows(logits, dim, "logits")
    k = _check_k(k, s.shape[-1])
    if stochastic:
        s = s + gumbel(s.shape, dtype=s.dtype, device=s.device, generator=generator)  # ~ Gumbel(θ, 1)
    tau_eff = tau * _spread(s) if relative else tau
    tiny = torch.finfo(s.dtype).tiny
    scores, mask = s, torch.zeros_like(s)
    for _ in range(k):
        # shifted by the row max (detached): scores beyond τ times the float range give the limit
        alpha = torch.softmax((scores - scores.detach().amax(-1, keepdim=True)) / tau_eff, dim=-1)
        mask = mask + alpha
        scores = scores + torch.log((1 - alpha).clamp_min(tiny))
    if hard:
        top = s.detach().topk(k, dim=-1).indices
        k_hot = torch.zeros_like(mask).scatter(-1, top, 1.0)
        mask = k_hot - mask.detach() + mask  # Straight through.
    return restore(mask)
