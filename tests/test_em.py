"""Tests of quasigrad.em: exact likelihood, EM's monotonicity, the ELBO's bound, and
gradient training through the discrete assignment."""

import itertools

import pytest
import torch

from quasigrad import em, exact, registry


def _synthetic(n=600, d=16, k=3, seed=0, dtype=torch.float64):
    """Draws from a known mixture (a test fixture, not a stand-in for real data)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(k, d, generator=g, dtype=dtype) * 0.8 + 0.1
    z = torch.randint(k, (n,), generator=g)
    x = (torch.rand(n, d, generator=g, dtype=dtype) < means[z]).to(dtype)
    return x, means


def test_log_likelihood_is_normalised():
    g = torch.Generator().manual_seed(0)
    m = em.BernoulliMixture(3, 4, dtype=torch.float64)
    m.set_probabilities(torch.softmax(torch.randn(3, generator=g, dtype=torch.float64), 0),
                        torch.rand(3, 4, generator=g, dtype=torch.float64))
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    torch.testing.assert_close(m.log_likelihood(xs).exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(m.responsibilities(xs).sum(-1), torch.ones(16, dtype=torch.float64))


@pytest.mark.parametrize("pseudo_count", [0.0, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_never_decreases_the_objective(pseudo_count, seed):
    """pseudo_count = 0: the log-likelihood itself; > 0: log-likelihood + log prior."""
    x, _ = _synthetic(seed=seed)
    x[:, 0] = 0                                   # a feature that is always 0: μ → 0 exactly (a = 0)
    m = em.BernoulliMixture(5, x.shape[1], dtype=torch.float64).init_from_data(x, generator=torch.Generator().manual_seed(seed))
    hist = em.fit_em(m, x, num_iters=60, pseudo_count=pseudo_count)
    h = torch.tensor(hist, dtype=torch.float64)
    assert torch.isfinite(h).all()
    assert (h[1:] - h[:-1] >= -1e-12 * h.abs()[1:]).all(), (h[1:] - h[:-1]).min()
    assert h[-1] > h[0] + 0.1                     # and it does climb
    if pseudo_count == 0:
        assert (m.logits[:, 0] == float("-inf")).all()   # the ML answer for the dead feature
        assert torch.isfinite(m.log_likelihood(x)).all()


def test_em_step_maximises_the_expected_complete_log_likelihood():
    """The closed-form M-step is the maximiser: Q(θ_new) ≥ Q(θ_new + small perturbation)."""
    x, _ = _synthetic(n=300, d=8)
    m = em.BernoulliMixture(3, 8, dtype=torch.float64).init_from_data(x, generator=torch.Generator().manual_seed(0))
    r = m.responsibilities(x)
    m.em_step(x)

    def q_value():
        return (r * (m.log_weights() + m.component_log_likelihood(x))).sum()
    best = q_value()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        base = (m.mix_logits.clone(), m.logits.clone())
        for _ in range(20):
            m.mix_logits.copy_(base[0] + 1e-3 * torch.randn(3, generator=g, dtype=torch.float64))
            m.logits.copy_(base[1] + 1e-3 * torch.randn(3, 8, generator=g, dtype=torch.float64))
            assert q_value() <= best + 1e-12
        m.mix_logits.copy_(base[0])
        m.logits.copy_(base[1])


def test_em_recovers_a_known_mixture():
    x, _ = _synthetic(n=4000, d=20, k=3, seed=3)
    truth = em.BernoulliMixture(3, 20, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    means = torch.rand(3, 20, generator=g, dtype=torch.float64) * 0.8 + 0.1
    truth.set_probabilities(torch.full((3,), 1 / 3, dtype=torch.float64), means)
    best = -float("inf")
    for seed in range(3):
        m = em.BernoulliMixture(3, 20, dtype=torch.float64).init_from_data(x, generator=torch.Generator().manual_seed(seed))
        best = max(best, em.fit_em(m, x, num_iters=100)[-1])
    # the ML fit is at least as likely as the generating parameters, and not far above them
    ll_truth = truth.log_likelihood(x).mean().item()
    assert ll_truth - 1e-6 <= best < ll_truth + 0.05


def test_exact_elbo_is_a_bound_tight_at_the_posterior():
    x, _ = _synthetic(n=5, d=6)
    m = em.BernoulliMixture(4, 6, dtype=torch.float64).init_from_data(x, generator=torch.Generator().manual_seed(0))
    f = em._decoder_f(m, x)
    logp = m.log_likelihood(x)

    def exact_elbo(q_logits):
        logq = torch.log_softmax(q_logits, -1)
        return exact.expectation(f, q_logits, dim=-1) / 1 + -(logq.exp() * logq).sum(-1)

    post = torch.log(m.responsibilities(x))
    torch.testing.assert_close(exact_elbo(post), logp)
    other = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert (exact_elbo(other) < logp - 1e-6).all()


@pytest.mark.parametrize("estimator", ["st", "reinmax", "gumbel_rao", "rloo"])
def test_gradient_training_increases_log_likelihood(estimator):
    x, _ = _synthetic(n=800, d=16, k=3, seed=4, dtype=torch.float32)
    torch.manual_seed(0)
    m = em.BernoulliMixture(3, 16).init_from_data(x, generator=torch.Generator().manual_seed(0))
    enc = torch.nn.Linear(16, 3)
    before = m.log_likelihood(x).mean().item()
    em.fit_gradient(m, enc, x, estimator=estimator, num_steps=300, batch_size=50, lr=0.03,
                    num_samples=4 if estimator == "rloo" else None,
                    generator=torch.Generator().manual_seed(0))
    after = m.log_likelihood(x).mean().item()
    assert after > before + 0.3, (before, after)


def test_layer1_elbo_gradient_matches_estimator_expectation():
    """The ELBO's gradient with respect to q_logits is the estimator's: for ReinMax its
    expectation over draws equals quasigrad.exact.estimator_expectation's (plus the exact
    entropy gradient). Checked on all K outcomes by passing each index."""
    x, _ = _synthetic(n=1, d=5)
    m = em.BernoulliMixture(3, 5, dtype=torch.float64).init_from_data(x, generator=torch.Generator().manual_seed(0))
    q = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = em._decoder_f(m, x)
    p = torch.softmax(q, -1)[0]
    total = torch.zeros(1, 3, dtype=torch.float64)
    for k in range(3):
        ql = q.clone().requires_grad_(True)
        z = registry.get("reinmax").categorical(ql, index=torch.tensor([k]))
        (g,) = torch.autograd.grad(f(z).sum(), ql)
        total += p[k] * g
    ql = q.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(exact.estimator_expectation(f, ql, "reinmax").sum(), ql)
    torch.testing.assert_close(total, expected)
    # and the Monte Carlo ELBO's gradient averages to it plus the entropy's exact gradient
    ql = q.clone().requires_grad_(True)
    logq = torch.log_softmax(ql, -1)
    (ent,) = torch.autograd.grad(-(logq.exp() * logq).sum(), ql)
    g = torch.Generator().manual_seed(0)
    mc = torch.zeros(1, 3, dtype=torch.float64)
    for _ in range(4000):
        ql = q.clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(em.elbo(m, x, ql, estimator="reinmax", generator=g).sum(), ql)
        mc += gi / 4000
    # 4000 draws of a gradient with spread < 1: standard error < 0.016; tolerance 0.08 (> 5 s.e.)
    torch.testing.assert_close(mc, expected + ent, atol=0.08, rtol=0)


def test_bad_input_errors():
    m = em.BernoulliMixture(2, 3)
    with pytest.raises(ValueError, match="0s and 1s"):
        m.log_likelihood(torch.tensor([[0.0, 0.5, 1.0]]))
    with pytest.raises(ValueError, match="features"):
        m.log_likelihood(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="pseudo_count"):
        em.fit_em(m, torch.zeros(2, 3), pseudo_count=-1.0)
    with pytest.raises(ValueError, match="num_components"):
        em.BernoulliMixture(0, 3)
    with pytest.raises(KeyError, match="unknown estimator"):
        em.elbo(m, torch.zeros(2, 3), torch.zeros(2, 2), estimator="nope")
    with pytest.raises(ValueError, match="q_logits"):
        em.elbo(m, torch.zeros(2, 3), torch.zeros(2, 5))
    with pytest.raises(TypeError, match="floating"):
        em.fit_em(m, torch.zeros(2, 3, dtype=torch.long))


def test_rloo_elbo_gradient_is_unbiased():
    """REINFORCE-leave-one-out through quasigrad.objective: the Monte Carlo ELBO gradient with
    respect to q_logits averages to the exact ELBO gradient (enumeration). 3000 estimates with
    K = 4: standard error < 0.02 per entry; tolerance 0.1 (> 5 s.e.)."""
    x, _ = _synthetic(n=2, d=5)
    m = em.BernoulliMixture(3, 5, dtype=torch.float64).init_from_data(x, generator=torch.Generator().manual_seed(0))
    q = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = em._decoder_f(m, x)
    ql = q.clone().requires_grad_(True)
    logq = torch.log_softmax(ql, -1)
    (truth,) = torch.autograd.grad((exact.expectation(f, ql) - (logq.exp() * logq).sum(-1)).sum(), ql)
    g = torch.Generator().manual_seed(0)
    mc = torch.zeros_like(q)
    for _ in range(3000):
        ql = q.clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(em.elbo(m, x, ql, estimator="rloo", num_samples=4, generator=g).sum(), ql)
        mc += gi / 3000
    torch.testing.assert_close(mc, truth, atol=0.1, rtol=0)
