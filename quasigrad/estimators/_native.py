"""Fused CPU kernels for the straight-through family (``_kernels.c``), compiled on first use.

The sample-level estimators spend most of their time, at the shapes people use, in work that
PyTorch's eager operators cannot fuse: softmax, an inverse-CDF draw (a cumulative sum and a
binary search per row) and the one-hot are separate passes and separate allocations. Here one C
sweep per row draws the sample and writes its one-hot, keeping only each row's max logit; the
backward sweep recomputes the probabilities from the logits and that max (an exp per element is
cheaper than writing, keeping and reading back a tensor of probabilities) and applies the
estimator's formula (ST, ZGR, DARN or GST).

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

import contextlib
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

__all__ = ["available", "status", "usable", "sample", "backward", "ST", "ZGR", "DARN", "GST"]

_SOURCE = Path(__file__).with_name("_kernels.c")
_ABI = 2
_lock = threading.Lock()
_lib = None
_reason: Optional[str] = None   # why the kernels are not in use (None until the first attempt)
_tried = False

_P, _I64, _U64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int
_SIGNATURES = {   # name: (argument types, result type)
    "qg_sample_f32": ([_P, _P, _P, _P, _U64, _I64, _I64, _INT], _I64),
    "qg_sample_f64": ([_P, _P, _P, _P, _U64, _I64, _I64, _INT], _I64),
    "qg_backward_f32": ([_P, _P, _P, _P, _P, _INT, ctypes.c_float, _I64, _I64, _INT], None),
    "qg_backward_f64": ([_P, _P, _P, _P, _P, _INT, ctypes.c_double, _I64, _I64, _INT], None),
}
# The backward formulas (the kernel's mode argument).
ST, ZGR, DARN, GST = 0, 1, 2, 3
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


def _compile(cc: str, flags, target: Path) -> Optional[str]:
    """Compile ``_kernels.c`` into ``target`` (atomically); the compiler's complaint on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [cc, *flags, "-shared", "-fPIC", "-o", tmp, str(_SOURCE), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        return f"{' '.join(cmd)}: {proc.stderr.strip()[-300:]}"
    os.replace(tmp, target)   # atomic: a concurrent build writes the same bytes
    return None


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.qg_abi_version() != _ABI:
        raise RuntimeError(f"{path}: ABI version mismatch")
    for name, (args, result) in _SIGNATURES.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = result
    return lib


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
                error = _compile(cc, flags, target)
                if error:
                    errors.append(error)
                    continue
            try:
                return _open(target)
            except (OSError, RuntimeError, AttributeError) as exc:
                errors.append(str(exc))
    if not errors:
        raise RuntimeError("no C compiler found ($CC, cc, gcc, clang)")
    raise RuntimeError("; ".join(errors))


def _compile_variant(flags, directory) -> ctypes.CDLL:
    """The kernels built with other flags into ``directory`` (for tests of the portable code)."""
    compilers = _compilers()
    if not compilers:
        raise RuntimeError("no C compiler found")
    target = Path(directory) / "kernels-variant.so"
    error = _compile(compilers[0], list(flags), target)
    if error:
        raise RuntimeError(error)
    return _open(target)


@contextlib.contextmanager
def _using(lib: ctypes.CDLL):
    """Route :func:`sample` and :func:`backward` through ``lib`` inside the block (tests)."""
    global _lib
    _load()
    saved, _lib = _lib, lib
    try:
        yield
    finally:
        _lib = saved


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


def _outputs(x: torch.Tensor):
    """The one-hot, index and row-max tensors for :func:`sample`. From rows of 16 categories up,
    the three share one allocation (the one-hot's storage, extended), which saves two allocator
    calls and keeps small blocks from sitting between large ones: with them apart, glibc's heap
    was trimmed and regrown on most calls at (4096, 64), a page fault per 4 KiB written. The
    tensors are not views of one another (each has its own version counter) and do not overlap;
    the one-hot's storage is larger than the one-hot by at most 12/64 (float32, n = 16)."""
    n, batch = x.shape[-1], x.shape[:-1]
    if n < 16:
        return torch.empty_like(x), torch.empty(batch, dtype=torch.int64), torch.empty(batch, dtype=x.dtype)
    rows, size = x.numel() // n, x.element_size()
    at_index = -(-x.numel() * size // 8)             # in int64 elements, after the one-hot
    at_max = (at_index + rows) * 8 // size           # in x.dtype elements, after the index
    storage = torch.empty((at_max + rows) * size, dtype=torch.uint8).untyped_storage()
    return (torch.empty(0, dtype=x.dtype).set_(storage, 0, x.shape),
            torch.empty(0, dtype=torch.int64).set_(storage, at_index, batch),
            torch.empty(0, dtype=x.dtype).set_(storage, at_max, batch))


def sample(x: torch.Tensor, generator: Optional[torch.Generator]):
    """``(one_hot, index, row_max, bad)`` for contiguous float32/float64 CPU logits along the last
    dimension; ``bad`` is the number of rows with a NaN or +inf logit or only -inf logits. The
    uniform numbers come from a seed drawn from ``generator`` (one draw per call). ``index`` may
    share its storage with ``one_hot`` (see :func:`_outputs`)."""
    n = x.shape[-1]
    d, index, row_max = _outputs(x)
    seed = int(torch.randint(-2**63, 2**63 - 1, (), generator=generator)) & 0xFFFFFFFFFFFFFFFF
    bad = getattr(_lib, "qg_sample_" + _SUFFIX[x.dtype])(x.data_ptr(), d.data_ptr(), index.data_ptr(),
                                                          row_max.data_ptr(), seed, x.numel() // n, n, _threads())
    return d, index, row_max, bad


def backward(mode: int, grad: torch.Tensor, x: torch.Tensor, row_max: torch.Tensor, index: torch.Tensor,
             cap: float = 0.0) -> torch.Tensor:
    """The gradient for logits ``x`` (contiguous) given the upstream ``grad``, the drawn ``index``
    and ``row_max`` from :func:`sample`; ``mode`` is ``ST``, ``ZGR``, ``DARN`` or ``GST`` (with
    ``cap = exp(-gap)``). See ``_kernels.c`` for the formulas."""
    grad = grad.to(x.dtype).contiguous()
    out = torch.empty_like(x)
    n = x.shape[-1]
    getattr(_lib, "qg_backward_" + _SUFFIX[x.dtype])(x.data_ptr(), row_max.data_ptr(), index.data_ptr(),
                                                      grad.data_ptr(), out.data_ptr(), mode, cap,
                                                      x.numel() // n, n, _threads())
    return out
