"""Tests of quasigrad.sort against published reference values, exact oracles (brute-force
isotonic regression, enumeration of Plackett–Luce orderings) and hard limits."""

import itertools

import numpy as np
import pytest
import torch

from quasigrad import sort as qs
from quasigrad.sort import (
    gumbel_topk,
    neural_sort,
    plackett_luce_log_prob,
    relaxed_topk,
    soft_rank,
    soft_sort,
    soft_sort_permutation,
)

D = torch.float64


def t(values, dtype=D):
    return torch.tensor(values, dtype=dtype)


# ------------------------------------------------------------------------------------------
# Reference values of Blondel et al. (README of google-research/fast-soft-sort)


def test_soft_sort_reference_value():
    out = soft_sort(t([5.0, 1.0, 2.0]), regularization_strength=1.0)
    torch.testing.assert_close(out, t([5 / 3, 8 / 3, 11 / 3]))
    assert torch.allclose(out, t([1.667, 2.667, 3.667]), atol=5e-4)
    torch.testing.assert_close(soft_sort(t([5.0, 1.0, 2.0]), regularization_strength=1.0, descending=True),
                               t([11 / 3, 8 / 3, 5 / 3]))
    # ε = 0.1: the hard sort (README).
    torch.testing.assert_close(soft_sort(t([[5.0, 1.0, 2.0], [2.0, 1.0, 5.0]]), regularization_strength=0.1),
                               t([[1.0, 2.0, 5.0], [1.0, 2.0, 5.0]]))


def test_soft_rank_reference_values():
    torch.testing.assert_close(soft_rank(t([5.0, 1.0, 2.0]), regularization_strength=2.0), t([3.0, 1.25, 1.75]))
    torch.testing.assert_close(soft_rank(t([[5.0, 1.0, 2.0], [2.0, 1.0, 5.0]]), regularization_strength=1.0),
                               t([[3.0, 1.0, 2.0], [2.0, 1.0, 3.0]]))
    x = t([1.0, -2.0, 2.0, 3.0, 0.5, -1.0])
    torch.testing.assert_close(soft_rank(x, regularization_strength=1.0), t([3.875, 1, 4.875, 5.875, 3.375, 2]))
    r10 = soft_rank(x, regularization_strength=10.0)
    assert torch.allclose(r10, t([3.5417, 3.2417, 3.6417, 3.7417, 3.4917, 3.3417]), atol=5e-5)
    # Descending ranks are n + 1 − ascending ranks (l2).
    torch.testing.assert_close(soft_rank(x, regularization_strength=10.0, descending=True), 7 - r10)


# ------------------------------------------------------------------------------------------
# Isotonic regression against a brute-force oracle


def _isotonic_oracle(y):
    """Decreasing l2 isotonic regression by the min-max formula v_i = min_{k≤i} max_{j≥i} mean(y_k..y_j)."""
    n = len(y)
    return np.array([min(max(np.mean(y[k:j + 1]) for j in range(i, n)) for k in range(i + 1)) for i in range(n)])


def test_isotonic_matches_min_max_formula():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 5, 9, 17):
        y = torch.randn(20, n, generator=gen, dtype=D) * torch.tensor([0.1, 1, 10] * 7, dtype=D)[:20, None]
        y = y + torch.linspace(-3, 3, n, dtype=D)        # trends that make long blocks
        got = qs.isotonic._isotonic(y, torch.zeros(n, dtype=D), "l2")
        want = np.stack([_isotonic_oracle(row.numpy()) for row in y])
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


