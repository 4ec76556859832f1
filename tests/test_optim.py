"""Tests for quasigrad.optim: mirror descent (MD-tanh, MD-softmax) and BayesBiNN.

Oracles: the straight-through update written independently here (the beta -> infinity limit),
the MD-tanh / MD-softmax identity for two levels, and BayesBiNN's formulas evaluated by hand
on scalars. Training checks use a synthetic separable problem (a random +-1 teacher; synthetic
on purpose, it stands for no real data set) with fixed seeds.
"""

import copy
import math

import pytest
import torch

from quasigrad.optim import BayesBiNN, MDSoftmax, MDTanh, is_binary, mark_binary

DT = torch.float64


def ste_sign(theta):
    """Straight-through sign written independently of the library: forward sign (sign(0)=+1),
    backward the identity."""
    hard = torch.where(theta >= 0, torch.ones_like(theta), -torch.ones_like(theta))
    return theta + (hard - theta).detach()


def problem(n=256, d=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randint(0, k, (n,), generator=g)
    w0 = 0.3 * torch.randn(k, d, generator=g, dtype=DT)
    return x, y, w0


def loss_fn(w, x, y):
    return torch.nn.functional.cross_entropy(x @ w.t() / math.sqrt(x.shape[1]), y)


# ----------------------------------------------------------------------------- beta -> infinity

@pytest.mark.parametrize("adam", [False, True])
def test_md_tanh_infinite_beta_is_the_ste_update(adam):
    x, y, w0 = problem()
    p = torch.nn.Parameter(w0.clone())
    mark_binary(p)
    opt = MDTanh([p], lr=0.05, beta=math.inf, adam=adam)
    theta = torch.nn.Parameter(w0.clone())                  # STE's latent weight
    ref = torch.optim.Adam([theta], lr=0.05) if adam else torch.optim.SGD([theta], lr=0.05)
    for t in range(30):
        batch = slice(8 * t % 256, 8 * t % 256 + 64)
        opt.zero_grad()
        loss_fn(p, x[batch], y[batch]).backward()
        opt.step()
        ref.zero_grad()
        loss_fn(ste_sign(theta), x[batch], y[batch]).backward()
        ref.step()
        torch.testing.assert_close(opt.state[p]["dual"], theta.detach(), rtol=1e-12, atol=1e-12)
        assert torch.equal(p.detach(), torch.where(theta >= 0, 1.0, -1.0).to(DT))
    assert not torch.equal(theta.detach(), w0)              # it moved


def test_md_tanh_update_converges_to_ste_as_beta_grows():
    """One step from the same latent point: the MD-tanh update minus the STE update -> 0."""
    x, y, w0 = problem()
    theta = torch.nn.Parameter(w0.clone())
    loss_fn(ste_sign(theta), x, y).backward()
    ste_step = -0.1 * theta.grad
    errors = []
    for beta in [3.0, 30.0, 300.0, 3000.0, 30000.0]:
        p = torch.nn.Parameter(w0.clone())
        opt = MDTanh(mark_binary(p), lr=0.1, beta=beta)
        with torch.no_grad():
            opt.state[p]["dual"].copy_(w0)
        opt.refresh()
        opt.zero_grad()
        loss_fn(p, x, y).backward()
        opt.step()
        errors.append(float((opt.state[p]["dual"] - w0 - ste_step).abs().max()))
    # The gap shrinks with beta and reaches rounding error once tanh(beta x) is +-1 in float64.
    assert all(b < a or b < 1e-15 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-12 and errors[0] > 1e-4, errors


def test_md_softmax_infinite_beta_is_the_ste_update_on_the_dual():
    levels = torch.tensor([-1.0, -0.3, 0.4, 1.0], dtype=DT)
    x, y, w0 = problem(seed=1)
    p = torch.nn.Parameter(w0.clone())
    opt = MDSoftmax(mark_binary(p), levels=levels, lr=0.2, beta=math.inf)
    X = torch.nn.Parameter(-(w0.unsqueeze(-1) - levels) ** 2)   # latent scores; nearest level wins
    ref = torch.optim.SGD([X], lr=0.2)
    for t in range(25):
        opt.zero_grad()
        loss_fn(p, x, y).backward()
        opt.step()
        ref.zero_grad()
        hard = levels[X.argmax(-1)]
        soft = (X * levels).sum(-1)                                  # d w / d X_j := q_j
        loss_fn(hard + soft - soft.detach(), x, y).backward()
        ref.step()
        torch.testing.assert_close(opt.state[p]["dual"], X.detach(), rtol=1e-12, atol=1e-12)
        assert torch.equal(p.detach(), levels[X.detach().argmax(-1)])


@pytest.mark.parametrize("adam", [False, True])
def test_md_softmax_with_two_levels_is_md_tanh(adam):
    x, y, w0 = problem(seed=2)
    w0 = w0.clamp(-0.9, 0.9)
    kw = dict(lr=0.05, beta=2.0, beta_growth=1.3, beta_every=3, adam=adam)
    a = torch.nn.Parameter(w0.clone())
    b = torch.nn.Parameter(w0.clone())
    opt_a = MDTanh(mark_binary(a), **kw)
    opt_b = MDSoftmax(mark_binary(b), levels=(-1.0, 1.0), **kw)
    torch.testing.assert_close(b.detach(), w0, rtol=0, atol=1e-9)     # max-entropy start keeps w
    for _ in range(20):
        for p, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            loss_fn(p, x, y).backward()
            opt.step()
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-9)
    assert opt_a.param_groups[0]["beta"] == pytest.approx(2.0 * 1.3 ** 6)
    assert not torch.allclose(a.detach(), w0)


def test_md_softmax_is_exponentiated_gradient():
    """u_{t+1} is proportional to u_t exp(-beta lr g_u)."""
    levels = (-1.0, 0.0, 1.0)
    x, y, w0 = problem(seed=3)
    p = torch.nn.Parameter(w0.clamp(-0.8, 0.8))
    beta, lr = 1.7, 0.3
    opt = MDSoftmax(mark_binary(p), levels=levels, lr=lr, beta=beta)
    u0 = torch.softmax(beta * opt.state[p]["dual"], -1)
    loss_fn(p, x, y).backward()
    g_u = p.grad.unsqueeze(-1) * torch.tensor(levels, dtype=DT)
    opt.step()
    u1 = torch.softmax(beta * opt.state[p]["dual"], -1)
    expected = u0 * torch.exp(-beta * lr * g_u)
    torch.testing.assert_close(u1, expected / expected.sum(-1, keepdim=True), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p.detach(), (u1 * torch.tensor(levels, dtype=DT)).sum(-1))


def test_quantized_context_rounds_and_restores():
    x, y, w0 = problem()
    p = torch.nn.Parameter(w0.clone())
    opt = MDTanh(mark_binary(p), lr=0.1, beta=2.0)
    soft = p.detach().clone()
    with opt.quantized():
        assert torch.equal(p.detach(), torch.where(opt.state[p]["dual"] >= 0, 1.0, -1.0).to(DT))
    assert torch.equal(p.detach(), soft)
    q = torch.nn.Parameter(w0.clone())
    opt = MDSoftmax(mark_binary(q), levels=(-1, 0, 1), beta=2.0)
    with opt.quantized():
        assert set(q.detach().unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_low_precision_weights_keep_float32_dual():
    p = torch.nn.Parameter(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)).bfloat16())
    opt = MDTanh(mark_binary(p), lr=0.1, beta=1.0, adam=True)
    assert opt.state[p]["dual"].dtype == torch.float32
    (p.float() ** 2).sum().backward()
    opt.step()
    assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
    q = torch.nn.Parameter(torch.randn(4, 5, generator=torch.Generator().manual_seed(1)).bfloat16())
    bopt = BayesBiNN(mark_binary(q), train_set_size=10, tau=0.3, lambda_init=0.5)
    assert bopt.state[q]["lambda"].dtype == torch.float32
    (q.float() ** 2).sum().backward()
    bopt.step()
    assert q.dtype == torch.bfloat16 and torch.isfinite(q).all() and torch.isfinite(bopt.state[q]["lambda"]).all()


