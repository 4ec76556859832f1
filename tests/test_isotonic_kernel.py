"""The PAV kernel (quasigrad/estimators/_isotonic.c, the operator quasigrad::isotonic) against the
PyTorch implementation of quasigrad.sort: values, blocks and gradients, l2 and KL, float32 and
float64, ties, broadcast rows; and soft sort/rank through it against the PyTorch path."""

import pytest
import torch

from quasigrad import sort as qs
from quasigrad.estimators import _native
from quasigrad.sort import isotonic as iso

pytestmark = pytest.mark.skipif(not _native.available(), reason=f"no fused kernels: {_native.status()}")

REGS = ["l2", "kl"]
DTYPES = [torch.float32, torch.float64]


def _tol(dtype, scale=1.0):
    return dict(rtol=2e-5 if dtype == torch.float32 else 1e-12, atol=(1e-5 if dtype == torch.float32 else 1e-12) * scale)


def _rank_problem(b, n, eps, reg, dtype, seed, ties=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, generator=gen, dtype=torch.float64)
    if ties:
        x = torch.randint(0, 4, (b, n), generator=gen).double()      # many equal values, exact sums
    s = (x / eps).sort(-1, descending=True).values.to(dtype)
    rho = torch.arange(n, 0, -1, dtype=dtype)
    return s, (rho if reg == "l2" else torch.log(rho))


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,n,eps", [(1, 1, 1.0), (5, 2, 0.5), (7, 37, 0.1), (3, 300, 1.0), (2, 1000, 10.0)])
def test_values_blocks_and_gradients_match_pytorch(reg, dtype, b, n, eps):
    s, w = _rank_problem(b, n, eps, reg, dtype, seed=n)
    v, starts = _native.isotonic(s, w, iso._REG[reg])
    ref_starts = iso._blocks_torch(s, w, reg)
    assert torch.equal(starts.bool(), ref_starts)
    ref = iso._isotonic_torch(s, w, reg)
    torch.testing.assert_close(v, ref, **_tol(dtype, scale=n))
    assert (v[:, :-1] >= v[:, 1:]).all()                     # decreasing
    # gradients with respect to both inputs (w as full rows here)
    s1, w1 = s.clone().requires_grad_(True), w.expand_as(s).clone().requires_grad_(True)
    s2, w2 = s.clone().requires_grad_(True), w.expand_as(s).clone().requires_grad_(True)
    g = torch.randn(s.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    ga = torch.autograd.grad((torch.ops.quasigrad.isotonic(s1, w1, iso._REG[reg])[0] * g).sum(), (s1, w1))
    gb = torch.autograd.grad((iso._isotonic_torch(s2, w2, reg) * g).sum(), (s2, w2))
    for a, c in zip(ga, gb):
        torch.testing.assert_close(a, c, **_tol(dtype))


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_give_the_same_blocks_and_gradients(reg, dtype):
    # equal adjacent values: only a strict violation merges, on both paths
    s, w = _rank_problem(6, 50, 1.0, reg, dtype, seed=3, ties=True)
    v, starts = _native.isotonic(s, w, iso._REG[reg])
    assert torch.equal(starts.bool(), iso._blocks_torch(s, w, reg))
    torch.testing.assert_close(v, iso._isotonic_torch(s, w, reg), **_tol(dtype, scale=50))
    x = torch.tensor([[3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 0.0]], dtype=dtype)
    for fn in (qs.soft_rank, qs.soft_sort):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya = fn(xa, regularization=reg)
        with _native._disabled():
            yb = fn(xb, regularization=reg)
        torch.testing.assert_close(ya, yb, **_tol(dtype))
        g = torch.arange(7, dtype=dtype)
        torch.testing.assert_close(torch.autograd.grad((ya * g).sum(), xa)[0], torch.autograd.grad((yb * g).sum(), xb)[0],
                                   **_tol(dtype))


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", ["soft_rank", "soft_sort"])
def test_soft_sort_and_rank_through_the_kernel_equal_the_pytorch_path(reg, dtype, fn):
    f = getattr(qs, fn)
    x = torch.randn(9, 4, 60, generator=torch.Generator().manual_seed(2), dtype=dtype)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    for kw in ({"regularization_strength": 0.3}, {"regularization_strength": 3.0, "descending": True, "dim": 1}):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya = f(xa, regularization=reg, **kw)
        with _native._disabled():
            yb = f(xb, regularization=reg, **kw)
        torch.testing.assert_close(ya, yb, **_tol(dtype, scale=60))
        torch.testing.assert_close(torch.autograd.grad((ya * g).sum(), xa)[0], torch.autograd.grad((yb * g).sum(), xb)[0],
                                   **_tol(dtype))


def test_kernel_is_called_and_published_values_hold(monkeypatch):
    calls = []
    real = _native.isotonic
    monkeypatch.setattr(_native, "isotonic", lambda *a, **k: calls.append(1) or real(*a, **k))
    # Blondel et al. (2020) / torchsort's README values
    x = torch.tensor([[8.0, 0.0, 5.0, 3.0, 2.0, 1.0, 6.0, 7.0, 9.0]])
    torch.testing.assert_close(qs.soft_rank(x, regularization_strength=1.0), x.argsort().argsort().float() + 1)
    torch.testing.assert_close(qs.soft_rank(x, regularization_strength=0.001), x.argsort().argsort().float() + 1)
    torch.testing.assert_close(qs.soft_sort(torch.tensor([5.0, 1.0, 2.0]), regularization_strength=1.0),
                               torch.tensor([5.0 / 3, 8.0 / 3, 11.0 / 3]))
    assert len(calls) == 3


def test_compiled_soft_rank_keeps_the_isotonic_operator():
    from torch._dynamo.testing import AotEagerAndRecordGraphs

    torch._dynamo.reset()
    rec = AotEagerAndRecordGraphs()
    x = torch.randn(4, 30, requires_grad=True)
    out = torch.compile(lambda v: qs.soft_rank(v, regularization_strength=0.5), backend=rec)(x)
    out.sum().backward()
    names = {str(n.target) for g in rec.fw_graphs + rec.bw_graphs for n in g.graph.nodes if n.op == "call_function"}
    assert "quasigrad.isotonic.default" in names and "quasigrad.isotonic_backward.default" in names
    torch.testing.assert_close(out, qs.soft_rank(x, regularization_strength=0.5))


def test_broadcast_rows_are_read_once():
    # soft sort passes ρ/ε as one row for every row of w, soft rank passes ρ as one row for every s
    s, w = _rank_problem(5, 40, 1.0, "l2", torch.float64, seed=4)
    v1, _ = _native.isotonic(s, w, 0)
    v2, _ = _native.isotonic(s, w.expand_as(s).contiguous(), 0)
    v3, _ = _native.isotonic(w.expand_as(s), s, 0)
    v4, _ = _native.isotonic(w.expand_as(s).contiguous(), s, 0)
    assert torch.equal(v1, v2) and torch.equal(v3, v4)
