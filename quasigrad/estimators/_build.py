"""Building and checking the fused kernels' shared library (standard library only: `setup.py`
runs it at install time, before torch can be imported, and `._native` at run time).

The library is `_kernels.c` compiled once per CPU target (generic; AVX2 + FMA; AVX-512 on
x86-64) plus `_isotonic.c`, linked into one file; the loader picks the target the CPU supports,
so a library built on one machine runs on another (no `-march=native`). Every build writes a
*record* beside the library (`<library>.json`: its size and SHA-256, the digest of the sources
it was built from, the compiler, whether OpenMP is on), and `verify` checks a library
against its record, its owner and its permissions before anything loads it: a truncated, empty,
stale or foreign file is never handed to `dlopen`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
SOURCES = ("_kernels.c", "_isotonic.c", "_qg_simd.h")
#: the file name of the library built when the package is installed, beside this module
INSTALLED_NAME = "_kernels.bin"
#: bump when the build recipe changes in a way that the sources' digest does not show
RECIPE = "3"
DEFAULT_TIMEOUT = 300.0
#: the compiled eager call of the straight-through family (C++ against the installed torch)
FASTPATH_SOURCE = "_fastpath.cpp"
FASTPATH_NAME = "_fastpath.bin"
_PROBE = ("import json, sysconfig, torch, torch.utils.cpp_extension as c; "
          "f = getattr(c, '_get_pybind11_abi_build_flags', lambda: []); "
          "print(json.dumps({'torch': torch.__version__, 'abi': int(torch._C._GLIBCXX_USE_CXX11_ABI), "
          "'include': list(c.include_paths()) + [sysconfig.get_paths()['include']], "
          "'lib': list(c.library_paths()), 'flags': list(f())}))")


class BuildError(RuntimeError):
    """No compiler could build the library; the message says what each one did."""


def source_digest(directory: Path = HERE, names: Sequence[str] = SOURCES) -> str:
    """SHA-256 of the sources `names` (default: the kernels') and the build recipe."""
    h = hashlib.sha256(RECIPE.encode())
    for name in names:
        h.update(b"\0" + name.encode() + b"\0" + (directory / name).read_bytes())
    return h.hexdigest()


def variants(machine: Optional[str] = None) -> List[Tuple[str, List[str]]]:
    """The targets to compile `_kernels.c` for, with their flags."""
    machine = (machine or platform.machine()).lower()
    out: List[Tuple[str, List[str]]] = [("generic", [])]
    if machine in ("x86_64", "amd64", "i386", "i686"):
        out += [("avx2", ["-mavx2", "-mfma"]), ("avx512", ["-mavx512f", "-mavx2", "-mfma"])]
    return out


def compilers(env_var: str = "CC", names: Sequence[str] = ("cc", "gcc", "clang")) -> Tuple[List[List[str]], List[str]]:
    """Compiler commands to try in order (`$CC`, then `cc`, `gcc`, `clang`; for C++, `$CXX`,
    `c++`, `g++`, `clang++`) and the reasons some were skipped (not found, not executable)."""
    found: List[List[str]] = []
    skipped: List[str] = []
    env = os.environ.get(env_var, "").strip()
    candidates: List[Tuple[str, List[str]]] = []
    if env:
        try:
            words = shlex.split(env)
        except ValueError as exc:
            skipped.append(f"${env_var}={env!r}: {exc}")
            words = []
        if words:
            candidates.append((f"${env_var}={env}", words))
    candidates += [(name, [name]) for name in names]
    seen = set()
    for label, words in candidates:
        path = shutil.which(words[0])
        if path is None:
            if label.startswith("$"):
                what = "not executable" if os.path.exists(words[0]) else "not found"
                skipped.append(f"{label}: {what}")
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        found.append([path] + words[1:])
    return found, skipped


def _run(cmd: Sequence[str], timeout: float) -> Optional[str]:
    """Run a compiler command; None on success, else one line saying why it failed. A command
    still running after `timeout` seconds is killed with its process group."""
    try:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=os.name == "posix")
    except OSError as exc:
        return f"{cmd[0]}: cannot run ({exc.strerror or exc})"
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except OSError:
            pass
        proc.communicate()
        return f"{cmd[0]}: timed out after {timeout:g} s (killed)"
    if proc.returncode != 0:
        tail = " ".join((err or "").strip().split())[-240:]
        return f"{cmd[0]}: exit status {proc.returncode}: {tail}"
    return None