def test_rejected_group_leaves_no_trace_and_no_grad_means_no_update():
    a, b = marked(), torch.nn.Parameter(torch.zeros(2))
    opt = MDTanh(a)
    with pytest.raises(ValueError, match="binary layer"):
        opt.add_param_group({"params": [b]})
    assert len(opt.param_groups) == 1
    p = mark_binary(torch.nn.Parameter(torch.tensor([0.5, -0.5])))[0]
    bopt = BayesBiNN([p], train_set_size=10, lambda_init=2.0)
    before = bopt.state[p]["lambda"].clone()
    bopt.step()                                             # p.grad is None
    assert torch.equal(bopt.state[p]["lambda"], before)


# ----------------------------------------------------------------------------- BayesBiNN formulas

def test_bayesbinn_update_matches_hand_computation():
    w_init = [0.3, -0.2]
    c = [0.7, -1.1]
    lam = [0.5, -0.5]                                  # lambda_init * sign(w_init)
    tau, N, lr, mom, prior, kl = 0.7, 10, 0.01, 0.9, 0.1, 1.0
    p = torch.nn.Parameter(torch.tensor(w_init, dtype=DT))
    gen = torch.Generator().manual_seed(123)
    opt = BayesBiNN(mark_binary(p), lr=lr, train_set_size=N, tau=tau, momentum=mom, lambda_init=0.5,
                    prior_lambda=prior, kl_weight=kl, eps=0.0, generator=gen)
    replay = torch.Generator().manual_seed(123)
    m = [0.0, 0.0]
    for t in (1, 2):
        eps_u = torch.rand(2, dtype=DT, generator=replay).tolist()
        w = [math.tanh((lam[i] + 0.5 * math.log(eps_u[i] / (1 - eps_u[i]))) / tau) for i in range(2)]
        assert p.detach().tolist() == pytest.approx(w, rel=1e-12)
        opt.zero_grad()
        loss = (torch.tensor(c, dtype=DT) * p).sum() + 0.5 * (p ** 2).sum()    # grad = c + w
        loss.backward()
        opt.step()
        for i in range(2):
            mu = math.tanh(lam[i])
            g = N * (1 - w[i] ** 2) / (tau * (1 - mu ** 2)) * (c[i] + w[i])
            m[i] = mom * m[i] + (1 - mom) * (g + kl * (lam[i] - prior))
            lam[i] = lam[i] - lr * m[i] / (1 - mom ** t)
        assert opt.state[p]["lambda"].tolist() == pytest.approx(lam, rel=1e-12)
        assert opt.mean(p).tolist() == pytest.approx([math.tanh(v) for v in lam], rel=1e-12)


