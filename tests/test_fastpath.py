"""The compiled eager call of the straight-through family (`_fastpath.cpp`, built at install
against the installed torch): the same samples and gradients as the Python route, the same
errors, and a build that is refused, with `status()` saying why, when it does not match."""

import json
import shutil

import pytest
import torch

import quasigrad
from quasigrad.estimators import _build, _eager, _native

NAMES = ["st", "reinmax", "zgr", "darn", "gapped_st"]
needs_fastpath = pytest.mark.skipif(_eager.fastpath() is None, reason="the compiled eager call is not built here")


def _python_route(monkeypatch):
    monkeypatch.setattr(_eager, "_fastpath_tried", True)
    monkeypatch.setattr(_eager, "_fastpath", None)


def _run(fn, x, w, seed):
    leaf = x.clone().requires_grad_()
    if seed is None:
        torch.manual_seed(21)
        y = fn(leaf)
    else:
        y = fn(leaf, generator=torch.Generator().manual_seed(seed))
    (y * w).sum().backward()
    return y.detach(), leaf.grad


@needs_fastpath
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [5, None])
@pytest.mark.parametrize("shape", [(4, 9, 13), (3000, 13)])   # the second: one-hot and index in one allocation
def test_compiled_call_gives_the_python_routes_samples_and_gradients(name, dtype, seed, shape, monkeypatch):
    fn = getattr(quasigrad, name)
    x = torch.randn(*shape, dtype=dtype)
    x[..., 3] = float("-inf")
    w = torch.randn(*shape, dtype=dtype)
    compiled = _run(fn, x, w, seed)
    _python_route(monkeypatch)
    python = _run(fn, x, w, seed)
    assert torch.equal(compiled[0], python[0]) and torch.equal(compiled[1], python[1])


@needs_fastpath
def test_compiled_call_is_taken_and_raises_as_the_python_route_does():
    x = torch.randn(5, 6, requires_grad=True)
    assert type(quasigrad.st(x).grad_fn).__name__ != "_KeptBackward"   # the C++ node, not the Python one
    bad = torch.tensor([[0.0, float("nan")]], requires_grad=True)
    with pytest.raises(ValueError, match="NaN"):
        quasigrad.zgr(bad)
    leaf = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    y = quasigrad.reinmax(leaf)
    (g,) = torch.autograd.grad((y * torch.randn(4, 6, dtype=torch.float64)).sum(), leaf, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()


@pytest.fixture
def copied_build(tmp_path, monkeypatch):
    """A copy of the installed build and its source in a private directory the loader reads."""
    src = _build.HERE / _build.FASTPATH_NAME
    if not src.exists():
        pytest.skip("the compiled eager call is not built here")
    tmp_path.chmod(0o700)
    for name in (_build.FASTPATH_SOURCE, _build.FASTPATH_NAME, _build.FASTPATH_NAME + ".json"):
        shutil.copy2(_build.HERE / name, tmp_path / name)
    monkeypatch.setattr(_build, "HERE", tmp_path)
    monkeypatch.setattr(_eager, "_fastpath_tried", False)
    monkeypatch.setattr(_eager, "_fastpath", None)
    return tmp_path


def _refused(expected):
    assert _eager.fastpath() is None
    assert expected in _eager.fastpath_status() and "refused" in _eager.fastpath_status()
    assert expected in _native.status()
    x = torch.randn(3, 7, requires_grad=True)
    quasigrad.st(x).sum().backward()     # the Python route serves
    assert torch.isfinite(x.grad).all()


def test_build_for_another_torch_is_refused(copied_build):
    record = copied_build / (_build.FASTPATH_NAME + ".json")
    meta = json.loads(record.read_text())
    meta["torch"] = "2.2.0"
    bin_path = copied_build / _build.FASTPATH_NAME
    _build.write_record(bin_path, {k: v for k, v in meta.items() if k not in ("sha256", "size")})
    _refused("built against torch 2.2.0")


def test_truncated_build_is_refused(copied_build):
    path = copied_build / _build.FASTPATH_NAME
    path.write_bytes(path.read_bytes()[:4096])
    _refused("truncated or replaced")


def test_build_from_other_sources_is_refused(copied_build):
    (copied_build / _build.FASTPATH_SOURCE).write_text("// changed\n")
    _refused("built from other sources")


def test_compiled_call_can_be_turned_off(copied_build, monkeypatch):
    monkeypatch.setenv("QUASIGRAD_FASTPATH", "0")
    assert _eager.fastpath() is None
    assert "turned off by QUASIGRAD_FASTPATH" in _native.status()