def _compile_link(cc: List[str], openmp: bool, directory: Path, out: Path, timeout: float) -> Optional[str]:
    omp = ["-fopenmp"] if openmp else []
    common = ["-O3", "-fPIC", "-ffp-contract=off", "-std=gnu11", *omp, f"-I{directory}"]
    objects = []
    units = [("_kernels.c", name, flags) for name, flags in variants()] + [("_isotonic.c", "isotonic", [])]
    for source, name, flags in units:
        obj = out.parent / f"{name}.o"
        define = [f"-DQG_VARIANT={name}"] if source == "_kernels.c" else []
        err = _run([*cc, *common, *flags, *define, "-c", str(directory / source), "-o", str(obj)], timeout)
        if err:
            return err
        objects.append(str(obj))
    return _run([*cc, "-shared", *omp, *objects, "-o", str(out), "-lm"], timeout)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_record(library: Path, meta: Dict) -> None:
    """Write `<library>.json` (atomically) for the library as it is now."""
    data = dict(meta, sha256=_sha256(library), size=library.stat().st_size)
    fd, tmp = tempfile.mkstemp(prefix=".record-", dir=library.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.chmod(tmp, 0o644)
    os.replace(tmp, record_path(library))


def record_path(library: Path) -> Path:
    return library.with_name(library.name + ".json")


def _compilers_for(target: Path, env_var: str, names: Sequence[str], language: str):
    """`compilers(env_var, names)` for a build into `target` (its directory made); raises
    `BuildError` where none is found."""
    cands, errors = compilers(env_var, names)
    if not cands:
        errors.append(f"no {language} compiler found (${env_var}, {', '.join(names)})")
        raise BuildError("; ".join(errors))
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    return cands, errors


def _install(built: Path, target: Path, meta: Dict) -> None:
    """Put a freshly built library in place of `target` atomically, then its record."""
    os.chmod(built, 0o755)
    os.replace(built, target)
    write_record(target, meta)


def build(target: Path, *, sources: Path = HERE, timeout: Optional[float] = None) -> Dict:
    """Build the library into `target` (replacing it atomically, record included) with the
    first compiler that works, with OpenMP if it can and without otherwise. Returns the record;
    raises `BuildError` saying what every compiler did."""
    if timeout is None:
        timeout = float(os.environ.get("QUASIGRAD_CC_TIMEOUT", DEFAULT_TIMEOUT))
    cands, errors = _compilers_for(target, "CC", ("cc", "gcc", "clang"), "C")
    target = Path(target)
    for cc in cands:
        for openmp in (True, False):
            work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
            try:
                tmp = work / "kernels.so"
                start = time.monotonic()
                err = _compile_link(cc, openmp, sources, tmp, timeout)
                if err:
                    errors.append(err if openmp else f"{err} (without OpenMP)")
                    if "timed out" in err or "cannot run" in err:
                        break   # the next compiler, not the same one without OpenMP
                    continue
                meta = {"sources": source_digest(sources), "compiler": " ".join(cc), "openmp": openmp,
                        "variants": [v for v, _ in variants()], "machine": platform.machine(),
                        "platform": sys.platform, "seconds": round(time.monotonic() - start, 1)}
                _install(tmp, target, meta)
                meta["errors"] = errors
                return meta
            finally:
                shutil.rmtree(work, ignore_errors=True)
    raise BuildError("; ".join(errors))


def _owner_ok(st: os.stat_result, owners) -> bool:
    return not hasattr(os, "getuid") or st.st_uid in owners


def unsafe(path: Path, owners) -> Optional[str]:
    """Why `path` (a file or directory) cannot be trusted, or None: it must be owned by one of
    `owners` (uids), not be a symbolic link, and not be writable by group or others."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if not _owner_ok(st, owners):
        return f"{path} is owned by uid {st.st_uid}, not by this user"
    if os.name == "posix" and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def verify(library: Path, owners, *, sources: Path = HERE,
           digest: Optional[str] = None) -> Tuple[Optional[str], Optional[Dict]]:
    """Check a library before it is loaded: its directory, itself and its record must be safe
    (`unsafe`), the record must match the current sources, and the file's size and SHA-256
    must match the record. `digest`: the sources' digest expected (default: the kernels').
    Returns `(None, record)` or `(reason, None)`."""
    library = Path(library)
    if not os.path.lexists(record_path(library)):
        return f"{library} has no record beside it ({record_path(library).name} is missing)", None
    for path in (library.parent, library, record_path(library)):
        why = unsafe(path, owners)
        if why:
            return why, None
    try:
        meta = json.loads(record_path(library).read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return f"{record_path(library)} is unreadable ({exc})", None
    if meta.get("sources") != (digest or source_digest(sources)):
        return f"{library} was built from other sources than these", None
    size = library.stat().st_size
    if size != meta.get("size"):
        return f"{library} has {size} bytes, its record says {meta.get('size')} (truncated or replaced)", None
    if _sha256(library) != meta.get("sha256"):
        return f"{library} does not match the SHA-256 in its record (damaged or replaced)", None
    return None, meta


def torch_facts(timeout: float) -> Dict:
    """The installed torch's version, C++ ABI, include and library directories, asked of a
    separate interpreter started with `-I`, which does not see pip's build isolation: the
    compiled eager call is built against the torch that will load it."""
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"could not ask the installed torch for its build facts ({exc})") from exc
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().split())[-200:]
        raise BuildError(f"torch is not importable by {sys.executable} -I ({tail})")
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    if not isinstance(facts, dict):
        raise BuildError("torch's build facts are not a JSON object")
    return facts


def build_fastpath(target: Path, *, sources: Path = HERE, timeout: Optional[float] = None) -> Dict:
    """Build the compiled eager call (`_fastpath.cpp`) into `target` against the installed torch,
    record included; raises `BuildError` saying why not."""
    if timeout is None:
        timeout = float(os.environ.get("QUASIGRAD_CC_TIMEOUT", DEFAULT_TIMEOUT))
    facts = torch_facts(timeout)
    cands, errors = _compilers_for(target, "CXX", ("c++", "g++", "clang++"), "C++")
    target = Path(target)
    for cxx in cands:
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            tmp = work / "fastpath.so"
            start = time.monotonic()
            cmd = [*cxx, "-O2", "-shared", "-fPIC", "-std=c++17", f"-D_GLIBCXX_USE_CXX11_ABI={int(facts['abi'])}",
                   "-DTORCH_EXTENSION_NAME=_fastpath", "-DTORCH_API_INCLUDE_EXTENSION_H", *facts.get("flags", []),
                   *[f"-I{d}" for d in facts["include"]], str(sources / FASTPATH_SOURCE), "-o", str(tmp),
                   *[f"-L{d}" for d in facts["lib"]], *[f"-Wl,-rpath,{d}" for d in facts["lib"]],
                   "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]
            err = _run(cmd, timeout)
            if err:
                errors.append(err)
                continue
            meta = {"sources": source_digest(sources, (FASTPATH_SOURCE,)), "compiler": " ".join(cxx),
                    "torch": facts["torch"], "abi": int(facts["abi"]), "platform": sys.platform,
                    "machine": platform.machine(), "seconds": round(time.monotonic() - start, 1)}
            _install(tmp, target, meta)
            return meta
        finally:
            shutil.rmtree(work, ignore_errors=True)
    raise BuildError("; ".join(errors))