def test_isotonic_kl_satisfies_kkt():
    """KL isotonic solution certified by the KKT conditions of the convex problem
    min Σ e^{s−v} + Σ e^w v s.t. v_1 ≥ … ≥ v_n: the prefix sums λ_i of the gradient
    e^w − e^{s−v} are the multipliers, so λ_i ≥ 0, λ_n = 0 and λ_i > 0 only where v_i = v_{i+1}."""
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(50, 8, generator=gen, dtype=D).sort(-1, descending=True).values * 0.5
    w = torch.log(torch.arange(8, 0, -1, dtype=D))
    v = qs.isotonic._isotonic(s, w, "kl")
    assert (v[:, :-1] >= v[:, 1:] - 1e-12).all()
    lam = (torch.exp(w) - torch.exp(s - v)).cumsum(-1)
    assert (lam >= -1e-9).all() and torch.allclose(lam[:, -1], torch.zeros(50, dtype=D), atol=1e-9)
    active = lam[:, :-1] > 1e-9
    assert torch.allclose(v[:, :-1][active], v[:, 1:][active], atol=1e-12)
    assert active.any() and (~active).any()      # the example has both pooled and free constraints


def _kkt_residuals(s, w, v, regularization):
    """Multipliers λ_t = Σ_{i≤t} ∂f/∂v_i of the decreasing isotonic problem, scaled per row to the
    size of the data (l2: max |s − w|; KL: both exponentials taken relative to the row's largest
    exponent, so every term is at most 1 and nothing overflows)."""
    if regularization == "l2":
        g = (v - (s - w)) / (s - w).abs().max(-1, keepdim=True).values.clamp_min(1.0)
    else:
        c = torch.maximum(w.max(-1, keepdim=True).values, (s - v).max(-1, keepdim=True).values)
        g = torch.exp(w - c) - torch.exp(s - v - c)
    return g.cumsum(-1)


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_isotonic_kkt_on_cascade_prone_rows(regularization):
    """The inputs soft rank and soft sort really pass (n = 300, ε from 0.01 to 100, where merges
    cascade), certified optimal by KKT: λ ≥ 0, λ_n = 0, λ_t > 0 only where v_t = v_{t+1}."""
    gen = torch.Generator().manual_seed(10)
    n = 300
    x = torch.randn(8, n, generator=gen, dtype=D)
    rho = torch.arange(n, 0, -1, dtype=D)
    cases = []
    for eps in (0.01, 1.0, 100.0):
        s = (x / eps).sort(-1, descending=True).values
        cases.append((s, (rho if regularization == "l2" else torch.log(rho)).expand_as(s)))     # soft rank
        cases.append(((rho / eps).expand_as(x), x.sort(-1, descending=True).values))           # soft sort
    for s, w in cases:
        v = qs.isotonic._isotonic(s, w, regularization)
        assert (v[:, :-1] >= v[:, 1:]).all()
        lam = _kkt_residuals(s, w, v, regularization)
        assert (lam >= -1e-9).all() and (lam[:, -1].abs() < 1e-9).all()
        active = lam[:, :-1] > 1e-9
        assert torch.equal(v[:, :-1][active], v[:, 1:][active])


# ------------------------------------------------------------------------------------------
# Limits, shapes, dtypes


@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize("descending", [False, True])
def test_small_epsilon_equals_hard_sort_and_rank(reg, descending):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 7, generator=gen, dtype=D)
    for dim in (0, 1, -1):
        want = x.sort(dim=dim, descending=descending).values
        got = soft_sort(x, regularization=reg, regularization_strength=1e-4, descending=descending, dim=dim)
        torch.testing.assert_close(got, want)
        order = x.argsort(dim=dim, descending=descending)
        ranks = torch.empty_like(x).scatter_(dim, order, torch.arange(1, x.shape[dim] + 1, dtype=D).view(
            [-1 if d == dim % 3 else 1 for d in range(3)]).expand_as(x))
        got_r = soft_rank(x, regularization=reg, regularization_strength=1e-4, descending=descending, dim=dim)
        torch.testing.assert_close(got_r, ranks)


def test_large_epsilon_pools_to_the_mean():
    x = torch.randn(3, 6, dtype=D)
    torch.testing.assert_close(soft_rank(x, regularization_strength=1e6), torch.full_like(x, 3.5), atol=1e-4,
                               rtol=0)
    torch.testing.assert_close(soft_sort(x, regularization_strength=1e6), x.mean(-1, keepdim=True).expand_as(x),
                               atol=1e-4, rtol=0)


