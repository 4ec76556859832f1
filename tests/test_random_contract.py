"""One random-number contract: on one device, the same generator state gives the same sample from
every layer-1 function on every path: the fused kernels or PyTorch operators, any layout and
``dim``, float32/float64/bfloat16, eager or ``torch.compile``.

Samples computed in different floating-point arithmetic (float32 against float64, kernel against
PyTorch in float32) can differ where a row's uniform number falls within rounding of a category
boundary: about n·1e-7 per row in float32, so the allowance of one row in several thousand below
is hardly ever used; in float64 none is allowed.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import quasigrad
from quasigrad import bernoulli
from quasigrad.estimators import _native, _streams

HAS_KERNELS = _native.available()

CAT = {
    "st": quasigrad.st,
    "st_tau": lambda x, **k: quasigrad.st(x, tau=0.5, **k),
    "reinmax": quasigrad.reinmax,
    "reinmax_tau": lambda x, **k: quasigrad.reinmax(x, tau=2.0, **k),
    "zgr": quasigrad.zgr,
    "darn": quasigrad.darn,
    "gapped_st": quasigrad.gapped_st,
    "stgs": lambda x, **k: quasigrad.gumbel_softmax(x, tau=0.5, hard=True, **k),
    "gumbel_softmax": lambda x, **k: quasigrad.gumbel_softmax(x, tau=0.5, **k),
    "gumbel_rao": lambda x, **k: quasigrad.gumbel_rao(x, tau=0.5, k=3, **k),
}
BERN = {name: registry_fn for name, registry_fn in (
    ("st", bernoulli.st), ("reinmax", bernoulli.reinmax), ("zgr", bernoulli.zgr), ("darn", bernoulli.darn),
    ("gapped_st", bernoulli.gapped_st), ("stgs", lambda a, **k: bernoulli.gumbel_softmax(a, hard=True, **k)),
    ("gumbel_rao", bernoulli.gumbel_rao))}


def _x(shape=(2000, 10), dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * 2).to(torch.bfloat16).to(dtype)   # exact in every dtype
    x[..., 3] = float("-inf")
    return x


def _sample(fn, x, dim=-1, seed=7):
    return fn(x, dim=dim, generator=torch.Generator().manual_seed(seed)).argmax(dim)


def test_every_function_gives_the_sample_of_sample_categorical():
    x = _x()
    ref = quasigrad.sample_categorical(x, generator=torch.Generator().manual_seed(7))
    for name, fn in CAT.items():
        assert torch.equal(_sample(fn, x), ref), name


@pytest.mark.skipif(not HAS_KERNELS, reason="no fused kernels to compare with")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_and_pytorch_path_give_the_same_samples_and_gradients(dtype):
    x = _x(dtype=dtype)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    for name, fn in CAT.items():
        outs = []
        for kernels in (True, False):
            xx = x.clone().requires_grad_(True)
            gen = torch.Generator().manual_seed(7)
            if kernels:
                y = [fn(xx, generator=gen), fn(xx, generator=gen)]    # two calls: the generator
            else:                                                      # advances alike
                with _native._disabled():
                    y = [fn(xx, generator=gen), fn(xx, generator=gen)]
            (sum(y) * g).sum().backward()
            outs.append(([t.detach() for t in y], xx.grad))
        (ya, ga), (yb, gb) = outs
        for a, b in zip(ya, yb):
            mismatch = int((a.argmax(-1) != b.argmax(-1)).sum())
            assert mismatch <= (1 if dtype == torch.float32 else 0), name
        if dtype == torch.float64:
            for a, b in zip(ya, yb):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-12)


FNS = ("st", "zgr", "gumbel_softmax", "gumbel_rao", "sample_categorical")
SUBPROCESS = """
import json, sys, torch, quasigrad
x = torch.load(sys.argv[1])
out = {}
for fn in %r:
    y = getattr(quasigrad, fn)(x, generator=torch.Generator().manual_seed(7))
    out[fn] = (y if fn == "sample_categorical" else y.argmax(-1)).tolist()
