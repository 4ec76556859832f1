"""Every row of docs/migration.md: the quasigrad equivalent of a function people use today gives
the same values and gradients as the peer (on the same noise or the same draw) where the peer is
installed, and as the peer's formula (written out here from its public code) otherwise."""

import importlib.util
import inspect
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import quasigrad
import quasigrad.quant as qq
from quasigrad import distributions as QD
from quasigrad import sort as qs

ROOT = Path(__file__).resolve().parents[1]


def _keyword_only(fn, name):
    return inspect.signature(fn).parameters[name].kind is inspect.Parameter.KEYWORD_ONLY


# ---------------------------------------------------------------------------------------------
# torch.nn.functional.gumbel_softmax


def _torch_gumbel_softmax_with_noise(monkeypatch, logits, noise, **kwargs):
    """PyTorch's own function, its Exp(1) draw replaced by exp(−noise) so that its Gumbel noise
    −log E is ``noise``."""
    def exponential_(self, *args, **kw):
        return self.copy_(torch.exp(-noise))

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "exponential_", exponential_)
        return F.gumbel_softmax(logits, **kwargs)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_gumbel_softmax_equals_torch_on_the_same_noise(monkeypatch, tau, hard):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    g = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    ours_in = theta.clone().requires_grad_()
    ours = quasigrad.gumbel_softmax(ours_in, tau=tau, hard=hard, generator=torch.Generator().manual_seed(5))
    (ours * g).sum().backward()
    # the noise quasigrad drew, up to a constant per row (which softmax ignores): tau log y_soft - theta
    soft = quasigrad.gumbel_softmax(theta, tau=tau, hard=False, generator=torch.Generator().manual_seed(5))
    noise = tau * soft.log() - theta
    peer_in = theta.clone().requires_grad_()
    peer = _torch_gumbel_softmax_with_noise(monkeypatch, peer_in, noise, tau=tau, hard=hard)
    (peer * g).sum().backward()
    torch.testing.assert_close(ours, peer, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ours_in.grad, peer_in.grad, rtol=1e-10, atol=1e-12)


