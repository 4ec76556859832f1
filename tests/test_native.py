"""The fused CPU kernels (quasigrad/_kernels.c) against the pure PyTorch path they replace.

Every check compares the two paths on the same draw: the fused path draws D, then the PyTorch
path is run with ``index=`` set to that draw (which never goes through the kernels). The tests
are skipped only where no C compiler exists; on this project's machines one does, so they run.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
from scipy import stats

import quasigrad
from quasigrad.estimators import _native

pytestmark = pytest.mark.skipif(not _native.available(), reason=f"no fused kernels: {_native.status()}")

EST = {"st": quasigrad.st, "reinmax": quasigrad.reinmax, "zgr": quasigrad.zgr, "darn": quasigrad.darn,
       "gst": quasigrad.gapped_st}
SIZES = [2, 3, 7, 8, 9, 16, 17, 64, 1000]


def _logits(shape, dtype, seed, masked=True, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    if masked and shape[-1] > 2:
        x[..., 1::3] = float("-inf")   # masked categories, never all of a row
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", SIZES)
def test_fused_sample_gives_one_hot_row_max_and_no_masked_category(dtype, n):
    x = _logits((37, n), dtype, n)
    d, index, row_max, bad = _native.sample(x, torch.Generator().manual_seed(0))
    assert bad == 0
    assert torch.equal(row_max, x.amax(-1))
    assert torch.equal(d, torch.nn.functional.one_hot(index, n).to(dtype))
    assert (torch.softmax(x, -1).gather(-1, index[:, None]) > 0).all()   # never a masked category


MODES = {"st": _native.ST, "zgr": _native.ZGR, "darn": _native.DARN, "gst": _native.GST}


def _reference_backward(mode, g, x, index, gap=1.0):
    """The four formulas of _kernels.c by PyTorch operators, in float64."""
    x, g = x.double(), g.double()
    p = torch.softmax(x, -1)
    onehot = torch.nn.functional.one_hot(index, x.shape[-1]).double()
    if mode == "gst":
        top = p.amax(-1, keepdim=True)
        q = torch.where(onehot > 0, top, torch.minimum(p, top * torch.exp(torch.tensor(-gap, dtype=p.dtype))))
        p = q / q.sum(-1, keepdim=True)
    c = (p * g).sum(-1, keepdim=True)
    g_k = g.gather(-1, index[..., None])
    if mode in ("st", "gst"):
        return p * (g - c)
    if mode == "zgr":
        return 0.5 * p * (g - g_k) + 0.5 * (g_k - c) * onehot
    return (g_k - c) * (onehot - p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("n", SIZES)
def test_fused_backward_matches_its_formula(mode, n, dtype):
    x = _logits((23, n), dtype, 7 * n)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(n), dtype=dtype)
    _, index, row_max, _ = _native.sample(x, torch.Generator().manual_seed(2))
    out = _native.backward(MODES[mode], g, x, row_max, index, math.exp(-1.0))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(out.double(), _reference_backward(mode, g, x, index), **tol)
    assert (out[torch.isneginf(x)] == 0).all()   # masked categories get no gradient


@pytest.mark.parametrize("flags", [["-O3"], ["-O3", "-march=native", "-mno-avx512f"]], ids=["generic", "no-avx512"])
def test_other_builds_draw_the_same_and_agree(tmp_path, flags):
    # The kernels built for other targets (no -march: GCC/Clang 8-lane vectors; -march=native
    # without AVX-512: the AVX2 + FMA intrinsics where the CPU has them) against the build in use:
    # the same uniform numbers, so the same draws (bar a rounding tie at a category boundary,
    # allowed once in 4,000 rows) and the same gradients to float32 rounding.
    lib = _native._compile_variant(flags, tmp_path)
    x = _logits((4000, 67), torch.float32, 11)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    ref_d, ref_index, ref_max, _ = _native.sample(x, torch.Generator().manual_seed(6))
    with _native._using(lib):
        d, index, row_max, bad = _native.sample(x, torch.Generator().manual_seed(6))
        outs = {m: _native.backward(code, g, x, ref_max, ref_index, 0.3) for m, code in MODES.items()}
    assert bad == 0 and torch.equal(row_max, ref_max)
    assert (index != ref_index).sum() <= 1
    for m, code in MODES.items():
        torch.testing.assert_close(outs[m], _native.backward(code, g, x, ref_max, ref_index, 0.3), rtol=1e-5, atol=1e-6)


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
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(fused, x.grad, **tol)
    assert torch.isfinite(fused).all()


def test_fused_path_is_taken_and_pytorch_path_elsewhere(monkeypatch):
    calls = []
    real = _native.sample
    monkeypatch.setattr(_native, "sample", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(6, 10, requires_grad=True)
    quasigrad.zgr(x)
    assert calls == [1]
    quasigrad.zgr(x.t(), dim=0)                    # categories not along a contiguous last dim
    quasigrad.zgr(x.bfloat16())                    # half precision
    quasigrad.zgr(x, index=torch.zeros(6, dtype=torch.long))
    assert calls == [1]


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


def test_same_generator_same_draw_for_every_estimator_and_the_sampler():
    x = torch.randn(64, 33)
    draws = [quasigrad.sample_categorical(x, generator=torch.Generator().manual_seed(3))]
    for fn in EST.values():
        draws.append(fn(x.clone().requires_grad_(True), generator=torch.Generator().manual_seed(3)).argmax(-1))
    assert all(torch.equal(draws[0], d) for d in draws[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_give_finite_results(dtype):
    # probabilities down to denormal numbers, huge finite logits, one category left
    x = torch.tensor([[0.0, -80.0, -100.0, -1e30, 5.0, -95.0, -103.0, -70.0, 1.0],
                      [1e30, -1e30, 0.0, 0.0, 3e38, 0.0, 0.0, 0.0, 0.0],
                      [float("-inf")] * 8 + [2.0]], dtype=dtype, requires_grad=True)
    for fn in EST.values():
        y = fn(x, generator=torch.Generator().manual_seed(0))
        (y * torch.arange(9, dtype=dtype)).sum().backward()
        assert torch.isfinite(x.grad).all()
        assert y[2, 8] == 1
        x.grad = None
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    _, index, row_max, _ = _native.sample(x.detach(), None)
    for mode, code in MODES.items():
        out = _native.backward(code, g, x.detach(), row_max, index, math.exp(-1.0))
        torch.testing.assert_close(out.double(), _reference_backward(mode, g, x.detach(), index), rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("bad", ["nan", "posinf", "all_masked"])
def test_fused_path_rejects_bad_rows(bad):
    x = torch.randn(3, 20)
    if bad == "nan":
        x[1, 7] = float("nan")
    elif bad == "posinf":
        x[1, 7] = float("inf")
    else:
        x[1] = float("-inf")
    for fn in EST.values():
        with pytest.raises(ValueError, match="logits"):
            fn(x.clone().requires_grad_(True))


def test_output_can_be_modified_in_place():
    x = torch.randn(4, 12, requires_grad=True)
    y = quasigrad.zgr(x)
    y.mul_(2.0)              # an ordinary output, not a view of an input
    y.sum().backward()
    assert x.grad is not None


def test_threads_do_not_change_results():
    x = torch.randn(300, 129, requires_grad=True)
    g = torch.randn(300, 129)
    grads = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            x.grad = None
            (quasigrad.zgr(x, generator=torch.Generator().manual_seed(9)) * g).sum().backward()
            grads.append(x.grad.clone())
    finally:
        torch.set_num_threads(before)
    assert torch.equal(grads[0], grads[1])


def test_turned_off_by_environment(tmp_path):
    env = {**os.environ, "QUASIGRAD_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", "from quasigrad.estimators import _native; print(_native.status())"],
                         capture_output=True, text=True, env=env, check=True)
    assert "not in use" in out.stdout and "QUASIGRAD_NATIVE" in out.stdout


@pytest.mark.parametrize("n", [3, 16, 64])
def test_outputs_sharing_storage_do_not_overlap_or_share_versions(n):
    x = torch.randn(50, n)
    d, index, row_max, _ = _native.sample(x, torch.Generator().manual_seed(0))
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in (d, index, row_max))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    saved, versions = (index.clone(), row_max.clone()), (index._version, row_max._version)
    d.fill_(7.0)
    assert torch.equal(index, saved[0]) and torch.equal(row_max, saved[1])
    assert (index._version, row_max._version) == versions
    assert d._base is None and index._base is None       # not views: autograd treats them as fresh
    drawn = quasigrad.sample_categorical(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drawn, index)
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
