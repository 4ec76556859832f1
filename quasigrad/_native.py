"""Fused CPU kernels for the straight-through family (``_kernels.c``), compiled on first use.

The sample-level estimators spend most of their time, at the shapes people use, in work that
PyTorch's eager operators cannot fuse: softmax, an inverse-CDF draw (a cumulative sum and a
binary search per row) and the one-hot are separate passes and separate allocations. One C
sweep per row does all three; two more do the ZGR and DARN backward passes and GST's surrogate.

They are used for float32 and float64 CPU tensors whose categories lie along a contiguous last
dimension, outside ``torch.compile``; everything else (CUDA, half precision, other layouts,
compiled graphs) takes the pure PyTorch path, which computes the same quantities. The shared
library is built with the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) into
``$QUASIGRAD_CACHE`` (default ``~/.cache/quasigrad``) under a name that hashes the source, the
compiler and the CPU, and written atomically, so that concurrent processes can share it. If no
compiler works the PyTorch path is used; :func:`status` says which and why. Set
``QUASIGRAD_NATIVE=0`` to turn the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

import torch

__all__ = ["available", "status", "usable", "sample", "gst_", "zgr_backward", "darn_backward"]

_SOURCE = Path(__file__).with_name("_kernels.c")
_ABI = 1
_lock = threading.Lock()
_lib = None
_reason: Optional[str] = None   # why the kernels are not in use (None until the first attempt)
_tried = False

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "qg_sample_f32": [_P, _P, _P, _P, _P, _P, _I64, _I64, _INT],
    "qg_sample_f64": [_P, _P, _P, _P, _P, _P, _I64, _I64, _INT],
    "qg_gst_f32": [_P, _P, ctypes.c_float, _I64, _I64, _INT],
    "qg_gst_f64": [_P, _P, ctypes.c_double, _I64, _I64, _INT],
    "qg_zgr_f32": [_P, _P, _P, _P, _I64, _I64, _INT],
    "qg_zgr_f64": [_P, _P, _P, _P, _I64, _I64, _INT],
    "qg_darn_f32": [_P, _P, _P, _P, _I64, _I64, _INT],
    "qg_darn_f64": [_P, _P, _P, _P, _I64, _I64, _INT],
}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _compilers():
    seen = []
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        path = shutil.which(name) if name else None
        if path and path not in seen:
            seen.append(path)
    return seen


def _cache_dir() -> Path:
    root = os.environ.get("QUASIGRAD_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "quasigrad"


def _build() -> ctypes.CDLL:
    source = _SOURCE.read_bytes()
    errors = []
    flag_sets = [["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3"]]
    for cc in _compilers():
        for flags in flag_sets:
            key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(flags).encode(),
                                             platform.machine().encode(), _cpu_id().encode()])).hexdigest()[:16]
            target = _cache_dir() / f"kernels-{key}.so"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
                os.close(fd)
                cmd = [cc, *flags, "-shared", "-fPIC", "-o", tmp, str(_SOURCE), "-lm"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    os.unlink(tmp)
                    errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()[-300:]}")
                    continue
                os.replace(tmp, target)   # atomic: a concurrent build writes the same bytes
            lib = ctypes.CDLL(str(target))
            if lib.qg_abi_version() != _ABI:
                errors.append(f"{target}: ABI version mismatch")
                continue
            for name, args in _SIGNATURES.items():
                getattr(lib, name).argtypes = args
                getattr(lib, name).restype = None
            return lib
    if not errors:
        raise RuntimeError("no C compiler found ($CC, cc, gcc, clang)")
    raise RuntimeError("; ".join(errors))


def _load():
    global _lib, _reason, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            if os.environ.get("QUASIGRAD_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
                _reason = "turned off by QUASIGRAD_NATIVE"
            else:
                try:
                    _lib = _build()
                except Exception as exc:  # any failure means: use the PyTorch path
                    _reason = f"build failed: {exc}"
            _tried = True
    return _lib


def available() -> bool:
    """Whether the fused kernels are compiled and loaded (builds them on the first call)."""
    return _load() is not None


def status() -> str:
    """One line: whether the fused CPU kernels are in use, and if not, why."""
    return "fused CPU kernels in use" if available() else f"fused CPU kernels not in use ({_reason})"


def usable(x: torch.Tensor, dim: int) -> bool:
    """Whether ``x`` (categories along ``dim``) can go through the kernels."""
    return (x.device.type == "cpu" and x.dtype in _SUFFIX and dim == x.dim() - 1 and x.is_contiguous()
            and x.numel() > 0 and available())


def _threads() -> int:
    return max(1, torch.get_num_threads())


def sample(x: torch.Tensor, generator: Optional[torch.Generator]):
    """``(p, one_hot, index, total)`` for contiguous float32/float64 CPU logits along the last
    dimension; ``total`` is NaN on rows with a NaN or +inf logit or only -inf logits."""
    n = x.shape[-1]
    rows = x.numel() // n
    batch = x.shape[:-1]
    p, d = torch.empty_like(x), torch.empty_like(x)
    index = torch.empty(batch, dtype=torch.int64)
    u = torch.rand(batch, dtype=x.dtype, generator=generator)
    total = torch.empty(batch, dtype=x.dtype)
    getattr(_lib, "qg_sample_" + _SUFFIX[x.dtype])(x.data_ptr(), p.data_ptr(), d.data_ptr(), index.data_ptr(),
                                                    u.data_ptr(), total.data_ptr(), rows, n, _threads())
    return p, d, index, total


def gst_(p: torch.Tensor, index: torch.Tensor, shrink: float) -> torch.Tensor:
    """GST's surrogate at tau = 1, in place on a contiguous ``p`` (see ``_kernels.c``)."""
    n = p.shape[-1]
    index = index.contiguous()
    getattr(_lib, "qg_gst_" + _SUFFIX[p.dtype])(p.data_ptr(), index.data_ptr(), shrink, p.numel() // n, n, _threads())
    return p


def _backward(name, g, p, index):
    g = g.contiguous()
    index = index.contiguous()
    out = torch.empty_like(p)
    n = p.shape[-1]
    getattr(_lib, f"qg_{name}_" + _SUFFIX[p.dtype])(g.data_ptr(), p.data_ptr(), index.data_ptr(), out.data_ptr(),
                                                     p.numel() // n, n, _threads())
    return out


def zgr_backward(g, index, dim, p):
    """ZGR's backward pass (a kernel for ``categorical._LinearInG``)."""
    return _backward("zgr", g, p, index)


def darn_backward(g, index, dim, p):
    """DARN's backward pass (a kernel for ``categorical._LinearInG``)."""
    return _backward("darn", g, p, index)