def test_relative_strength_is_scale_free():
    x = torch.randn(5, 8, dtype=D)
    for a, c in ((0.0, 1e-3), (5.0, 1.0), (-1e3, 1e4)):
        torch.testing.assert_close(soft_rank(a + c * x, relative=True, regularization_strength=0.3),
                                   soft_rank(x, relative=True, regularization_strength=0.3))
        torch.testing.assert_close(soft_sort(a + c * x, relative=True, regularization_strength=0.3),
                                   a + c * soft_sort(x, relative=True, regularization_strength=0.3))
        torch.testing.assert_close(neural_sort(c * x, relative=True, tau=0.3), neural_sort(x, relative=True, tau=0.3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_dtypes(dtype):
    x = torch.randn(4, 10)
    for fn in (soft_sort, soft_rank):
        out = fn(x.to(dtype), regularization_strength=0.5)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), fn(x.double(), regularization_strength=0.5), atol=0.05, rtol=0.02)
    p = neural_sort(x.to(dtype), tau=0.5)
    assert p.dtype == dtype and p.shape == (4, 10, 10)


def test_ties_and_single_element():
    x = t([[2.0, 2.0, 2.0], [1.0, 1.0, 3.0]])
    torch.testing.assert_close(soft_rank(x, regularization_strength=1e-3), t([[2.0, 2.0, 2.0], [1.5, 1.5, 3.0]]))
    torch.testing.assert_close(soft_sort(t([4.0]), relative=True), t([4.0]))
    torch.testing.assert_close(soft_rank(t([4.0]), relative=True), t([1.0]))


# ------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_gradcheck_soft_sort_and_rank(reg):
    gen = torch.Generator().manual_seed(3)
    # Distinct values, away from the kinks where the block partition changes.
    x = (torch.randperm(12, generator=gen).to(D) * 0.37 + torch.rand(12, generator=gen, dtype=D) * 0.1)
    x = x.view(2, 6).requires_grad_()
    for eps in (0.3, 1.0, 5.0):
        for descending in (False, True):
            assert torch.autograd.gradcheck(lambda v: soft_sort(v, regularization=reg, regularization_strength=eps,
                                                                descending=descending, dim=0), (x,))
            assert torch.autograd.gradcheck(lambda v: soft_rank(v, regularization=reg, regularization_strength=eps,
                                                                descending=descending), (x,))
    # Second order too (the backward pass is built from differentiable segment operations).
    assert torch.autograd.gradgradcheck(lambda v: soft_rank(v, regularization=reg, regularization_strength=0.5), (x,))
    assert torch.autograd.gradgradcheck(lambda v: soft_sort(v, regularization=reg, regularization_strength=0.5), (x,))


def test_gradcheck_permutation_relaxations():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, generator=gen, dtype=D).requires_grad_()
    for fn in (neural_sort, soft_sort_permutation):
        assert torch.autograd.gradcheck(lambda v: fn(v, tau=0.7, descending=True), (x,))
    assert torch.autograd.gradcheck(lambda v: relaxed_topk(v, 2, tau=0.5), (x,))
    assert torch.autograd.gradcheck(lambda v: plackett_luce_log_prob(v, torch.tensor([[3, 1], [0, 4]])), (x,))
    assert torch.autograd.gradcheck(lambda v: plackett_luce_log_prob(v, torch.tensor([[3, 1], [0, 4]]),
                                                                     ordered=False), (x,))


# ------------------------------------------------------------------------------------------
# Relaxed permutation matrices


