"""The shortest route to the straight-through family's fused kernels, for the commonest call: an
eager CPU call on float32/float64 logits, contiguous, categories last, a fresh draw and a
gradient wanted. It skips the general route's layers (the full argument checks, moving `dim`,
the operator's seed tensor) and keeps the draw's exponentials for the backward kernel, which
then does a softmax backward's work; every other call takes the general route, with the same
sample and the same gradient. Where `pip install` built `_fastpath.cpp` against the running
torch, the whole call (seed, allocation, kernels, autograd node) is that one compiled step."""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
from typing import Any, Optional

import torch

from . import _build, _native, _ops, _streams

__all__ = ["shortest", "fastpath", "fastpath_status"]

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_KERNEL_DTYPES = (torch.float32, torch.float64)


def shortest(logits, dim, generator, mode: int, cap: float) -> Optional[torch.Tensor]:
    """The straight-through family's estimator with formula `mode` by the shortest route, for the
    commonest call (eager, CPU, float32/float64, contiguous, categories last, a fresh draw, a
    gradient wanted, and nothing a full check could refuse); None for every other call, which
    then takes the general route (the same sample and gradient; every argument checked)."""
    kernels = _native._kernels
    if (kernels is None or type(logits) not in _PLAIN_TYPES or logits.dtype not in _KERNEL_DTYPES
            or logits.device.type != "cpu" or type(dim) is not int or logits.dim() == 0
            or (dim != -1 and dim != logits.dim() - 1) or not logits.requires_grad or not torch.is_grad_enabled()
            or not logits.is_contiguous() or logits.is_neg() or logits.is_conj() or logits.numel() == 0
            or not _native.keeps(logits)):
        return None
    if generator is not None and (type(generator) is not torch.Generator or generator.device.type != "cpu"):
        return None
    if _ops.dynamo_compiling() or _ops.functorch_active():
        return None
    compiled = _fastpath if _fastpath_tried else fastpath()
    if compiled is not None:
        d, bad = compiled.categorical(logits, generator, mode, cap)
        if bad:
            _ops._raise_bad(logits, logits.dim() - 1)
        return d
    return _Kept.apply(logits, _streams.seed_int(generator), mode, cap)


_fastpath: Any = None
_fastpath_tried = False
_fastpath_reason = "not loaded yet"


def fastpath() -> Any:
    """The compiled eager call (`_fastpath.bin`, built at install against the installed torch),
    loaded once after the checks `_build.verify` makes and a check that the torch it was built
    against is the torch running; None (and `fastpath_status` says why) where it is absent,
    refused, or the fused kernels are not in use."""
    global _fastpath, _fastpath_tried, _fastpath_reason
    if _fastpath_tried:
        return _fastpath
    _fastpath_tried = True
    path = _build.HERE / _build.FASTPATH_NAME
    kernels = _native._load()
    if kernels is None:
        _fastpath_reason = "the fused kernels are not in use"
    elif os.environ.get("QUASIGRAD_FASTPATH", "1").strip().lower() in ("0", "false", "no", "off"):
        _fastpath_reason = "turned off by QUASIGRAD_FASTPATH"
    elif not path.exists():
        _fastpath_reason = "not built when the package was installed (no C++ compiler or torch then)"
    else:
        digest = _build.source_digest(_build.HERE, (_build.FASTPATH_SOURCE,))
        why, meta = _build.verify(path, _native._uids(include_root=True), digest=digest)
        if why is None and meta is not None and meta.get("torch") != torch.__version__:
            why = f"built against torch {meta.get('torch')}, this is torch {torch.__version__} (reinstall quasigrad)"
        if why is None and meta is not None and meta.get("abi") != int(torch._C._GLIBCXX_USE_CXX11_ABI):
            why = "built for another C++ ABI than this torch's"
        if why is None:
            try:
                loader = importlib.machinery.ExtensionFileLoader("quasigrad.estimators._fastpath", str(path))
                spec = importlib.util.spec_from_file_location("quasigrad.estimators._fastpath", path, loader=loader)
                if spec is None:
                    raise ImportError("no module spec")
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
                fn = kernels.fn
                module.set_kernels(*(ctypes.cast(fn[name], ctypes.c_void_p).value for name in (  # type: ignore[arg-type]
                    "qg_sample_keep_f32", "qg_sample_keep_f64", "qg_backward_kept_f32", "qg_backward_kept_f64")))
                _fastpath, _fastpath_reason = module, f"in use: {path}"
            except (ImportError, OSError, AttributeError, KeyError) as exc:
                why = f"did not load ({exc})"
        if why is not None:
            _fastpath_reason = f"refused: {why}"
    return _fastpath


def fastpath_status() -> str:
    """Whether the straight-through family's eager calls take the compiled call, and why."""
    fastpath()
    return f"compiled eager call {_fastpath_reason}"


_native.STATUS_PARTS.append(fastpath_status)


class _Kept(torch.autograd.Function):
    """[`shortest`][quasigrad.estimators._eager.shortest]'s autograd node where the compiled
    call is not in use: the kernels called directly, the draw's exponentials kept for the
    backward pass."""

    @staticmethod
    def forward(ctx, logits, key, mode, cap):
        d, e, index, bad = _native.sample_keep(logits, key)
        if bad:
            _ops._raise_bad(logits, logits.dim() - 1)
        ctx.mode, ctx.cap, ctx.kept = mode, cap, True
        ctx.save_for_backward(e, index)
        return d

    @staticmethod
    def backward(ctx, grad):
        # the general route's eager backward, which reads the kept exponentials (ctx.kept)
        return _ops._Categorical.backward(ctx, grad)[:4]
