"""The fused CPU kernels (`_kernels.c`, `_isotonic.c`): finding, checking and loading their
shared library, and calling them on tensors.

Where the library comes from, in order:

1. **Installed with the package**: `pip install` builds it when a C compiler is present (an
   optional extension: installing never fails without one) into `_kernels.bin` beside this
   module, with its record `_kernels.bin.json`.
2. **The cache**: `$QUASIGRAD_CACHE` (default `~/.cache/quasigrad`), `kernels-<digest>.so`,
   compiled on first use by `$CC`, `cc`, `gcc` or `clang` (each command given
   `$QUASIGRAD_CC_TIMEOUT` seconds, default 300, then killed and the next compiler tried).

Nothing is loaded before `quasigrad.estimators._build.verify` has checked it: the
directory and the file owned by this user (or, for the installed copy, by root), not writable
by group or others, not a symbolic link, and the file's size and SHA-256 equal to those its
record gives for the current sources. A cached file that fails the check is rebuilt; a cache
directory that fails it is not used (the library is built in a private temporary directory
instead). The library holds one build of the kernels per CPU target; the one the CPU supports
is used (`QUASIGRAD_CPU=generic|avx2|avx512` picks a lower one). On Windows the kernels are
not built (the sources use GCC/Clang vector extensions that MSVC lacks); there, without a
compiler, with `QUASIGRAD_NATIVE=0` or on any failure, the PyTorch operators compute the same
results. `status` says which library is in use, why, and what was refused on the way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import _buffers, _build

__all__ = ["available", "status", "info", "usable", "sample", "backward", "sample_keep", "backward_kept", "keeps", "gumbel",
           "gumbel_rao_backward", "softmax_backward", "uniform", "isotonic", "isotonic_backward", "soft_backward", "ST", "ZGR", "DARN", "GST"]

ABI = 5
# The backward formulas (the kernel's mode argument).
ST, ZGR, DARN, GST = 0, 1, 2, 3
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_VARIANT_RANK = {"generic": 0, "avx2": 1, "avx512": 2}

# The straight-through family's eager calls keep the draw's exponentials for the backward pass
# (one more tensor of the logits' size; the backward then does a softmax backward's work instead
# of recomputing them) up to this many bytes of logits. Beyond it, measured at (256, 50257)
# float32, writing and reading the extra tensor (allocated afresh on every call, past the C
# allocator's reuse) costs more than the exponentials.
KEEP_MAX_BYTES = 16 << 20


def keeps(x: torch.Tensor) -> bool:
    """Whether an eager call on logits `x` keeps the draw's exponentials (`KEEP_MAX_BYTES`)."""
    return x.numel() * x.element_size() <= KEEP_MAX_BYTES

_P, _I64, _U64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int
_F = {"f32": ctypes.c_float, "f64": ctypes.c_double}


def _signatures(suffix: str) -> Dict[str, Tuple[list, object]]:
    f = _F[suffix]
    return {
        "qg_sample": ([_P, _P, _P, _P, _U64, _I64, _I64, _INT], _I64),
        "qg_backward": ([_P, _P, _P, _P, _P, _INT, f, _I64, _I64, _INT], None),
        "qg_sample_keep": ([_P, _P, _P, _P, _U64, _I64, _I64, _INT], _I64),
        "qg_backward_kept": ([_P, _P, _P, _P, _INT, f, _I64, _I64, _INT], None),
        "qg_gumbel": ([_P, _P, _P, _P, _P, _U64, _U64, f, _I64, _I64, _INT], _I64),
        "qg_gumbel_rao_backward": ([_P, _P, _P, _P, _U64, f, _I64, _I64, _I64, _INT], _I64),
        "qg_uniform": ([_U64, _I64, _I64, _P, _INT], None),
        "qg_softmax_backward": ([_P, _P, _P, f, _I64, _I64, _INT], None),
    }


def _isotonic_signatures(suffix: str) -> Dict[str, Tuple[list, object]]:
    f = _F[suffix]
    return {
        "qg_isotonic": ([_P, _I64, _P, _I64, _P, _P, _INT, _P, f, _I64, _I64, _INT], _I64),
        "qg_isotonic_backward": ([_P, _P, _I64, _P, _I64, _P, _INT, _P, _P, _I64, _I64, _INT], None),
        "qg_soft_backward": ([_P, _P, _P, _P, _P, _INT, _INT, f, _P, _I64, _I64, _INT], _I64),
    }


