"""quasigrad.distributions: rsample() is the layer-1 estimator on the same draw, and everything
else (log_prob, entropy, mean, mode, KL) is torch.distributions' own."""

import pytest
import torch
from torch import distributions as TD

import quasigrad
from quasigrad import distributions as QD
from quasigrad import registry

CATEGORICAL = [e.name for e in registry.entries(layer=1) if e.categorical is not None]
BERNOULLI = [e.name for e in registry.entries(layer=1) if e.bernoulli is not None]


def _tau(name):
    return 1.7 if registry.get(name).has_tau else 1.0


def _loss(z, weight):
    # non-linear in z, so the gradient the estimator passes back depends on the draw
    return ((z * weight).sum(-1) ** 2).sum() + (z * weight).sum()


def test_every_sample_level_estimator_is_covered():
    assert {"st", "reinmax", "gapped_st", "zgr", "darn", "gumbel_softmax", "gumbel_rao"} <= set(CATEGORICAL)
    assert set(BERNOULLI) == set(CATEGORICAL)


@pytest.mark.parametrize("sample_shape", [(), (3,)])
@pytest.mark.parametrize("name", CATEGORICAL)
def test_categorical_rsample_gradient_is_the_layer1_function_on_the_same_draw(name, sample_shape):
    gen = torch.Generator().manual_seed(11)
    theta = torch.randn(2, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(5, dtype=torch.float64, generator=gen)
    tau = _tau(name)
    q = QD.OneHotCategorical(logits=theta, estimator=name, tau=tau, generator=torch.Generator().manual_seed(3))
    z = q.rsample(sample_shape)
    assert z.shape == torch.Size(sample_shape) + (2, 5)
    _loss(z, weight).backward()

    ref_theta = theta.detach().clone().requires_grad_()
    info = registry.get(name)
    kwargs = dict(info.defaults)
    if info.has_tau:
        kwargs["tau"] = tau
    ref = info.categorical(ref_theta.expand(torch.Size(sample_shape) + (2, 5)), dim=-1,
                           generator=torch.Generator().manual_seed(3), **kwargs)
    _loss(ref, weight).backward()
    assert torch.equal(z.detach(), ref.detach())
    torch.testing.assert_close(theta.grad, ref_theta.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", BERNOULLI)
def test_bernoulli_rsample_gradient_is_the_layer1_function_on_the_same_draw(name):
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(3, dtype=torch.float64, generator=gen)
    tau = _tau(name)
    q = QD.Bernoulli(logits=a, estimator=name, tau=tau, generator=torch.Generator().manual_seed(8))
    b = q.rsample((2,))
    assert b.shape == (2, 4, 3) and set(b.detach().unique().tolist()) <= {0.0, 1.0}
    _loss(b, weight).backward()
    ref_a = a.detach().clone().requires_grad_()
    info = registry.get(name)
    kwargs = dict(info.defaults)
    if info.has_tau:
        kwargs["tau"] = tau
    ref = info.bernoulli(ref_a.expand(2, 4, 3), generator=torch.Generator().manual_seed(8), **kwargs)
    _loss(ref, weight).backward()
    assert torch.equal(b.detach(), ref.detach())
    torch.testing.assert_close(a.grad, ref_a.grad, rtol=1e-12, atol=1e-14)


def test_probs_parameterisation_gives_pytorchs_straight_through_gradient():
    # PyTorch's OneHotCategoricalStraightThrough returns D + (π − sg(π)); quasigrad's "st" built from
    # probs differentiates through log π: the same gradient with respect to probs.
    gen = torch.Generator().manual_seed(2)
    p = torch.rand(3, 4, dtype=torch.float64, generator=gen) + 0.1
    p1 = p.clone().requires_grad_()
    z = QD.OneHotCategorical(probs=p1, estimator="st", generator=gen).rsample()
    weight = torch.randn(4, dtype=torch.float64, generator=gen)
    _loss(z, weight).backward()
    p2 = p.clone().requires_grad_()
    pi = p2 / p2.sum(-1, keepdim=True)
    _loss(z.detach() + (pi - pi.detach()), weight).backward()
    torch.testing.assert_close(p1.grad, p2.grad)


def _pairs():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, 3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    return a, b


def test_categorical_log_prob_entropy_mean_mode_and_kl_equal_torch():
    a, b = _pairs()
    ours, torchs = QD.OneHotCategorical(logits=a, estimator="reinmax", tau=2.0), TD.OneHotCategorical(logits=a)
    support = torchs.enumerate_support()
    assert torch.equal(ours.enumerate_support(), support)
    assert torch.equal(ours.log_prob(support), torchs.log_prob(support))
    assert torch.equal(ours.entropy(), torchs.entropy())
    assert torch.equal(ours.mean, torchs.mean) and torch.equal(ours.mode, torchs.mode)
    assert torch.equal(ours.variance, torchs.variance)
    other, other_t = QD.OneHotCategorical(probs=torch.softmax(b, -1)), TD.OneHotCategorical(probs=torch.softmax(b, -1))
    expect = TD.kl_divergence(torchs, other_t)
    assert torch.equal(TD.kl_divergence(ours, other), expect)
    assert torch.equal(TD.kl_divergence(ours, other_t), expect)   # mixed with PyTorch's class
    assert torch.equal(TD.kl_divergence(torchs, other), expect)
    z = ours.rsample((6,))
    assert torch.equal(ours.log_prob(z), torchs.log_prob(z))
    assert ours.has_rsample and not TD.OneHotCategorical.has_rsample


def test_bernoulli_log_prob_entropy_mean_mode_and_kl_equal_torch():
    a, b = _pairs()
    ours, torchs = QD.Bernoulli(logits=a, estimator="zgr"), TD.Bernoulli(logits=a)
    values = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 2, 3, 4)
    assert torch.equal(ours.log_prob(values), torchs.log_prob(values))
    assert torch.equal(ours.entropy(), torchs.entropy())
    assert torch.equal(ours.mean, torchs.mean) and torch.equal(ours.mode, torchs.mode)
    pb = torch.sigmoid(b).expand(2, 3, 4)   # PyTorch's Bernoulli KL does not broadcast batch shapes
    other, other_t = QD.Bernoulli(probs=pb), TD.Bernoulli(probs=pb)
    assert torch.equal(TD.kl_divergence(ours, other), TD.kl_divergence(torchs, other_t))
    assert torch.equal(TD.kl_divergence(ours, other_t), TD.kl_divergence(torchs, other_t))


def test_draws_follow_the_distribution():
    # 40000 draws per row; each frequency within 5 standard errors of its probability
    # (failure rate below 1e-5 per checked frequency with this fixed seed)
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    q = QD.OneHotCategorical(probs=probs, estimator="gst", generator=torch.Generator().manual_seed(0))
    freq = q.sample((40000,)).mean(0)
    assert (freq - probs).abs().max() < 5 * (0.25 / 40000) ** 0.5
    b = QD.Bernoulli(probs=torch.tensor([0.05, 0.5, 0.9]), estimator="reinmax", tau=1.5,
                     generator=torch.Generator().manual_seed(1))
    assert (b.rsample((40000,)).mean(0) - b.probs).abs().max() < 5 * (0.25 / 40000) ** 0.5


def test_generator_shapes_expand_and_independent():
    theta = torch.randn(2, 3)
    q1 = QD.OneHotCategorical(logits=theta, generator=torch.Generator().manual_seed(9))
    q2 = QD.OneHotCategorical(logits=theta, generator=torch.Generator().manual_seed(9))
    assert torch.equal(q1.rsample((50,)), q2.rsample((50,)))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(q1.sample((7,), generator=g), q2.rsample((7,), generator=torch.Generator().manual_seed(1)))
    assert q1.sample((4, 5)).shape == (4, 5, 2, 3) and q1.sample().requires_grad is False
    big = q1.expand((6, 2))
    assert isinstance(big, QD.OneHotCategorical) and big.estimator == "st" and big.generator is q1.generator
    assert big.rsample().shape == (6, 2, 3)
    bern = QD.Bernoulli(logits=torch.zeros(3), estimator="gst", gap=0.5).expand((4, 3))
    assert bern.estimator_params == {"gap": 0.5} and bern.rsample((2,)).shape == (2, 4, 3)
    ind = TD.Independent(QD.OneHotCategorical(logits=torch.zeros(5, 3, 4, requires_grad=True)), 1)
    assert ind.has_rsample and ind.rsample((2,)).shape == (2, 5, 3, 4)
    scalar = QD.Bernoulli(probs=0.3)
    assert scalar.rsample((3,)).shape == (3,)
    assert "estimator='reinmax', tau=1.5" in repr(QD.OneHotCategorical(logits=theta, estimator="reinmax", tau=1.5))
    assert quasigrad.distributions is QD


def test_bad_settings_are_refused():
    theta = torch.zeros(3)
    with pytest.raises(KeyError, match="unknown estimator 'nope'; known estimators"):
        QD.OneHotCategorical(logits=theta, estimator="nope")
    with pytest.raises(ValueError, match="no sample-level function.*sample-level estimators: darn"):
        QD.OneHotCategorical(logits=theta, estimator="rloo")
    with pytest.raises(ValueError, match="'zgr' has no temperature; tau must be 1.0, got 2.0"):
        QD.OneHotCategorical(logits=theta, estimator="zgr", tau=2.0)
    with pytest.raises(ValueError, match="tau"):
        QD.Bernoulli(logits=theta, tau=0.0)
    with pytest.raises(TypeError, match="'st' takes no parameter.*k"):
        QD.OneHotCategorical(logits=theta, k=3)
    with pytest.raises(ValueError, match="hard=False gives a relaxed sample"):
        QD.OneHotCategorical(logits=theta, estimator="stgs", hard=False)
    with pytest.raises(TypeError, match="registered name"):
        QD.Bernoulli(logits=theta, estimator=quasigrad.st)
    with pytest.raises(TypeError, match="generator"):
        QD.OneHotCategorical(logits=theta, generator=3).rsample()
    with pytest.raises(ValueError):
        QD.OneHotCategorical(logits=theta, probs=theta.softmax(-1))
    with pytest.raises(TypeError, match="floating point"):
        QD.Bernoulli(logits=torch.tensor([1, 2]))