print(json.dumps(out))
""" % (FNS,)


@pytest.mark.skipif(not HAS_KERNELS, reason="no fused kernels to compare with")
def test_a_process_without_kernels_draws_the_same(tmp_path):
    x = _x((300, 6))
    torch.save(x, tmp_path / "x.pt")
    env = {**os.environ, "QUASIGRAD_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", SUBPROCESS, str(tmp_path / "x.pt")], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    theirs = json.loads(out.stdout)
    for fn in FNS:
        y = getattr(quasigrad, fn)(x, generator=torch.Generator().manual_seed(7))
        ours = y if fn == "sample_categorical" else y.argmax(-1)
        assert ours.tolist() == theirs[fn], fn


@pytest.mark.parametrize("name", list(CAT))
def test_layout_and_dim_do_not_change_the_sample(name):
    fn = CAT[name]
    x = _x((40, 3, 10))
    ref = _sample(fn, x)                                         # contiguous, categories last
    transposed = x.transpose(0, 2).contiguous().transpose(0, 2)  # the same values, other memory
    assert torch.equal(_sample(fn, transposed), ref)
    moved = x.movedim(-1, 1).contiguous()                        # categories along dim 1
    assert torch.equal(_sample(fn, moved, dim=1), ref)
    wide = torch.zeros(40, 3, 20, dtype=x.dtype)
    wide[..., ::2] = x                                           # a strided view
    assert torch.equal(_sample(fn, wide[..., ::2]), ref)
    # the same values transposed and back
    flat = x.reshape(-1, 10)
    assert torch.equal(_sample(fn, flat.t().contiguous().t()), _sample(fn, flat))


@pytest.mark.parametrize("name", list(CAT))
def test_dtypes_give_the_same_sample(name):
    fn = CAT[name]
    x = _x((3000, 10))
    ref = _sample(fn, x)
    for dtype in (torch.float32, torch.bfloat16):
        assert int((_sample(fn, x.to(dtype)) != ref).sum()) <= 1, dtype


@pytest.mark.parametrize("name", list(BERN))
def test_bernoulli_sample_is_the_twin_sample(name):
    # b = 1 exactly when the categorical twin [0, a] draws category 1 from the same row uniform
    a = (torch.randn(500, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2)
    b = BERN[name](a, generator=torch.Generator().manual_seed(5))
    twin = torch.stack([torch.zeros_like(a), a], -1)
    ref = quasigrad.sample_categorical(twin, generator=torch.Generator().manual_seed(5))
    assert torch.equal(b.detach(), ref.to(b.dtype))
    with _native._disabled():
        assert torch.equal(BERN[name](a, generator=torch.Generator().manual_seed(5)).detach(), b.detach())
    assert torch.equal(BERN[name](a.float(), generator=torch.Generator().manual_seed(5)).detach().double(), b.detach())


def _model(x, w, gen):
    a = quasigrad.st(x, generator=gen)
    b = quasigrad.zgr(x * 2.0, generator=gen)
    c = quasigrad.gumbel_softmax(x, tau=0.5, hard=True, generator=gen)
    d = quasigrad.gumbel_rao(x, k=3, generator=gen)
    return torch.stack([a, b, c, d]), ((a + b + c + d) * w).sum()


def _run(model, x, w):
    xx = x.clone().requires_grad_(True)
    y, loss = model(xx, w, torch.Generator().manual_seed(3))
    loss.backward()
    return y.detach(), loss.detach(), xx.grad


@pytest.mark.skipif(not HAS_KERNELS, reason="no fused kernels to put in the graph")
def test_compiled_graph_keeps_the_fused_operators_and_gives_the_eager_result():
    from torch._dynamo.testing import AotEagerAndRecordGraphs

    torch._dynamo.reset()
    x, w = torch.randn(16, 7), torch.randn(16, 7)
    rec = AotEagerAndRecordGraphs()
    y, loss, grad = _run(torch.compile(_model, backend=rec), x, w)
    y0, loss0, grad0 = _run(_model, x, w)
    assert torch.equal(y, y0) and torch.equal(grad, grad0)

    def ops(graphs):
        return {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"
                and str(n.target).startswith("quasigrad.")}
    assert {"quasigrad.categorical.default", "quasigrad.gumbel_softmax.default",
            "quasigrad.gumbel_rao.default"} <= ops(rec.fw_graphs)
    assert {"quasigrad.categorical_backward.default", "quasigrad.gumbel_softmax_backward.default",
            "quasigrad.gumbel_rao_backward.default"} <= ops(rec.bw_graphs)


@pytest.mark.slow
def test_inductor_gives_the_eager_samples_and_gradients():
    torch._dynamo.reset()
    x, w = torch.randn(16, 7), torch.randn(16, 7)
    y, loss, grad = _run(torch.compile(_model), x, w)
    y0, loss0, grad0 = _run(_model, x, w)
    assert torch.equal(y, y0) and torch.equal(grad, grad0)
    torch.testing.assert_close(loss, loss0)
    # bfloat16 runs PyTorch's operators, compiled by inductor: the same random streams
    xb = x.bfloat16()
    sample = torch.compile(lambda v, gen: quasigrad.st(v, generator=gen).argmax(-1))
    assert torch.equal(sample(xb, torch.Generator().manual_seed(1)),
                       quasigrad.st(xb, generator=torch.Generator().manual_seed(1)).argmax(-1))


def test_eager_seed_is_the_seed_every_path_draws():
    # _streams.seed_int (the eager CPU calls' seed, drawn into a reused tensor) consumes the
    # generator as draw_seed does and gives the same 64-bit value, with a generator and without
    for make in (lambda: torch.Generator().manual_seed(123), lambda: None):
        torch.manual_seed(9)
        g = make()
        fast = [_streams.seed_int(g) for _ in range(50)]
        torch.manual_seed(9)
        g = make()
        slow = [_streams.seed_value(_streams.draw_seed(g, "cpu")) for _ in range(50)]
        assert fast == slow and len(set(fast)) == 50


def test_eager_seed_works_in_and_out_of_inference_mode():
    # the reused seed tensor is made outside inference mode even when the first draw of a thread
    # happens inside it (an inference tensor could not be written outside it afterwards)
    script = """
import torch, quasigrad
x = torch.randn(5, 4)
with torch.inference_mode():
    a = quasigrad.st(x, generator=torch.Generator().manual_seed(0))
b = quasigrad.st(x.requires_grad_(), generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    c = quasigrad.st(x.detach(), generator=torch.Generator().manual_seed(0))
assert torch.equal(a, b.detach()) and torch.equal(a, c)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