def test_gumbel_softmax_takes_torchs_positional_signature():
    if _keyword_only(quasigrad.gumbel_softmax, "tau"):
        pytest.skip("this build's gumbel_softmax takes tau and hard by keyword only")
    theta = torch.randn(3, 4)
    a = quasigrad.gumbel_softmax(theta, 0.5, True, 1e-10, -1, generator=torch.Generator().manual_seed(1))
    b = quasigrad.gumbel_softmax(theta, tau=0.5, hard=True, dim=-1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# torch.distributions.OneHotCategoricalStraightThrough and the ST trick with a temperature


def test_onehot_straight_through_equals_torch_on_torchs_draw():
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    g = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    peer_in = theta.clone().requires_grad_()
    d = torch.distributions.OneHotCategoricalStraightThrough(logits=peer_in).rsample()
    (d * g).sum().backward()
    ours_in = theta.clone().requires_grad_()
    ours = quasigrad.st(ours_in, index=d.detach().argmax(-1))
    (ours * g).sum().backward()
    assert torch.equal(ours, d.detach())
    torch.testing.assert_close(ours_in.grad, peer_in.grad)
    # the distribution class, on its own draw, against PyTorch's rule D + (π − sg(π))
    q_in = theta.clone().requires_grad_()
    z = QD.OneHotCategorical(logits=q_in, estimator="st", generator=gen).rsample()
    (z * g).sum().backward()
    p_in = theta.clone().requires_grad_()
    pi = torch.softmax(p_in, -1)
    ((z.detach() + pi - pi.detach()) * g).sum().backward()
    torch.testing.assert_close(q_in.grad, p_in.grad)


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_st_temperature_is_the_gradient_of_softmax_over_tau(tau):
    # y_hard + softmax(θ/τ) − sg(softmax(θ/τ)): the 1/τ comes with the surrogate
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    g = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    ours_in = theta.clone().requires_grad_()
    y = quasigrad.st(ours_in, tau=tau, generator=gen)
    (y * g).sum().backward()
    trick_in = theta.clone().requires_grad_()
    soft = torch.softmax(trick_in / tau, -1)
    ((y.detach() + soft - soft.detach()) * g).sum().backward()
    torch.testing.assert_close(ours_in.grad, trick_in.grad)


# ---------------------------------------------------------------------------------------------
# the reinmax package: reinmax(logits, tau) -> (y_hard, y_soft)


def _reinmax_peer_gradient(theta, d, tau, g_hard, g_soft):
    """The reinmax package's backward, written out: 2 J(π₁) g − ½ J(π) g + J(π) g_soft with
    π₁ = ½(softmax(θ/τ) + D), centred."""
    def jvp(q, v):
        return q * (v - (q * v).sum(-1, keepdim=True))

    pi = torch.softmax(theta, -1)
    pi1 = 0.5 * (torch.softmax(theta / tau, -1) + d)
    out = jvp(pi1, 2 * g_hard) + jvp(pi, -0.5 * g_hard + g_soft)
    return out - out.mean(-1, keepdim=True)


@pytest.mark.parametrize("tau", [1.0, 1.5, 3.0])
def test_reinmax_pair_equals_the_reinmax_package(tau):
    gen = torch.Generator().manual_seed(3)
    theta = torch.randn(6, 5, dtype=torch.float64, generator=gen)
    g_hard, g_soft = torch.randn(2, 6, 5, dtype=torch.float64, generator=gen)
    if importlib.util.find_spec("reinmax") is not None:
        from reinmax import reinmax as peer_reinmax
        peer_in = theta.clone().requires_grad_()
        y_hard, y_soft = peer_reinmax(peer_in, tau)
        ((y_hard * g_hard).sum() + (y_soft * g_soft).sum()).backward()
        d, expect = y_hard.detach(), peer_in.grad
    else:
        d = quasigrad.reinmax(theta, tau=tau, generator=gen).detach()
        expect = _reinmax_peer_gradient(theta, d, tau, g_hard, g_soft)
    ours_in = theta.clone().requires_grad_()
    y_hard = quasigrad.reinmax(ours_in, tau=tau, index=d.argmax(-1))
    y_soft = ours_in.softmax(-1)
    ((y_hard * g_hard).sum() + (y_soft * g_soft).sum()).backward()
    assert torch.equal(y_hard.detach(), d)
    torch.testing.assert_close(ours_in.grad, expect, rtol=1e-9, atol=1e-12)
    # and the written-out rule agrees with the package's (or, without it, checks quasigrad's)
    torch.testing.assert_close(_reinmax_peer_gradient(theta, d, tau, g_hard, g_soft), expect, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# torchsort and fast-soft-sort: the formulas of their public code, with a plain PAV


def _isotonic(s, w, reg):
    """argmin over v₁ ≥ … ≥ vₙ of ½‖v − (s − w)‖² (l2) or ⟨e^{s−v}, 1⟩ + ⟨e^w, v⟩ (kl), by pool
    adjacent violators on a stack; block values are differentiable in s and w."""
    def value(a, b):
        if reg == "l2":
            return (s[a:b] - w[a:b]).mean()
        return torch.logsumexp(s[a:b], 0) - torch.logsumexp(w[a:b], 0)

    blocks = []
    for i in range(len(s)):
        blocks.append((i, i + 1))
        while len(blocks) > 1 and value(*blocks[-2]).item() < value(*blocks[-1]).item():
            (a, _), (_, b) = blocks.pop(-2), blocks.pop()
            blocks.append((a, b))
    return torch.cat([value(a, b).expand(b - a) for a, b in blocks])


def _peer_soft_rank(theta, reg, eps, descending=False):
    """torchsort.soft_rank / fast-soft-sort SoftRank: projection of ±θ/ε onto the permutahedron of (n, …, 1)."""
    z = (-theta if descending else theta) / eps
    n = len(z)
    rho = torch.arange(n, 0, -1, dtype=z.dtype)
    s, perm = z.sort(descending=True)
    primal = s - _isotonic(s, rho, "l2") if reg == "l2" else torch.exp(s - _isotonic(s, rho.log(), "kl"))
    return torch.zeros_like(primal).scatter(0, perm, primal)


def _peer_soft_sort(theta, reg, eps, descending=False, fast_soft_sort=False):
    """torchsort.soft_sort (w = ρ/ε) or fast-soft-sort's SoftSort (w = arange(n)[::-1] + 1/ε)."""
    n = len(theta)
    if fast_soft_sort:
        w = torch.arange(n - 1, -1, -1, dtype=theta.dtype) + 1 / eps
    else:
        w = torch.arange(n, 0, -1, dtype=theta.dtype) / eps
    sign = 1.0 if descending else -1.0
    s, _ = (sign * theta).sort(descending=True)
    return sign * (w - _isotonic(w, s, reg))


def _rows(fn, x, *args, **kw):
    return torch.stack([fn(row, *args, **kw) for row in x])


def _compare(ours_fn, peer_fn, x):
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, peer = ours_fn(a), peer_fn(b)
    weight = torch.randn(ours.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours, peer, rtol=1e-10, atol=1e-10)
    (ours * weight).sum().backward()
    (peer * weight).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10)


VALUES = torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_soft_rank_equals_torchsort_and_fast_soft_sort(reg, eps, descending):
    _compare(lambda x: qs.soft_rank(x, regularization=reg, regularization_strength=eps, descending=descending),
             lambda x: _rows(_peer_soft_rank, x, reg, eps, descending), VALUES)
    if importlib.util.find_spec("torchsort") is not None and not descending:
        import torchsort
        torch.testing.assert_close(qs.soft_rank(VALUES, regularization=reg, regularization_strength=eps),
                                   torchsort.soft_rank(VALUES, regularization=reg, regularization_strength=eps))


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_soft_sort_equals_torchsort(reg, eps, descending):
    _compare(lambda x: qs.soft_sort(x, regularization=reg, regularization_strength=eps, descending=descending),
             lambda x: _rows(_peer_soft_sort, x, reg, eps, descending), VALUES)
    if importlib.util.find_spec("torchsort") is not None and not descending:
        import torchsort
        torch.testing.assert_close(qs.soft_sort(VALUES, regularization=reg, regularization_strength=eps),
                                   torchsort.soft_sort(VALUES, regularization=reg, regularization_strength=eps))


@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_fast_soft_sort_soft_sort_ignores_its_strength(reg, eps):
    # fast-soft-sort computes arange(n)[::-1] + 1/ε: a shift of w, which the isotonic solution
    # follows, so its soft sort is quasigrad's (and torchsort's) at strength 1 whatever ε is
    _compare(lambda x: qs.soft_sort(x, regularization=reg, regularization_strength=1.0),
             lambda x: _rows(_peer_soft_sort, x, reg, eps, fast_soft_sort=True), VALUES)
    if eps != 1.0:
        differs = qs.soft_sort(VALUES, regularization=reg, regularization_strength=eps)
        assert not torch.allclose(differs, qs.soft_sort(VALUES, regularization=reg, regularization_strength=1.0))


def test_soft_sort_and_rank_take_torchsorts_positional_order():
    if _keyword_only(qs.soft_rank, "regularization"):
        pytest.skip("this build's soft_rank takes regularization by keyword only")
    for fn in (qs.soft_rank, qs.soft_sort):
        assert torch.equal(fn(VALUES, "kl", 0.5), fn(VALUES, regularization="kl", regularization_strength=0.5))


# ---------------------------------------------------------------------------------------------
# NeuralSort's reference code (ermongroup/neuralsort, pytorch/neuralsort.py)


def _peer_neural_sort(scores, tau, hard):
    """P̂[b, i, :] = softmax(((n + 1 − 2i) s − A 1)/τ) with i = 1..n, rows picking the i-th largest;
    hard: one-hot of each row's argmax, straight through."""
    n = scores.shape[1]
    s = scores.unsqueeze(-1)                                          # (B, n, 1)
    a1 = (s - s.transpose(1, 2)).abs().sum(-1)                        # (B, n): Σ_k |s_j − s_k|
    scaling = n + 1 - 2 * torch.arange(1, n + 1, dtype=scores.dtype)  # (n,)
    logits = scaling.view(1, n, 1) * scores.unsqueeze(1) - a1.unsqueeze(1)
    p_hat = torch.softmax(logits / tau, -1)
    if hard:
        p = F.one_hot(p_hat.argmax(-1), n).to(p_hat.dtype)
        p_hat = (p - p_hat).detach() + p_hat
    return p_hat


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_neural_sort_equals_the_reference_code_when_descending(tau, hard):
    scores = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    _compare(lambda x: qs.neural_sort(x, tau=tau, descending=True, hard=hard).flatten(1),
             lambda x: _peer_neural_sort(x, tau, hard).flatten(1), scores)
    # ascending (quasigrad's default) is the reference code on −scores
    torch.testing.assert_close(qs.neural_sort(scores, tau=tau), _peer_neural_sort(-scores, tau, False))


# ---------------------------------------------------------------------------------------------
# torch.fake_quantize_per_tensor_affine


@pytest.mark.parametrize("args", [(0.05, 0, -128, 127), (0.1, 3, 0, 15), (0.02, -2, -8, 7)])
def test_fake_quantize_equals_torch(args):
    x = torch.linspace(-10, 10, 2001)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = qq.fake_quantize(a, *args)
    peer = torch.fake_quantize_per_tensor_affine(b, *args)
    assert torch.equal(ours, peer)
    ours.sum().backward()
    peer.sum().backward()
    assert torch.equal(a.grad, b.grad)


# ---------------------------------------------------------------------------------------------
# RBM weight layout of the Gibbs-with-gradients reference code (W shaped (hidden, visible))


def test_rbm_takes_the_transpose_of_an_nn_linear_weight():
    gen = torch.Generator().manual_seed(7)
    w_hv = torch.randn(3, 5, dtype=torch.float64, generator=gen)       # (hidden, visible), as nn.Linear(5, 3)
    b_v, b_h = torch.randn(5, dtype=torch.float64, generator=gen), torch.randn(3, dtype=torch.float64, generator=gen)
    v = torch.randint(0, 2, (8, 5), generator=gen).double()
    peer = F.softplus(v @ w_hv.t() + b_h).sum(-1) + v @ b_v
    rbm = quasigrad.samplers.RBM(w_hv.t(), b_v, b_h)                   # quasigrad: (visible, hidden)
    torch.testing.assert_close(rbm.log_prob(v), peer)


# ---------------------------------------------------------------------------------------------
# the page itself


def test_migration_page_lists_every_peer_and_its_code_runs():
    text = (ROOT / "docs" / "migration.md").read_text()
    for peer in ("torch.nn.functional.gumbel_softmax", "OneHotCategoricalStraightThrough", "reinmax", "torchsort",
                 "fast-soft-sort", "NeuralSort", "torch.fake_quantize_per_tensor_affine", "RBM"):
        assert peer in text, peer
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 7
    namespace = {}
    exec(compile("\n".join(blocks), "docs/migration.md", "exec"), namespace)