@pytest.mark.parametrize("fn", [neural_sort, soft_sort_permutation])
def test_permutation_matrix_properties_and_limit(fn):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 6, 2, generator=gen, dtype=D)
    for descending in (False, True):
        p = fn(x, tau=1.0, descending=descending, dim=1)
        assert p.shape == (3, 2, 6, 6)
        torch.testing.assert_close(p.sum(-1), torch.ones(3, 2, 6, dtype=D))
        perm = x.movedim(1, -1).argsort(-1, descending=descending)
        assert torch.equal(p.argmax(-1), perm)
        hard = torch.nn.functional.one_hot(perm, 6).to(D)
        torch.testing.assert_close(fn(x, tau=1e-4, descending=descending, dim=1), hard)
        sorted_x = (fn(x, tau=1e-4, descending=descending, dim=1) @ x.movedim(1, -1).unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(sorted_x, x.movedim(1, -1).sort(-1, descending=descending).values)


@pytest.mark.parametrize("fn", [neural_sort, soft_sort_permutation])
def test_hard_straight_through(fn):
    x = torch.randn(4, 5, dtype=D, requires_grad=True)
    p = fn(x, tau=2.0, hard=True)
    perm = x.argsort(-1)
    assert torch.equal(p, torch.nn.functional.one_hot(perm, 5).to(D))
    g = torch.randn(4, 5, 5, dtype=D)
    (grad_hard,) = torch.autograd.grad((p * g).sum(), x)
    (grad_soft,) = torch.autograd.grad((fn(x, tau=2.0) * g).sum(), x)
    torch.testing.assert_close(grad_hard, grad_soft)


def test_stochastic_permutation_is_plackett_luce():
    """Hard Gumbel-perturbed NeuralSort draws orderings of 3 items with the Plackett–Luce law.
    Chi-square over the 6 orderings at level 1e-3 (failure rate 0.1 % for a correct sampler)."""
    from scipy.stats import chisquare

    logits = t([0.5, -0.3, 1.2])
    gen = torch.Generator().manual_seed(6)
    draws = 20000
    p = neural_sort(logits.expand(draws, 3), tau=1.0, hard=True, stochastic=True, descending=True, generator=gen)
    orders = p.argmax(-1)                                                  # (draws, 3)
    perms = list(itertools.permutations(range(3)))
    code = {perm: i for i, perm in enumerate(perms)}
    counts = np.bincount([code[tuple(o)] for o in orders.tolist()], minlength=6)
    probs = torch.exp(plackett_luce_log_prob(logits.expand(6, 3), torch.tensor(perms))).numpy()
    assert abs(probs.sum() - 1) < 1e-12
    assert chisquare(counts, probs * draws).pvalue > 1e-3


# ------------------------------------------------------------------------------------------
# Gumbel top-k and Plackett–Luce probabilities


def test_set_log_prob_equals_sum_over_orderings():
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 7, generator=gen, dtype=D)
    for k in (1, 2, 3, 4, 7):
        idx = torch.stack([torch.randperm(7, generator=gen)[:k] for _ in range(2)])
        brute = torch.logsumexp(torch.stack([plackett_luce_log_prob(logits, idx[:, list(order)])
                                             for order in itertools.permutations(range(k))]), 0)
        torch.testing.assert_close(plackett_luce_log_prob(logits, idx, ordered=False), brute)


def test_set_probabilities_sum_to_one():
    logits = t([0.1, 2.0, -1.0, 0.7, 0.0])
    for k in (1, 2, 3, 5):
        sets = torch.tensor(list(itertools.combinations(range(5), k)))
        total = torch.exp(plackett_luce_log_prob(logits.expand(len(sets), 5), sets, ordered=False)).sum()
        torch.testing.assert_close(total, t(1.0))


def test_gumbel_topk_frequencies_match_plackett_luce():
    """Ordered samples and unordered sets of gumbel_topk (n=5, k=2) against the exact
    Plackett–Luce probabilities: two chi-square tests at level 1e-3 (failure rate ≤ 0.2 %
    for a correct sampler; the seed is fixed so the outcome is deterministic)."""
    from scipy.stats import chisquare

    logits = t([0.1, 2.0, -1.0, 0.7, 0.0])
    draws = 40000
    gen = torch.Generator().manual_seed(8)
    res = gumbel_topk(logits.expand(draws, 5), 2, generator=gen, set_log_prob=True)
    pairs = list(itertools.permutations(range(5), 2))
    code = {p: i for i, p in enumerate(pairs)}
    counts = np.bincount([code[tuple(r)] for r in res.indices.tolist()], minlength=len(pairs))
    probs = torch.exp(plackett_luce_log_prob(logits.expand(len(pairs), 5), torch.tensor(pairs))).numpy()
    assert chisquare(counts, probs * draws).pvalue > 1e-3
    sets = list(itertools.combinations(range(5), 2))
    scode = {s: i for i, s in enumerate(sets)}
    scounts = np.bincount([scode[tuple(sorted(r))] for r in res.indices.tolist()], minlength=len(sets))
    sprobs = torch.exp(plackett_luce_log_prob(logits.expand(len(sets), 5), torch.tensor(sets), ordered=False)).numpy()
    assert chisquare(scounts, sprobs * draws).pvalue > 1e-3
    # Inclusion frequency of each item vs its exact inclusion probability.
    incl = np.array([sum(p for s, p in zip(sets, sprobs) if i in s) for i in range(5)])
    freq = np.bincount(res.indices.reshape(-1).numpy(), minlength=5) / draws
    assert np.all(np.abs(freq - incl) < 4 * np.sqrt(incl * (1 - incl) / draws))
    # The returned log-probabilities are those of the drawn samples.
    torch.testing.assert_close(res.log_prob, plackett_luce_log_prob(logits.expand(draws, 5), res.indices))


