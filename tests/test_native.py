"""The fused CPU kernels (quasigrad/estimators/_kernels.c) against the PyTorch computations they
stand for, and the properties of their outputs.

Where no C compiler exists the kernels cannot load and these tests are skipped (the PyTorch path
is tested everywhere else); on this project's machines one does, so they run.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
from scipy import stats

import quasigrad
from quasigrad.estimators import _buffers, _eager, _native, _ops, _streams

pytestmark = pytest.mark.skipif(not _native.available(), reason=f"no fused kernels: {_native.status()}")

EST = {"st": quasigrad.st, "reinmax": quasigrad.reinmax, "zgr": quasigrad.zgr, "darn": quasigrad.darn,
       "gst": quasigrad.gapped_st}
MODES = {"st": _native.ST, "zgr": _native.ZGR, "darn": _native.DARN, "gst": _native.GST}
SIZES = [2, 3, 7, 8, 9, 16, 17, 64, 1000]


def _logits(shape, dtype, seed, masked=True, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    if masked and shape[-1] > 2:
        x[..., 1::3] = float("-inf")   # masked categories, never all of a row
    return x


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", SIZES)
def test_sample_gives_one_hot_row_max_and_no_masked_category(dtype, n):
    x = _logits((37, n), dtype, n)
    d, index, row_max, bad = _native.sample(x, 12345)
    assert bad == 0
    assert torch.equal(row_max, x.amax(-1))
    assert torch.equal(d, torch.nn.functional.one_hot(index, n).to(dtype))
    assert (torch.softmax(x, -1).gather(-1, index[:, None]) > 0).all()   # never a masked category


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", SIZES)
def test_sample_equals_the_pytorch_draw(dtype, n):
    # the same row uniforms: the same sample, bar a rounding tie at a category boundary (about
    # n·1e-7 per row in float32, so the allowance of one row in 3,000 is hardly ever used)
    x = _logits((3000, n), dtype, 3 * n)
    seed = torch.tensor(-987654321, dtype=torch.int64)
    _, index, _, _ = _native.sample(x, _streams.seed_value(seed))
    _, ref, _ = _ops._categorical_ref(x, seed, -1)
    assert (index != ref).sum() <= (1 if dtype == torch.float32 else 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("n", SIZES)
def test_backward_matches_its_formula(mode, n, dtype):
    x = _logits((23, n), dtype, 7 * n)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(n), dtype=dtype)
    _, index, row_max, _ = _native.sample(x, 2)
    out = _native.backward(MODES[mode], g, x, row_max, index, math.exp(-1.0))
    ref = _ops.categorical_backward_ref(MODES[mode], g.double(), x.double(), row_max.double(), index, math.exp(-1.0))
    torch.testing.assert_close(out.double(), ref, **_tol(dtype))
    assert (out[torch.isneginf(x)] == 0).all()   # masked categories get no gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [1.0, 0.3, 2.5])
@pytest.mark.parametrize("n", [2, 5, 8, 13, 64, 300])
def test_gumbel_kernel_matches_pytorch(n, tau, dtype):
    x = _logits((41, n), dtype, 5 * n)
    seed = torch.tensor(424242, dtype=torch.int64)
    s = _streams.seed_value(seed)
    y, d, index, bad = _native.gumbel(x, s, _streams.noise_key(s), tau, True)
    y_ref, i_ref = _ops._gumbel_ref(x, seed, None, tau, -1)
    assert bad == 0 and (index != i_ref).sum() <= (1 if dtype == torch.float32 else 0)
    same = index == i_ref
    torch.testing.assert_close(y[same], y_ref[same], rtol=2e-5 if dtype == torch.float32 else 1e-10, atol=1e-7)
    assert torch.equal(d, torch.nn.functional.one_hot(index, n).to(dtype))
    assert torch.equal(y.argmax(-1), index)          # the noise is conditioned on the sample
    assert (y[torch.isneginf(x)] == 0).all()
    # with the sample given: the same noise, conditioned on it
    y2, _, index2, _ = _native.gumbel(x, s, _streams.noise_key(s), tau, False, index)
    assert torch.equal(index2, index) and torch.equal(y2, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 7, 10, 37, 64])   # from 32 on, -log U is taken in a pass of its own
def test_gumbel_rao_backward_kernel_matches_pytorch(n, dtype):
    x = _logits((19, n), dtype, n, masked=n > 2)
    seed = torch.tensor(77, dtype=torch.int64)
    index = quasigrad.sample_categorical(x, generator=torch.Generator().manual_seed(1))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    for tau, k in ((1.0, 5), (0.4, 33)):
        out = _native.gumbel_rao_backward(x, index, g, _streams.noise_key(_streams.seed_value(seed)), tau, k)
        ref = _ops.gumbel_rao_grad(x.double(), index, g.double(), seed, tau, k)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_kernel_matches_pytorch(dtype):
    seed = torch.tensor(-5, dtype=torch.int64)
    u = _native.uniform(_streams.seed_value(seed), 10001, dtype)
    assert torch.equal(u, _streams.row_uniforms(seed, (10001,), dtype))
    assert 0 <= float(u.min()) and float(u.max()) < 1


@pytest.mark.parametrize("n", [10, 67])       # rows drawn by blocks of rows (8 to 15) and one by one
@pytest.mark.parametrize("variant", ["generic", "avx2", "avx512"])
def test_every_cpu_target_draws_the_same_and_agrees(variant, n):
    # The build for another target (generic vector code, AVX2 + FMA, AVX-512) against the one in
    # use: the same uniform numbers, so the same draws (bar a rounding tie, at most one row in
    # 4,000) and the same gradients and relaxed samples to float32 rounding.
    kernels = _native._load()
    if variant not in kernels.supported:
        pytest.skip(f"this CPU cannot run the {variant} kernels")
    x = _logits((4000, n), torch.float32, 11)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    ref_d, ref_index, ref_max, _ = _native.sample(x, 6)
    ref_y = _native.gumbel(x, 6, 7, 0.5, False, ref_index)[0]
    with _native._variant(variant):
        d, index, row_max, bad = _native.sample(x, 6)
        outs = {m: _native.backward(code, g, x, ref_max, ref_index, 0.3) for m, code in MODES.items()}
        y = _native.gumbel(x, 6, 7, 0.5, False, ref_index)[0]
    assert bad == 0 and torch.equal(row_max, ref_max)
    assert (index != ref_index).sum() <= 1
    for m, code in MODES.items():
        torch.testing.assert_close(outs[m], _native.backward(code, g, x, ref_max, ref_index, 0.3), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, ref_y, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(EST))
@pytest.mark.parametrize("n", SIZES)
def test_fused_gradient_equals_pytorch_path_on_the_same_draw(name, n, dtype):
    x = _logits((5, 4, n), dtype, 100 + n).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(n), dtype=dtype)
    y = EST[name](x, generator=torch.Generator().manual_seed(1))
    (y * g).sum().backward()
    fused = x.grad.clone()
    x.grad = None
    index = y.argmax(-1)
    (EST[name](x, index=index) * g).sum().backward()    # index given: the PyTorch path
    torch.testing.assert_close(fused, x.grad, **_tol(dtype))
    assert torch.isfinite(fused).all()


def test_fused_operator_is_called_on_cpu_floats_only(monkeypatch):
    calls = []
    assert _native.available()
    # the Python route, whose calls into the library can be counted (the compiled eager call
    # reaches the same kernels by address: tests/test_fastpath.py)
    monkeypatch.setattr(_eager, "_fastpath_tried", True)
    monkeypatch.setattr(_eager, "_fastpath", None)
    for name in ("qg_sample_f32", "qg_sample_keep_f32"):   # without and with the exponentials kept
        real = _native._kernels.fn[name]
        monkeypatch.setitem(_native._kernels.fn, name, lambda *a, real=real: calls.append(1) or real(*a))
    x = torch.randn(6, 10, requires_grad=True)
    quasigrad.zgr(x)
    quasigrad.zgr(x.t(), dim=0)                    # any layout and dim: moved to the last dimension
    assert calls == [1, 1]
    quasigrad.zgr(x.bfloat16())                    # half precision: PyTorch operators
    quasigrad.zgr(x, index=torch.zeros(6, dtype=torch.long))
    assert calls == [1, 1]


@pytest.mark.parametrize("n", [5, 13, 40])
def test_fused_draw_is_categorical(n):
    # chi-square on 40,000 fused draws, masked categories and a tiny one included; the seed is
    # fixed, and a correct sampler fails this test for 0.1% of seeds (p < 1e-3).
    theta = torch.linspace(-2.0, 2.0, n)
    theta[::4] = float("-inf")
    theta[1] = -9.0
    draws = 40000
    index = quasigrad.sample_categorical(theta.expand(draws, n).contiguous(), generator=torch.Generator().manual_seed(5))
    counts = torch.bincount(index, minlength=n).double()
    probs = torch.softmax(theta.double(), -1)
    assert counts[probs == 0].sum() == 0
    keep = probs > 0
    assert stats.chisquare(counts[keep].numpy(), (probs[keep] * draws).numpy()).pvalue > 1e-3


def test_conditional_noise_gives_gumbel_softmax_its_distribution():
    # The sample first, then Gumbel noise conditioned on it, is exactly unconditioned Gumbel
    # noise: the relaxed sample's mean over 40,000 draws equals that of torch's Gumbel-softmax
    # with an independent generator (within 5 standard errors per coordinate: a correct sampler
    # fails this about once in 10^6 runs per coordinate).
    theta = torch.tensor([0.3, -1.0, 2.0, 0.0, -0.5], dtype=torch.float64)
    draws, tau = 40000, 0.7
    x = theta.expand(draws, 5).contiguous()
    ours = quasigrad.gumbel_softmax(x, tau=tau, generator=torch.Generator().manual_seed(3))
    g = -torch.log(torch.empty_like(x).exponential_(generator=torch.Generator().manual_seed(4)))
    theirs = torch.softmax((x + g) / tau, -1)
    se = (ours.var(0) / draws + theirs.var(0) / draws).sqrt()
    assert ((ours.mean(0) - theirs.mean(0)).abs() < 5 * se).all()


def test_negative_and_conjugate_views_are_resolved_before_the_kernel():
    # a negative view is contiguous but its memory holds -x: the kernel must see x
    x = torch.randn(500, 9, dtype=torch.float64)
    neg = torch._neg_view(-x)
    assert neg.is_neg() and neg.is_contiguous()
    for fn in [*EST.values(), lambda v, generator: quasigrad.gumbel_softmax(v, hard=True, generator=generator),
               lambda v, generator: quasigrad.gumbel_rao(v, generator=generator)]:
        a = fn(neg, generator=torch.Generator().manual_seed(8))
        b = fn(x.clone(), generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b)
    s = quasigrad.sample_categorical(neg, generator=torch.Generator().manual_seed(8))
    assert torch.equal(s, quasigrad.sample_categorical(x, generator=torch.Generator().manual_seed(8)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_give_finite_results(dtype):
    # probabilities down to denormal numbers, huge finite logits, one category left
    x = torch.tensor([[0.0, -80.0, -100.0, -1e30, 5.0, -95.0, -103.0, -70.0, 1.0],
                      [1e30, -1e30, 0.0, 0.0, 3e38, 0.0, 0.0, 0.0, 0.0],
                      [float("-inf")] * 8 + [2.0]], dtype=dtype, requires_grad=True)
    fns = [*EST.values(), lambda v, generator: quasigrad.gumbel_softmax(v, tau=0.3, hard=True, generator=generator),
           lambda v, generator: quasigrad.gumbel_softmax(v, tau=3.0, generator=generator),
           lambda v, generator: quasigrad.gumbel_rao(v, tau=0.5, k=7, generator=generator)]
    for fn in fns:
        y = fn(x, generator=torch.Generator().manual_seed(0))
        (y * torch.arange(9, dtype=dtype)).sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        assert y[2, 8] == 1
        x.grad = None


@pytest.mark.parametrize("bad", ["nan", "posinf", "all_masked"])
def test_fused_path_rejects_bad_rows(bad):
    x = torch.randn(3, 20)
    if bad == "nan":
        x[1, 7] = float("nan")
    elif bad == "posinf":
        x[1, 7] = float("inf")
    else:
        x[1] = float("-inf")
    fns = [*EST.values(), quasigrad.gumbel_softmax, quasigrad.gumbel_rao,
           lambda v: quasigrad.sample_categorical(v)]
    for fn in fns:
        with pytest.raises(ValueError, match="logits"):
            fn(x.clone().requires_grad_(True))


def test_given_index_of_zero_probability_is_rejected():
    x = torch.randn(3, 5)
    x[1, 2] = float("-inf")
    index = torch.tensor([0, 2, 4])
    for fn in (quasigrad.gumbel_softmax, quasigrad.gumbel_rao, quasigrad.st):
        with pytest.raises(ValueError, match="probability is 0"):
            fn(x, index=index)


def test_output_can_be_modified_in_place():
    x = torch.randn(4, 12, requires_grad=True)
    y = quasigrad.zgr(x)
    y.mul_(2.0)              # an ordinary output, not a view of an input
    y.sum().backward()
    assert x.grad is not None


def test_threads_do_not_change_results():
    x = torch.randn(300, 129, requires_grad=True)
    g = torch.randn(300, 129)
    fns = [quasigrad.zgr, lambda v, generator: quasigrad.gumbel_softmax(v, tau=0.5, hard=True, generator=generator),
           lambda v, generator: quasigrad.gumbel_rao(v, k=4, generator=generator)]
    before = torch.get_num_threads()
    try:
        for fn in fns:
            grads = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                x.grad = None
                (fn(x, generator=torch.Generator().manual_seed(9)) * g).sum().backward()
                grads.append(x.grad.clone())
            assert torch.equal(grads[0], grads[1])
    finally:
        torch.set_num_threads(before)


def test_turned_off_by_environment():
    env = {**os.environ, "QUASIGRAD_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", "from quasigrad.estimators import _native; print(_native.status())"],
                         capture_output=True, text=True, env=env, check=True, timeout=120)
    assert "not in use" in out.stdout and "QUASIGRAD_NATIVE" in out.stdout


def test_status_says_which_library_and_code():
    info = _native.info()
    assert info["in_use"] and os.path.exists(info["path"])
    assert info["variant"] in ("generic", "avx2", "avx512")
    text = _native.status()
    assert info["path"] in text and info["variant"] in text and "in use" in text


@pytest.mark.parametrize("n", [3, 16, 64])
def test_outputs_sharing_storage_do_not_overlap_or_share_versions(n):
    x = torch.randn(50, n)
    d, index, row_max, _ = _native.sample(x, 0)
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in (d, index, row_max))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    saved, versions = (index.clone(), row_max.clone()), (index._version, row_max._version)
    d.fill_(7.0)
    assert torch.equal(index, saved[0]) and torch.equal(row_max, saved[1])
    assert (index._version, row_max._version) == versions
    assert d._base is None and index._base is None       # not views: autograd treats them as fresh
    drawn = quasigrad.sample_categorical(x, generator=torch.Generator().manual_seed(0))
    assert drawn.untyped_storage().nbytes() == drawn.numel() * 8   # not the one-hot's storage


@pytest.mark.parametrize("gap", [0.25, 3.0])
def test_fused_gst_matches_pytorch_path_at_other_gaps(gap):
    x = _logits((6, 40), torch.float64, 3, scale=1.0).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = quasigrad.gapped_st(x, gap=gap, generator=torch.Generator().manual_seed(2))
    (y * g).sum().backward()
    fused, x.grad = x.grad.clone(), None
    (quasigrad.gapped_st(x, gap=gap, index=y.argmax(-1)) * g).sum().backward()
    torch.testing.assert_close(fused, x.grad, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dim", [-1, 0])
def test_fused_gradient_built_with_create_graph_equals_the_plain_one_and_refuses_a_second(dim):
    x = torch.randn(7, 6, requires_grad=True)
    w = torch.randn(7, 6, requires_grad=True)
    y = quasigrad.st(x, dim=dim, generator=torch.Generator().manual_seed(3))
    (plain,) = torch.autograd.grad((y * w).sum(), x, retain_graph=True)
    (built,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
    torch.testing.assert_close(built, plain, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        built.sum().backward()


def test_fused_eager_path_reads_a_moved_dimension_through_its_contiguous_copy():
    # the backward kernel reads the saved logits' memory: for a transposed input that must be the
    # contiguous copy the forward sampled from, not the transposed view
    base = torch.randn(9, 5)
    a = base.clone().requires_grad_(True)
    b = base.t().contiguous().t().clone().requires_grad_(True)   # same values, other strides
    g = torch.randn(9, 5)
    for x in (a, b):
        (quasigrad.reinmax(x.t(), dim=0, generator=torch.Generator().manual_seed(5)) * g.t()).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 10, 17, 64, 1000])
def test_kept_exponentials_give_the_same_draw_and_gradients(dtype, n):
    # sample_keep/backward_kept against sample/backward: bit for bit, every backward formula,
    # masked categories included (scalar rows below 8 categories, vector rows from 8 up)
    x = torch.randn(40, n, dtype=dtype, generator=torch.Generator().manual_seed(n)) * 3
    if n > 2:
        x[:, 1] = float("-inf")
    g = torch.randn(40, n, dtype=dtype)
    d, index, row_max, bad = _native.sample(x, 77)
    d2, e, index2, bad2 = _native.sample_keep(x, 77)
    assert bad == bad2 == 0 and torch.equal(d, d2) and torch.equal(index, index2)
    for mode, cap in [(_native.ST, 0.0), (_native.ZGR, 0.0), (_native.DARN, 0.0), (_native.GST, 0.37)]:
        assert torch.equal(_native.backward(mode, g, x, row_max, index, cap),
                           _native.backward_kept(mode, g, e, index2, cap))


@pytest.mark.parametrize("name", ["st", "reinmax", "zgr", "darn", "gapped_st"])
def test_estimators_agree_with_and_without_kept_exponentials(name, monkeypatch):
    # eager kernel calls keep the exponentials up to _native.KEEP_MAX_BYTES; past it (forced here
    # with 0) they are recomputed: the same sample and the same gradient
    fn = getattr(quasigrad, name)
    x = torch.randn(5, 7, 12, dtype=torch.float64)
    w = torch.randn(5, 7, 12, dtype=torch.float64)
    out = []
    for limit in (_native.KEEP_MAX_BYTES, 0):
        monkeypatch.setattr(_native, "KEEP_MAX_BYTES", limit)
        leaf = x.clone().requires_grad_()
        y = fn(leaf, generator=torch.Generator().manual_seed(3))
        (y * w).sum().backward()
        out.append((y.detach(), leaf.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@pytest.mark.parametrize("name", ["st", "reinmax", "zgr", "darn", "gapped_st"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shortest_route_agrees_with_the_general_route(name, dtype, monkeypatch):
    fn = getattr(quasigrad, name)
    x = torch.randn(3, 11, 9, dtype=dtype)
    x[..., 2] = float("-inf")
    w = torch.randn(3, 11, 9, dtype=dtype)
    taken = []
    real = _eager.shortest
    monkeypatch.setattr(_eager, "shortest", lambda *a: taken.append(real(*a)) or taken[-1])
    out = []
    for route in ("shortest", "general"):
        leaf = torch.nn.Parameter(x.clone())       # a Parameter takes the shortest route too
        y = fn(leaf, generator=torch.Generator().manual_seed(11))
        (y * w).sum().backward()
        out.append((y.detach(), leaf.grad))
        monkeypatch.setattr(_eager, "shortest", lambda *a: None)
    assert len(taken) == 1 and taken[0] is not None
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@pytest.mark.parametrize("rows", [37, 3000])
@pytest.mark.parametrize("route", ["compiled", "python"])
def test_draw_outputs_allocation_and_in_place_writes_to_the_one_hot(rows, route, monkeypatch):
    # the one-hot and the index side by side from _buffers.PACK_MIN_BYTES of logits (3000 x 13
    # float32), apart below it; the exponentials (held by the graph) always on their own
    x = torch.randn(rows, 13)
    d, e, index, _ = _native.sample_keep(x, 9)
    shared = x.numel() * 4 >= _buffers.PACK_MIN_BYTES
    assert shared == (rows == 3000)
    assert (d.untyped_storage().data_ptr() == index.untyped_storage().data_ptr()) == shared
    assert e.untyped_storage().nbytes() == e.numel() * 4
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in (d, e, index))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    # writing into the one-hot (an in-place op on the estimator's output) leaves the gradient
    # alone, on the compiled eager call (which allocates the same way) and on the Python route
    if route == "python":
        monkeypatch.setattr(_eager, "_fastpath_tried", True)
        monkeypatch.setattr(_eager, "_fastpath", None)
    elif _eager.fastpath() is None:
        pytest.skip("the compiled eager call is not built here")
    w = torch.randn(rows, 13)
    grads = []
    for touch in (False, True):
        leaf = x.clone().requires_grad_()
        y = quasigrad.st(leaf, generator=torch.Generator().manual_seed(4))
        assert (type(y.grad_fn).__name__ == "_KeptBackward") == (route == "python")
        if touch:
            y.mul_(3.0).add_(1.0)
            (y * w / 3.0).sum().backward()
        else:
            (y * w).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("name", ["st", "reinmax", "zgr", "darn", "gapped_st"])
@pytest.mark.parametrize("route", ["shortest", "general"])
def test_repeated_backward_passes_through_kept_exponentials_agree(name, route, monkeypatch):
    # a second pass (retain_graph) and a pass that builds a graph (create_graph) read the same
    # kept exponentials as the first: every pass gives the first pass's gradient, bit for bit,
    # and the recomputing route's
    fn = getattr(quasigrad, name)
    if route == "general":
        monkeypatch.setattr(_eager, "shortest", lambda *a: None)
    x = torch.randn(6, 4, 9, dtype=torch.float64)
    x[..., 3] = float("-inf")
    w = torch.randn(6, 4, 9, dtype=torch.float64)
    leaf = x.clone().requires_grad_()
    y = fn(leaf, generator=torch.Generator().manual_seed(8))
    (first,) = torch.autograd.grad(y, leaf, w, retain_graph=True)
    (second,) = torch.autograd.grad(y, leaf, w, retain_graph=True)
    (third,) = torch.autograd.grad(y, leaf, w, retain_graph=True, create_graph=True)
    assert torch.equal(first, second) and torch.equal(first, third)
    monkeypatch.setattr(_native, "KEEP_MAX_BYTES", 0)   # the recomputing pair throughout
    leaf2 = x.clone().requires_grad_()
    y2 = fn(leaf2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(y.detach(), y2.detach())
    assert torch.equal(first, torch.autograd.grad(y2, leaf2, w)[0])


def _draw(x, key, keep):
    """`(one_hot, index, e or the row max, bad)` from sample_keep or sample."""
    if keep:
        d, e, index, bad = _native.sample_keep(x, key)
        return d, index, e, bad
    d, index, row_max, bad = _native.sample(x, key)
    return d, index, row_max.unsqueeze(-1), bad


@pytest.mark.parametrize("n", [8, 10, 15, 16])
@pytest.mark.parametrize("keep", [False, True])
def test_short_rows_drawn_by_blocks_match_rows_drawn_one_by_one(n, keep):
    # float32 rows of 8 to 15 categories are drawn a vector of rows at a time; a bad row sends its
    # whole block through the row-by-row code, whose draws for the other rows must be the same
    # (n = 16 is drawn row by row either way). 70 rows: whole blocks and a remainder.
    x = torch.randn(70, n, generator=torch.Generator().manual_seed(n)) * 4
    x[5, 2] = float("-inf")
    x[40, :] = torch.tensor([0.0] + [float("-inf")] * (n - 1))     # one category left
    d, index, extra, bad = _draw(x, 2024, keep)
    assert bad == 0 and torch.equal(d, torch.nn.functional.one_hot(index, n).float())
    assert index[40] == 0 and index[5] != 2
    for row in (0, 3, 17, 33, 66):          # blocks of 8 and of 16 lanes, and the remainder
        y = x.clone()
        y[row, 0] = float("nan")
        d2, index2, extra2, bad2 = _draw(y, 2024, keep)
        assert bad2 == 1 and not d2[row].any()
        others = torch.arange(70) != row
        assert torch.equal(index2[others], index[others])
        assert torch.equal(d2[others], d[others]) and torch.equal(extra2[others], extra[others])