def test_bayesbinn_closure_averages_samples():
    """With S samples the estimate is (N/S) sum_s scale_s * grad_s (checked against a replay)."""
    p = torch.nn.Parameter(torch.tensor([0.4, -0.6, 0.1], dtype=DT))
    c = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    S, tau, N, lr, eps = 3, 0.5, 7, 0.02, 1e-10
    opt = BayesBiNN(mark_binary(p), lr=lr, train_set_size=N, tau=tau, num_samples=S, lambda_init=1.2,
                    eps=eps, generator=torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    lam = torch.tensor([1.2, -1.2, 1.2], dtype=DT)
    seen = []

    def closure():
        seen.append(p.detach().clone())
        loss = ((c * p).sum()) ** 2
        loss.backward()
        return loss

    loss = opt.step(closure)
    g = torch.zeros(3, dtype=DT)
    for s in range(S):
        u = torch.rand(3, dtype=DT, generator=replay)
        w = torch.tanh((lam + 0.5 * torch.log(u / (1 - u))) / tau)
        torch.testing.assert_close(seen[s], w)
        grad = 2 * (c * w).sum() * c
        g += (1 - w ** 2 + eps) / (tau * (1 - torch.tanh(lam) ** 2 + eps)) * grad
    expected = lam - lr * (g * N / S + lam)
    torch.testing.assert_close(opt.state[p]["lambda"], expected, rtol=1e-12, atol=1e-12)
    assert loss == pytest.approx(sum(float(((c * w) .sum()) ** 2) for w in seen) / S)


def test_bayesbinn_saturated_samples_stay_finite():
    """tau = 1e-10 (the public code's value): samples are +-1 and nothing becomes NaN, with eps
    = 1e-10 (public code) and with eps = 0 (the paper's formula, computed in the log domain)."""
    x, y, w0 = problem()
    for eps in (1e-10, 0.0):
        p = torch.nn.Parameter(w0.clone().float())
        opt = BayesBiNN(mark_binary(p), lr=1e-4, train_set_size=1000, tau=1e-10, eps=eps,
                        generator=torch.Generator().manual_seed(0))
        for _ in range(5):
            opt.zero_grad()
            loss_fn(p, x.float(), y).backward()
            opt.step()
            assert torch.isfinite(opt.state[p]["lambda"]).all()
            assert set(p.detach().abs().unique().tolist()) <= {1.0}


def test_bayesbinn_mean_stays_inside_the_open_interval():
    x, y, w0 = problem(seed=4)
    p = torch.nn.Parameter(w0.clone())
    opt = BayesBiNN(mark_binary(p), lr=0.05, train_set_size=256, tau=0.5, lambda_init=1.0, momentum=0.5,
                    generator=torch.Generator().manual_seed(1))
    for _ in range(100):
        opt.zero_grad()
        loss_fn(p, x, y).backward()
        opt.step()
        mu = opt.mean(p)
        assert torch.isfinite(opt.state[p]["lambda"]).all()
        assert (mu.abs() < 1).all()
        assert (p.detach().abs() <= 1).all()                  # relaxed samples at tau = 0.5
    with opt.mean_weights():
        assert torch.equal(p.detach(), torch.where(mu >= 0, 1.0, -1.0).to(DT))
    with opt.sampled_weights(torch.Generator().manual_seed(0)):
        assert set(p.detach().unique().tolist()) <= {-1.0, 1.0}


def test_bayesbinn_sampled_weights_have_the_posterior_mean():
    # 4000 draws per weight; std of the mean <= 1/sqrt(4000) = 0.016, the 0.08 tolerance
    # is 5 std: failure rate < 1e-6 per weight (the seed is fixed anyway).
    p = torch.nn.Parameter(torch.tensor([0.5, -0.5, 0.5], dtype=DT))
    opt = BayesBiNN(mark_binary(p), train_set_size=1, lambda_init=0.3)
    opt.state[p]["lambda"].copy_(torch.tensor([0.3, -1.0, 0.0], dtype=DT))
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(3, dtype=DT)
    for _ in range(4000):
        with opt.sampled_weights(gen):
            total += p.detach()
    torch.testing.assert_close(total / 4000, opt.mean(p), atol=0.08, rtol=0)


# ----------------------------------------------------------------------------- separable problem

def teacher_problem(n=600, d=25, seed=0):
    """Labels from a random +-1 teacher: a binary-weight student can classify them all."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0)
    x = torch.randn(n, d, generator=g)
    y = (x @ teacher > 0).long()
    return x[:400], y[:400], x[400:], y[400:]


def logits_of(w, x):
    return torch.stack([-(x @ w), x @ w], dim=1) * (2.0 / math.sqrt(x.shape[1]))


def accuracy(w, x, y):
    return float((logits_of(w, x).argmax(1) == y).float().mean())


def train(opt, p, xtr, ytr, epochs=30, batch=40):
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(logits_of(p, xtr[idx]), ytr[idx]).backward()
            opt.step()


@pytest.mark.parametrize("name", ["md_tanh", "md_tanh_adam", "md_softmax", "bayesbinn"])
def test_each_optimiser_learns_a_separable_problem(name):
    xtr, ytr, xte, yte = teacher_problem()
    p = torch.nn.Parameter(0.1 * torch.randn(xtr.shape[1], generator=torch.Generator().manual_seed(1)))
    mark_binary(p)
    if name == "md_tanh":
        opt = MDTanh([p], lr=0.1, beta=1.0, beta_growth=1.05, beta_every=10)
    elif name == "md_tanh_adam":
        opt = MDTanh([p], lr=0.01, beta=1.0, beta_growth=1.05, beta_every=10, adam=True)
    elif name == "md_softmax":
        opt = MDSoftmax([p], levels=(-1.0, 0.0, 1.0), lr=0.1, beta=1.0, beta_growth=1.05, beta_every=10)
    else:
        opt = BayesBiNN([p], lr=1e-3, train_set_size=len(xtr), tau=1e-10, lambda_init=10.0,
                        generator=torch.Generator().manual_seed(2))
    before = accuracy(torch.where(p.detach() >= 0, 1.0, -1.0), xte, yte)
    train(opt, p, xtr, ytr)
    ctx = opt.mean_weights() if name == "bayesbinn" else opt.quantized()
    with ctx:
        acc = accuracy(p.detach(), xte, yte)
    # Stated accuracy: >= 95% held-out accuracy with the rounded weights (chance: 50%).
    assert acc >= 0.95, (name, before, acc)


# ----------------------------------------------------------------------------- bad input

def marked(shape=(3, 4)):
    """A fresh parameter marked as a binary-layer weight, in a list."""
    p = torch.nn.Parameter(torch.zeros(shape))
    return mark_binary(p)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bayesbinn_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        BayesBiNN(marked(), train_set_size=10, tau=tau)


@pytest.mark.parametrize("cls", [MDTanh, MDSoftmax])
@pytest.mark.parametrize("beta", [0.0, -2.0, float("nan")])
def test_mirror_descent_rejects_bad_beta(cls, beta):
    with pytest.raises(ValueError, match="beta"):
        cls(marked(), beta=beta)


@pytest.mark.parametrize("make", [
    lambda ps: MDTanh(ps),
    lambda ps: MDSoftmax(ps, levels=(-1, 0, 1)),
    lambda ps: BayesBiNN(ps, train_set_size=10),
])
def test_optimisers_reject_weights_outside_binary_layers(make):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    mark_binary(model[0])
    assert is_binary(model[0].weight) and not is_binary(model[0].bias)
    with pytest.raises(ValueError, match=r"parameter 1 of shape \(3,\) is not the weight of a binary layer"):
        make(model.parameters())
    make([model[0].weight])                                 # the marked weight alone is fine


def test_other_bad_arguments_are_named():
    with pytest.raises(ValueError, match="lr"):
        MDTanh(marked(), lr=0.0)
    with pytest.raises(ValueError, match="beta_growth"):
        MDTanh(marked(), beta_growth=0.5)
    with pytest.raises(ValueError, match="beta_every"):
        MDTanh(marked(), beta_every=0)
    with pytest.raises(ValueError, match="levels"):
        MDSoftmax(marked(), levels=(1.0, 0.0))
    with pytest.raises(ValueError, match="levels"):
        MDSoftmax(marked(), levels=(1.0,))
    with pytest.raises(ValueError, match="train_set_size"):
        BayesBiNN(marked(), train_set_size=0)
    with pytest.raises(ValueError, match="momentum"):
        BayesBiNN(marked(), train_set_size=5, momentum=1.0)
    with pytest.raises(TypeError, match="mark_binary"):
        mark_binary(torch.nn.ReLU())
    opt = BayesBiNN(marked(), train_set_size=5, num_samples=2)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


@pytest.mark.parametrize("which", ["md_tanh", "md_softmax", "bayesbinn"])
def test_state_dict_round_trip_continues_identically(which):
    x, y, w0 = problem(seed=5)

    def make(p):
        if which == "md_tanh":
            return MDTanh(mark_binary(p), lr=0.05, beta=1.5, beta_growth=1.2, beta_every=2, adam=True)
        if which == "md_softmax":
            return MDSoftmax(mark_binary(p), levels=(-1, 0, 1), lr=0.05, beta=1.5, beta_growth=1.2, adam=True)
        return BayesBiNN(mark_binary(p), lr=1e-3, train_set_size=100, tau=0.5, momentum=0.9,
                         generator=torch.Generator().manual_seed(0))

    def steps(p, opt, n):
        for _ in range(n):
            opt.zero_grad()
            loss_fn(p, x, y).backward()
            opt.step()

    a = torch.nn.Parameter(w0.clone())
    opt_a = make(a)
    steps(a, opt_a, 3)
    b = torch.nn.Parameter(a.detach().clone())
    opt_b = make(b)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))   # state_dict() holds references
    if which == "bayesbinn":
        opt_b.generator.set_state(opt_a.generator.get_state())
    steps(a, opt_a, 3)
    steps(b, opt_b, 3)
    assert torch.equal(a.detach(), b.detach())
    assert opt_a.param_groups[0].get("beta") == opt_b.param_groups[0].get("beta")