def test_gumbel_topk_dim_and_shapes():
    x = torch.randn(3, 6, 4)
    res = gumbel_topk(x, 2, dim=1, generator=torch.Generator().manual_seed(0))
    assert res.indices.shape == (3, 2, 4) and res.log_prob.shape == (3, 4) and res.set_log_prob is None


def test_relaxed_topk_limits():
    gen = torch.Generator().manual_seed(9)
    x = torch.stack([torch.randperm(8, generator=gen) for _ in range(5)]).to(D) * 0.1   # gaps ≥ 0.1
    for k in (1, 3, 8):
        want = torch.zeros_like(x).scatter(-1, x.topk(k, -1).indices, 1.0)
        torch.testing.assert_close(relaxed_topk(x, k, tau=1e-4), want)
        soft = relaxed_topk(x, k, tau=2.0)
        torch.testing.assert_close(soft.sum(-1), torch.full((5,), float(k), dtype=D))
        hard = relaxed_topk(x, k, tau=2.0, hard=True)
        assert torch.equal(hard, want)
    s = relaxed_topk(x, 3, tau=0.5, stochastic=True, generator=torch.Generator().manual_seed(0))
    assert (s >= 0).all()


# ------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_errors():
    x = torch.randn(3, 4)
    for fn in (soft_sort, soft_rank):
        with pytest.raises(ValueError, match="regularization_strength"):
            fn(x, regularization_strength=0.0)
        with pytest.raises(ValueError, match="regularization_strength"):
            fn(x, regularization_strength=-1.0)
        with pytest.raises(ValueError, match="regularization"):
            fn(x, regularization="l1")
        with pytest.raises(TypeError, match="floating"):
            fn(torch.arange(4), regularization_strength=1.0)
        with pytest.raises(ValueError, match="NaN or infinite"):
            fn(t([1.0, float("nan")]))
        with pytest.raises(IndexError, match="dim"):
            fn(x, dim=2)
    for fn in (neural_sort, soft_sort_permutation):
        with pytest.raises(ValueError, match="tau"):
            fn(x, tau=0)
        with pytest.raises(TypeError, match="floating"):
            fn(torch.arange(4))
    with pytest.raises(ValueError, match="k=5 is larger"):
        gumbel_topk(x, 5)
    with pytest.raises(ValueError, match="k=5 is larger"):
        relaxed_topk(x, 5)
    with pytest.raises(ValueError, match="k must be"):
        gumbel_topk(x, 0)
    with pytest.raises(TypeError, match="floating"):
        gumbel_topk(torch.arange(4), 2)
    with pytest.raises(ValueError, match="distinct"):
        plackett_luce_log_prob(x, torch.tensor([[0, 0], [1, 2], [2, 3]]))
    with pytest.raises(ValueError, match=r"in \[0, 3\]"):
        plackett_luce_log_prob(x, torch.tensor([[0, 4], [1, 2], [2, 3]]))
    with pytest.raises(ValueError, match="k <= 16"):
        plackett_luce_log_prob(torch.randn(20), torch.arange(17), ordered=False)
