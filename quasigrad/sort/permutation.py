"""Relaxed permutation matrices: NeuralSort (Grover et al. 2019) and SoftSort (Prillo &
Eisenschlos 2020), with straight-through hard permutations and Gumbel perturbation."""

from __future__ import annotations

from typing import Optional

import torch

from .._util import validate as V
from ..estimators._sampling import gumbel
from ._common import _rows, _spread

# --------------------------------------------------------------------------------------------
# Relaxed permutation matrices


def _scores(scores, dim, tau, stochastic, generator, relative, descending):
    """Checked scores as (B, n) rows in the compute dtype, descending, and the temperature.

    Both relaxations are `softmax(L(s)/τ)` with `L` positively homogeneous of degree one in
    `s` (`L(s/r) = L(s)/r`), so each row is divided by `r ≥ 1` (detached) and `τ` with it:
    `r = 1` unless the row's values are large enough for `L` to overflow (`|L| ≤ 3n max|s|`)."""
    tau = V.check_positive(tau, "tau")
    V.check_floating(scores, "scores")
    V.check_generator(generator, scores.device)
    s, _, batch = _rows(scores, dim, "scores")
    if stochastic:
        s = s + gumbel(s.shape, dtype=s.dtype, device=s.device, generator=generator)  # ~ Plackett–Luce
    if not descending:
        s = -s
    tau_eff = tau * _spread(s) if relative else torch.full((s.shape[0], 1), tau, dtype=s.dtype, device=s.device)
    n, big = s.shape[-1], torch.finfo(s.dtype).max
    r = (s.detach().abs().amax(-1, keepdim=True) * (8.0 * n / big)).clamp_min(1.0)
    tiny = torch.finfo(s.dtype).tiny
    return s / r, (tau_eff / r).clamp_min(tiny), batch


def _tempered_softmax(logits, tau):
    """`softmax(logits/τ)` along the last dim, shifted by the row max (detached) before the
    division so that logits beyond `τ` times the float range give the limit, not NaN."""
    return torch.softmax((logits - logits.detach().amax(-1, keepdim=True)) / tau, dim=-1)


def _finish(p_soft, s, hard, batch, dtype):
    """Straight-through to the exact permutation matrix of `s` (descending) if `hard`."""
    if hard:
        order = s.detach().argsort(dim=-1, descending=True)
        p_hard = torch.nn.functional.one_hot(order, s.shape[-1]).to(p_soft.dtype)
        p_soft = p_hard - p_soft.detach() + p_soft  # Straight through.
    n = s.shape[-1]
    return p_soft.reshape(tuple(batch) + (n, n)).to(dtype)


def neural_sort(scores: torch.Tensor, *, tau: float = 1.0, descending: bool = False, hard: bool = False,
                stochastic: bool = False, dim: int = -1, relative: bool = False,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""NeuralSort relaxed permutation matrix (Grover et al. 2019).

    For scores `s` (sorted descending here; ascending uses `−s`), `A_{jk} = |s_j − s_k|`:

    $$
    \hat P[i, :] = \mathrm{softmax}\big(((n + 1 - 2i)\, s - A \mathbf 1) / τ\big), \quad i = 1..n.
    $$

    Each row sums to one and its argmax is the index of the i-th value of the sort, so
    `P̂ @ s → sort(s)` as `τ → 0`. O(n²) time and memory per row.

    Args:
        scores: floating tensor, any shape; the permutation is along `dim`.
        tau: temperature τ > 0.
        descending: row i picks the i-th largest (else the i-th smallest).
        hard: forward value is the exact permutation matrix of the (perturbed) scores, gradient of
            the relaxation (straight-through).
        stochastic: add Gumbel noise to `scores` (read as log-weights of a Plackett–Luce
            distribution), so the hard permutation is an exact Plackett–Luce sample.
        dim: dimension holding the n items.
        relative: τ in units of each row's standard deviation (detached).
        generator: for the Gumbel noise.

    Returns:
        `P̂` of shape `batch + (n, n)` where `batch` is `scores.shape` without `dim`;
        `P̂[..., i, j]` is the weight of item `j` in position `i`.
    """
    s, tau_eff, batch = _scores(scores, dim, tau, stochastic, generator, relative, descending)
    n = s.shape[-1]
    pairwise = (s.unsqueeze(-1) - s.unsqueeze(-2)).abs().sum(-1)                # A 1, (B, n)
    scaling = (n + 1 - 2 * torch.arange(1, n + 1, dtype=s.dtype, device=s.device))  # (n,)
    logits = scaling.view(1, n, 1) * s.unsqueeze(-2) - pairwise.unsqueeze(-2)     # (B, n, n)
    p = _tempered_softmax(logits, tau_eff.unsqueeze(-1))
    return _finish(p, s, hard, batch, scores.dtype)


def soft_sort_permutation(scores: torch.Tensor, *, tau: float = 1.0, descending: bool = False,
                          hard: bool = False, stochastic: bool = False, dim: int = -1, relative: bool = False,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""SoftSort relaxed permutation matrix (Prillo & Eisenschlos 2020):

    $$
    \hat P = \mathrm{softmax}\big(-|\mathrm{sort}(s)\,\mathbf 1^\top - \mathbf 1\, s^\top| / τ\big)
    $$

    (row-wise softmax). Row i is centred on the item whose score is the i-th of the sort, so its
    argmax is that item and `τ → 0` gives the hard permutation matrix. Arguments and result
    as `neural_sort`.

    Args:
        scores: floating tensor, any shape; the permutation is along `dim`.
        tau: temperature τ > 0.
        descending: row i picks the i-th largest (else the i-th smallest).
        hard: forward value is the exact permutation matrix of the (perturbed) scores, gradient of
            the relaxation (straight-through).
        stochastic: add Gumbel noise to `scores` (read as log-weights of a Plackett–Luce
            distribution), so the hard permutation is an exact Plackett–Luce sample.
        dim: dimension holding the n items.
        relative: τ in units of each row's standard deviation (detached).
        generator: for the Gumbel noise.

    Returns:
        `P̂` of shape `batch + (n, n)` where `batch` is `scores.shape` without `dim`;
        `P̂[..., i, j]` is the weight of item `j` in position `i`.
    """
    s, tau_eff, batch = _scores(scores, dim, tau, stochastic, generator, relative, descending)
    s_sorted, _ = s.sort(dim=-1, descending=True)
    logits = -(s_sorted.unsqueeze(-1) - s.unsqueeze(-2)).abs()
    p = _tempered_softmax(logits, tau_eff.unsqueeze(-1))
    return _finish(p, s, hard, batch, scores.dtype)