class _Kernels:
    """The loaded library, its functions for one CPU target, and where it came from."""

    def __init__(self, lib: ctypes.CDLL, path: Path, origin: str, meta: Dict):
        if lib.qg_abi_version() != ABI:
            raise RuntimeError(f"{path}: ABI version {lib.qg_abi_version()}, expected {ABI}")
        self.path, self.origin, self.meta = path, origin, meta
        self.openmp = bool(lib.qg_openmp())
        features = lib.qg_cpu_features()
        supported = ["generic"] + (["avx2"] if features & 1 else []) + (["avx512"] if features & 2 else [])
        built = meta.get("variants", ["generic"])
        choices = [v for v in supported if v in built]
        asked = os.environ.get("QUASIGRAD_CPU", "").strip().lower()
        self.variant = choices[-1]
        self.why = f"the best this CPU supports (it has {', '.join(supported)})"
        if asked:
            if asked in choices:
                self.variant, self.why = asked, "chosen by QUASIGRAD_CPU"
            else:
                self.why += f"; QUASIGRAD_CPU={asked} ignored (not one of {', '.join(choices)})"
        self.lib, self.supported = lib, choices
        self.fn = self.functions(self.variant)

    def functions(self, variant: str) -> Dict[str, object]:
        """The entry points of one CPU target's build, by name and dtype suffix."""
        out: Dict[str, object] = {}
        for suffix in _F:
            for name, (args, result) in _signatures(suffix).items():
                fn = getattr(self.lib, f"{name}_{suffix}_{variant}")
                fn.argtypes, fn.restype = args, result
                out[f"{name}_{suffix}"] = fn
            for name, (args, result) in _isotonic_signatures(suffix).items():
                fn = getattr(self.lib, f"{name}_{suffix}")
                fn.argtypes, fn.restype = args, result
                out[f"{name}_{suffix}"] = fn
        return out


_lock = threading.Lock()
_kernels: Optional[_Kernels] = None
_reason: Optional[str] = None     # why the kernels are not in use
_notes: List[str] = []            # what was refused or rebuilt on the way
_tried = False
STATUS_PARTS: List[Callable[[], str]] = []   # what modules built on the kernels add to status()


def cache_dir() -> Path:
    root = os.environ.get("QUASIGRAD_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "quasigrad"


def _uids(include_root: bool):
    if not hasattr(os, "getuid"):
        return None
    return {os.getuid(), 0} if include_root else {os.getuid()}


def _open(path: Path, origin: str, meta: Dict) -> _Kernels:
    return _Kernels(ctypes.CDLL(str(path)), path, origin, meta)


def _from_installed(notes: List[str]) -> Optional[_Kernels]:
    path = _build.HERE / _build.INSTALLED_NAME
    if not path.exists():
        notes.append("no library was built when the package was installed (no compiler then, or not installed by pip)")
        return None
    why, meta = _build.verify(path, _uids(include_root=True))
    if why:
        notes.append(f"installed library refused: {why}")
        return None
    try:
        return _open(path, "built when the package was installed", meta or {})
    except (OSError, RuntimeError, AttributeError) as exc:
        notes.append(f"installed library {path} did not load: {exc}")
        return None


def _cache(notes: List[str]) -> Tuple[Path, bool]:
    """The directory to build in, and whether it is the shared cache (else private)."""
    directory = cache_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        why = _build.unsafe(directory, _uids(include_root=False))
    except OSError as exc:
        why = f"{directory}: {exc.strerror or exc}"
    if why is None:
        return directory, True
    notes.append(f"cache directory refused: {why}; built in a private temporary directory instead "
                 f"(set QUASIGRAD_CACHE to a directory only you can write)")
    return Path(tempfile.mkdtemp(prefix="quasigrad-kernels-")), False


def _from_cache(notes: List[str]) -> _Kernels:
    directory, shared = _cache(notes)
    path = directory / f"kernels-{_build.source_digest()[:16]}.so"
    owners = _uids(include_root=False)
    if path.exists() or path.is_symlink():
        why, meta = _build.verify(path, owners)
        if why is None:
            try:
                meta = meta or {}
                return _open(path, f"compiled on first use into the cache by {meta.get('compiler')}", meta)
            except (OSError, RuntimeError, AttributeError) as exc:
                why = f"did not load ({exc})"
        notes.append(f"cached library refused: {why}; rebuilt")
    meta = _build.build(path)
    where = "the cache" if shared else "a private temporary directory"
    skipped = meta.get("errors")
    if skipped:
        notes.append("compilers that failed before: " + "; ".join(skipped))
    why, checked = _build.verify(path, owners)
    if why:
        raise RuntimeError(f"the library just built does not pass its checks: {why}")
    meta = checked or {}
    return _open(path, f"compiled on first use into {where} by {meta.get('compiler')}", meta)


def _load() -> Optional[_Kernels]:
    global _kernels, _reason, _tried
    if _tried:
        return _kernels
    with _lock:
        if _tried:
            return _kernels
        notes: List[str] = []
        if os.environ.get("QUASIGRAD_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            _reason = "turned off by QUASIGRAD_NATIVE"
        elif sys.platform == "win32":
            _reason = "not built on Windows (the kernels use GCC/Clang vector extensions that MSVC lacks)"
        else:
            try:
                _kernels = _from_installed(notes) or _from_cache(notes)
            except Exception as exc:  # noqa: BLE001 -- any failure means: use the PyTorch path
                _reason = f"no library: {exc}"
        _notes[:] = notes
        _tried = True
    return _kernels


@contextlib.contextmanager
def _variant(name: str):
    """Run the kernels of CPU target `name` inside the block (tests: the targets agree)."""
    kernels = _load()
    if kernels is None or name not in kernels.supported:
        raise RuntimeError(f"the {name} kernels cannot run here")
    saved, kernels.fn = kernels.fn, kernels.functions(name)
    try:
        yield
    finally:
        kernels.fn = saved


@contextlib.contextmanager
def _disabled():
    """Inside the block, behave as if the library had not loaded (tests: the PyTorch path)."""
    global _kernels
    saved = _load()
    _kernels = None
    try:
        yield
    finally:
        _kernels = saved


def available() -> bool:
    """Whether the fused kernels are loaded (finds, checks or builds them on the first call)."""
    return _load() is not None


def info() -> Dict:
    """What `status` says, as a dict: `in_use`, and `path`, `origin`, `variant`,
    `openmp`, `compiler` or `reason`, and `notes` (what was refused or rebuilt)."""
    k = _load()
    if k is None:
        return {"in_use": False, "reason": _reason, "notes": list(_notes)}
    return {"in_use": True, "path": str(k.path), "origin": k.origin, "variant": k.variant, "variant_why": k.why,
            "openmp": k.openmp, "compiler": k.meta.get("compiler"), "notes": list(_notes)}


def status() -> str:
    """One paragraph: whether the fused CPU kernels are in use, which library and code, and why."""
    d = info()
    notes = "".join(f"; {n}" for n in d["notes"])
    if not d["in_use"]:
        return f"fused CPU kernels not in use, PyTorch operators instead: {d['reason']}{notes}"
    threads = "OpenMP threads" if d["openmp"] else "one thread per call (built without OpenMP)"
    extra = "".join(f"; {part()}" for part in STATUS_PARTS)
    return (f"fused CPU kernels in use: {d['path']} ({d['origin']}); {d['variant']} code, {d['variant_why']}; "
            f"{threads}{notes}{extra}")


def usable(x: torch.Tensor) -> bool:
    """Whether the kernels can take `x`: a float32/float64 CPU tensor, kernels loaded."""
    return x.device.type == "cpu" and x.dtype in _SUFFIX and x.numel() > 0 and available()


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _fn(name: str, dtype: torch.dtype):
    kernels = _kernels or _load()
    if kernels is None:
        raise RuntimeError(f"quasigrad: {status()}")
    return kernels.fn[f"{name}_{_SUFFIX[dtype]}"]


def _rows(x: torch.Tensor) -> Tuple[int, int]:
    n = x.shape[-1]
    return x.numel() // n, n


def _plain(x: torch.Tensor) -> torch.Tensor:
    """`x` contiguous with its negative and conjugate bits resolved: the kernels read raw memory."""
    if x.is_neg() or x.is_conj():
        x = x.resolve_neg().resolve_conj()
    return x.contiguous()


def sample(x: torch.Tensor, key: int):
    """`(one_hot, index, row_max, bad)` for logits `x` (categories last), drawn with the row
    stream of seed `key`; `bad` counts rows with a NaN or +inf logit or only -inf logits."""
    x = _plain(x)
    rows, n = _rows(x)
    d, index, row_max = _buffers.sample_outputs(x)
    bad = _fn("qg_sample", x.dtype)(x.data_ptr(), d.data_ptr(), index.data_ptr(), row_max.data_ptr(), key, rows, n,
                                    _threads())
    return d, index, row_max, bad


def backward(mode: int, grad: torch.Tensor, x: torch.Tensor, row_max: torch.Tensor, index: torch.Tensor,
             cap: float = 0.0) -> torch.Tensor:
    """The gradient for logits `x` given the upstream `grad`, the drawn `index` and
    `row_max` from `sample`; `mode` is `ST`, `ZGR`, `DARN` or `GST` (with
    `cap = exp(-gap)`). See `_kernels.c` for the formulas."""
    x, grad = _plain(x), _plain(grad.to(x.dtype))
    row_max, index = _plain(row_max), _plain(index)
    out = torch.empty_like(x)
    rows, n = _rows(x)
    _fn("qg_backward", x.dtype)(x.data_ptr(), row_max.data_ptr(), index.data_ptr(), grad.data_ptr(), out.data_ptr(),
                                mode, cap, rows, n, _threads())
    return out


def sample_keep(x: torch.Tensor, key: int):
    """`(one_hot, e, index, bad)`: [`sample`][quasigrad.estimators._native.sample]'s draw with
    `e = exp(x - row max)` kept for [`backward_kept`][quasigrad.estimators._native.backward_kept]
    instead of the row max; `x` plain and contiguous, categories last.

    The outputs' memory: `_buffers.keep_outputs`."""
    rows, n = _rows(x)
    d, e, index = _buffers.keep_outputs(x)
    bad = _fn("qg_sample_keep", x.dtype)(x.data_ptr(), d.data_ptr(), e.data_ptr(), index.data_ptr(), key, rows, n,
                                         _threads())
    return d, e, index, bad


def backward_kept(mode: int, grad: torch.Tensor, e: torch.Tensor, index: torch.Tensor, cap: float = 0.0) -> torch.Tensor:
    """[`backward`][quasigrad.estimators._native.backward] from the `e` and `index` that
    [`sample_keep`][quasigrad.estimators._native.sample_keep] gave: the same values, with no
    exponential recomputed."""
    if grad.dtype != e.dtype:
        grad = grad.to(e.dtype)
    if not grad.is_contiguous() or grad.is_neg() or grad.is_conj():
        grad = _plain(grad)
    out = torch.empty_like(e)
    n = e.shape[-1]
    _fn("qg_backward_kept", e.dtype)(e.data_ptr(), index.data_ptr(), grad.data_ptr(), out.data_ptr(), mode, cap,
                                     e.numel() // n, n, _threads())
    return out


def gumbel(x: torch.Tensor, key: int, noise: int, tau: float, hard: bool, index: Optional[torch.Tensor] = None):
    """`(y, one_hot or None, index, bad)`: `y = softmax((x + G)/tau)` with the sample drawn
    from the row stream of `key` (or `index`) and `G` the Gumbel noise conditioned on it
    from the noise stream of key `noise`."""
    x = _plain(x)
    rows, n = _rows(x)
    y = torch.empty_like(x)
    d = torch.empty_like(x) if hard else None
    given = None if index is None else _plain(index)
    out_index = torch.empty(x.shape[:-1], dtype=torch.int64)
    bad = _fn("qg_gumbel", x.dtype)(x.data_ptr(), y.data_ptr(), None if d is None else d.data_ptr(),
                                    None if given is None else given.data_ptr(), out_index.data_ptr(), key, noise,
                                    tau, rows, n, _threads())
    if bad < 0:
        raise MemoryError("quasigrad: out of memory in the fused Gumbel-softmax kernel")
    return y, d, out_index, bad


def gumbel_rao_backward(x: torch.Tensor, index: torch.Tensor, grad: torch.Tensor, noise: int, tau: float,
                        k: int) -> torch.Tensor:
    """GR-MCK's gradient for logits `x` (see `_kernels.c`)."""
    x, grad, index = _plain(x), _plain(grad.to(x.dtype)), _plain(index)
    rows, n = _rows(x)
    out = torch.empty_like(x)
    status_ = _fn("qg_gumbel_rao_backward", x.dtype)(x.data_ptr(), index.data_ptr(), grad.data_ptr(), out.data_ptr(),
                                                     noise, tau, k, rows, n, _threads())
    if status_ < 0:
        raise MemoryError("quasigrad: out of memory in the fused Gumbel-Rao kernel")
    return out


def softmax_backward(y: torch.Tensor, grad: torch.Tensor, scale: float) -> torch.Tensor:
    """`scale · y ⊙ (g − ⟨y, g⟩)` row by row (Gumbel-softmax's backward, `scale = 1/τ`)."""
    y, grad = _plain(y), _plain(grad.to(y.dtype))
    rows, n = _rows(y)
    out = torch.empty_like(y)
    _fn("qg_softmax_backward", y.dtype)(y.data_ptr(), grad.data_ptr(), out.data_ptr(), scale, rows, n, _threads())
    return out


def uniform(key: int, count: int, dtype: torch.dtype) -> torch.Tensor:
    """The row stream's `u` for counters `0 .. count-1` (float32 or float64)."""
    out = torch.empty(count, dtype=dtype)
    if count:
        _fn("qg_uniform", dtype)(key, 0, count, out.data_ptr(), _threads())
    return out


def _row_operand(t: torch.Tensor, shape) -> Tuple[torch.Tensor, int]:
    """`t` (broadcastable to `shape` = (B, n)) as a tensor with contiguous rows and its row
    stride: 0 when every row is the same (one row is kept), else n."""
    if t.dim() == 1 and t.is_contiguous() and not t.is_neg():   # the common case, checked first
        return t, 0
    t = t.resolve_neg().resolve_conj() if (t.is_neg() or t.is_conj()) else t
    if t.dim() == 1 or t.stride(0) == 0 or t.shape[0] == 1:
        row = t.reshape(-1, t.shape[-1])[0] if t.dim() > 1 else t
        return row.contiguous(), 0
    return t.expand(shape).contiguous(), shape[-1]


def isotonic(s: torch.Tensor, w: torch.Tensor, regularization: int, *, perm: Optional[torch.Tensor] = None,
             sign: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(v, starts)`: the decreasing isotonic regression of each row of `s` (B, n) against
    `w` (either may be one row broadcast), 0 = l2, 1 = KL, and where its blocks start. With
    `perm` (soft rank: `s` is `z` sorted by it), `v` is the soft rank instead; with
    `sign` (soft sort), `sign (s − v)` (see `_isotonic.c`)."""
    n = s.shape[-1]
    rows = max(s.shape[0] if s.dim() > 1 else 1, w.shape[0] if w.dim() > 1 else 1)
    shape = (rows, n)
    sc, ss = _row_operand(s, shape)
    wc, ws = _row_operand(w.to(sc.dtype), shape)
    v = torch.empty(shape, dtype=sc.dtype)
    starts = torch.empty(shape, dtype=torch.uint8)
    perm = None if perm is None else _plain(perm)   # kept alive until the kernel returns
    if _fn("qg_isotonic", sc.dtype)(sc.data_ptr(), ss, wc.data_ptr(), ws, v.data_ptr(), starts.data_ptr(),
                                    regularization, None if perm is None else perm.data_ptr(), sign, rows, n,
                                    _threads()) < 0:
        raise MemoryError("quasigrad: out of memory in the isotonic regression kernel")
    return v, starts


def soft_backward(grad: torch.Tensor, sorted_: torch.Tensor, out: Optional[torch.Tensor], perm: torch.Tensor,
                  starts: torch.Tensor, regularization: int, *, sort: bool, scale: float) -> torch.Tensor:
    """`scale` times the gradient, in the unsorted order, of `isotonic`'s soft rank output
    (`out` needed for KL) or, with `sort`, of its soft sort output (see `_isotonic.c`)."""
    # every operand is held in a variable: a temporary copy would be freed before the kernel runs
    sorted_, perm, starts = _plain(sorted_), _plain(perm), _plain(starts)
    grad = _plain(grad.to(sorted_.dtype))
    out = None if out is None else _plain(out)
    rows, n = _rows(sorted_)
    gx = torch.empty_like(sorted_)
    if _fn("qg_soft_backward", sorted_.dtype)(grad.data_ptr(), sorted_.data_ptr(), None if out is None else out.data_ptr(),
                                               perm.data_ptr(), starts.data_ptr(), regularization, int(sort),
                                               scale, gx.data_ptr(), rows, n, _threads()) < 0:
        raise MemoryError("quasigrad: out of memory in the soft sort/rank kernel")
    return gx


def isotonic_backward(grad: torch.Tensor, s: torch.Tensor, w: torch.Tensor, starts: torch.Tensor, regularization: int,
                      need_s: bool, need_w: bool) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The gradients for `s` and `w` (each only if needed) of `isotonic`'s output."""
    shape = starts.shape
    rows, n = shape[0], shape[1]
    sc, ss = _row_operand(s, shape)
    wc, ws = _row_operand(w.to(sc.dtype), shape)
    grad, starts = _plain(grad.to(sc.dtype)), _plain(starts)
    gs = torch.empty(shape, dtype=sc.dtype) if need_s else None
    gw = torch.empty(shape, dtype=sc.dtype) if need_w else None
    _fn("qg_isotonic_backward", sc.dtype)(grad.data_ptr(), sc.data_ptr(), ss, wc.data_ptr(), ws,
                                          starts.data_ptr(), regularization,
                                          None if gs is None else gs.data_ptr(),
                                          None if gw is None else gw.data_ptr(), rows, n, _threads())
    return gs, gw
