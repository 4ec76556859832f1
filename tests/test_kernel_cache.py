"""The kernel library's loader never crashes or hangs the process: every fault of the cache or of
the compilers ends in a rebuild or in the PyTorch path, and ``status()`` says which and why.

The faults run in subprocesses (a SIGBUS inside dlopen or a hanging compiler would take pytest
down with it). To keep them quick, the "compilers" are small scripts: ``fakecc`` builds by
copying the library this process loaded (so a rebuild is instant and gives a working library),
``hangcc`` never returns, ``failcc`` exits with an error. Each scenario gets its own cache
directory, so every library is opened from a path not opened before. The package is copied
without an installed library, so that the loader goes to the cache.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import quasigrad
from quasigrad.estimators import _build, _native

pytestmark = pytest.mark.skipif(not _native.available() or os.name != "posix",
                                reason=f"needs the fused kernels on POSIX: {_native.status()}")

FAKECC = """#!/bin/sh
out=""; shared=0
while [ $# -gt 0 ]; do
  case "$1" in -o) out="$2"; shift ;; -shared) shared=1 ;; esac
  shift
done
if [ "$shared" = 1 ]; then /bin/cp "$QG_TEST_LIBRARY" "$out"; else : > "$out"; fi
"""
HANGCC = """#!/bin/sh
echo $$ > "$QG_TEST_PIDFILE"
exec /bin/sleep 600
"""
# a compiler without OpenMP, as Apple clang is: it refuses -fopenmp and builds everything else
# with the real compiler (REAL_CC is filled in)
NOOMPCC = """#!/bin/sh
for a in "$@"; do
  case "$a" in -fopenmp*) echo "clang: error: unsupported option '$a'" >&2; exit 1 ;; esac
done
exec REAL_CC "$@"
"""
FAILCC = """#!/bin/sh
echo "fatal error: this compiler always fails" >&2
exit 1
"""

# Each scenario: set up the cache directory (and the environment), then the loader runs.
SCENARIOS = textwrap.dedent(r"""
    import json, os, shutil, stat, sys, time
    from pathlib import Path
    from quasigrad.estimators import _build, _native
    import torch

    root, good = Path(sys.argv[1]), Path(sys.argv[2])
    fake, only = root / "bin", root / "empty"
    name = "kernels-" + _build.source_digest()[:16] + ".so"
    base_env = dict(os.environ)

    def cached(cache):
        # a valid cached library, as a previous process would have left it
        cache.mkdir(mode=0o700)
        shutil.copyfile(good, cache / name)
        os.chmod(cache / name, 0o755)
        _build.write_record(cache / name, {"sources": _build.source_digest(), "compiler": "earlier",
                                           "openmp": True, "variants": [v for v, _ in _build.variants()]})
        return cache / name

    def truncated(cache):
        lib = cached(cache)
        lib.write_bytes(lib.read_bytes()[:4096])

    def empty(cache):
        cached(cache).write_bytes(b"")

    def garbage(cache):
        lib = cached(cache)
        lib.write_bytes(os.urandom(lib.stat().st_size))   # the right size, the wrong bytes

    def garbage_with_record(cache):
        lib = cached(cache)
        lib.write_bytes(os.urandom(50000))
        _build.write_record(lib, {"sources": _build.source_digest(), "compiler": "earlier", "openmp": True})

    def no_record(cache):
        lib = cached(cache)
        _build.record_path(lib).unlink()

    def foreign(cache):
        os.chown(cached(cache), 12345, 12345)

    def writable(cache):
        os.chmod(cached(cache), 0o666)

    def symlink(cache):
        lib = cached(cache)
        target = cache.parent / (cache.name + "-elsewhere.so")
        shutil.move(lib, target)
        os.symlink(target, lib)

    def open_dir(cache):
        cache.mkdir()
        os.chmod(cache, 0o777)

    def fresh(cache):
        pass

    scenarios = {
        "truncated": (truncated, {}), "empty": (empty, {}), "garbage": (garbage, {}),
        "garbage_with_record": (garbage_with_record, {}), "no_record": (no_record, {}),
        "writable": (writable, {}), "symlink": (symlink, {}), "open_dir": (open_dir, {}),
        "valid": (cached, {}),
        "fail_then_next": (fresh, {"CC": str(root / "failcc"), "PATH": str(fake)}),
        "not_executable_cc": (fresh, {"CC": str(root / "notexec"), "PATH": str(fake)}),
        "missing_compiler": (fresh, {"CC": "/nonexistent/cc", "PATH": str(only)}),
        "only_failing_compiler": (fresh, {"CC": str(root / "failcc"), "PATH": str(only)}),
    }
    if (root / "noompcc").exists():
        scenarios["no_openmp"] = (fresh, {"CC": str(root / "noompcc"), "PATH": base_env.get("PATH", "")})
    if os.getuid() == 0:
        scenarios["foreign"] = (foreign, {})
    for key, (setup, env) in scenarios.items():
        cache = root / ("cache-" + key)
        os.environ.clear()
        os.environ.update(base_env)
        os.environ.update({"QUASIGRAD_CACHE": str(cache), "PATH": str(fake)})
        os.environ.update(env)
        setup(cache)
        _native._tried, _native._kernels, _native._reason = False, None, None
        start = time.monotonic()
        info = _native.info()
        works, drawn = False, None
        if info["in_use"]:
            d, index, row_max, bad = _native.sample(torch.randn(64, 9, generator=torch.Generator().manual_seed(0)), 1)
            works, drawn = bad == 0 and bool((d.sum(-1) == 1).all()), index.tolist()
        files = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
        mode = stat.S_IMODE(os.lstat(cache / name).st_mode) if (cache / name).exists() else None
        owner = os.lstat(cache / name).st_uid if (cache / name).exists() else None
        print(json.dumps({"scenario": key, "info": info, "works": works, "drawn": drawn, "files": files, "mode": mode,
                          "owner": owner, "seconds": time.monotonic() - start, "status": _native.status()}),
              flush=True)
""")


def _scripts(root: Path) -> None:
    (root / "bin").mkdir()
    (root / "empty").mkdir()
    for name, text, mode in (("bin/cc", FAKECC, 0o755), ("hangcc", HANGCC, 0o755), ("failcc", FAILCC, 0o755),
                             ("notexec", FAKECC, 0o644)):
        (root / name).write_text(text)
        os.chmod(root / name, mode)
    real = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if real:
        (root / "noompcc").write_text(NOOMPCC.replace("REAL_CC", shlex.quote(real)))
        os.chmod(root / "noompcc", 0o755)


def _package_copy(root: Path) -> Path:
    """The package, without an installed library, for PYTHONPATH."""
    dest = root / "pkg"
    shutil.copytree(Path(quasigrad.__file__).parent, dest / "quasigrad",
                    ignore=shutil.ignore_patterns("_kernels.bin*", "__pycache__"))
    return dest


def _env(root: Path, pkg: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUASIGRAD_")}
    env.update(PYTHONPATH=str(pkg), QG_TEST_LIBRARY=_native.info()["path"], QG_TEST_PIDFILE=str(root / "hang.pid"))
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernel-cache")
    os.chmod(root, 0o700)
    _scripts(root)
    pkg = _package_copy(root)
    proc = subprocess.run([sys.executable, "-c", SCENARIOS, str(root), _native.info()["path"]],
                          env=_env(root, pkg), capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, f"the loader crashed (exit {proc.returncode}): {proc.stderr[-3000:]}"
    return {r["scenario"]: r for r in map(json.loads, proc.stdout.splitlines())}


@pytest.mark.parametrize("scenario,why", [
    ("truncated", "truncated"), ("empty", "truncated"), ("garbage", "SHA-256"), ("no_record", "no record"),
    ("writable", "writable by others"), ("symlink", "symbolic link"), ("garbage_with_record", "did not load"),
    ("foreign", "owned by uid 12345"),
])
def test_a_bad_cached_library_is_refused_and_rebuilt(faults, scenario, why):
    if scenario not in faults:
        pytest.skip("changing a file's owner needs root")
    r = faults[scenario]
    assert r["info"]["in_use"] and r["works"], r["status"]
    notes = " ".join(r["info"]["notes"])
    assert "cached library refused" in notes and why in notes and "rebuilt" in notes, r["status"]
    assert r["mode"] == 0o755 and r["owner"] == os.getuid()      # the rebuilt file is ours, not writable by others
    assert why in r["status"]


def test_a_valid_cached_library_is_loaded_without_building(faults):
    r = faults["valid"]
    assert r["info"]["in_use"] and r["works"] and r["info"]["compiler"] == "earlier"
    assert not any("refused" in n for n in r["info"]["notes"])


def test_a_cache_directory_others_can_write_is_not_used(faults):
    r = faults["open_dir"]
    assert r["info"]["in_use"] and r["works"]
    assert "cache directory refused" in r["status"] and "writable by others" in r["status"]
    assert "private temporary directory" in r["status"]
    assert r["files"] == []                     # nothing was written into the open directory


def test_a_failing_compiler_is_followed_by_the_next(faults):
    r = faults["fail_then_next"]
    assert r["info"]["in_use"] and r["works"], r["status"]
    assert "failcc: exit status 1" in r["status"] and "always fails" in r["status"]


def test_a_non_executable_cc_is_skipped_and_leaves_nothing_behind(faults):
    r = faults["not_executable_cc"]
    assert r["info"]["in_use"] and r["works"], r["status"]
    assert "not executable" in r["status"]
    name = Path(r["info"]["path"]).name
    assert r["files"] == sorted([name, name + ".json"])   # no empty or temporary file in the cache


def test_no_compiler_falls_back_cleanly(faults):
    r = faults["missing_compiler"]
    assert not r["info"]["in_use"]
    assert "not in use" in r["status"] and "PyTorch operators" in r["status"]
    assert "/nonexistent/cc: not found" in r["status"] and "no C compiler found" in r["status"]
    r = faults["only_failing_compiler"]
    assert not r["info"]["in_use"] and "failcc: exit status 1" in r["status"]


def test_a_compiler_without_openmp_builds_kernels_that_draw_the_same_samples(faults):
    # Apple clang has no -fopenmp: the build is made again without it, runs one thread per
    # call, and draws what the OpenMP build draws from the same seed
    if "no_openmp" not in faults:
        pytest.skip("no C compiler here")
    r = faults["no_openmp"]
    assert r["info"]["in_use"] and r["works"] and r["info"]["openmp"] is False, r["status"]
    assert "built without OpenMP" in r["status"]
    _, index, _, _ = _native.sample(torch.randn(64, 9, generator=torch.Generator().manual_seed(0)), 1)
    assert r["drawn"] == index.tolist()


def _fresh_process(root, pkg, code, timeout, **env):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=_env(root, pkg, **env), capture_output=True, text=True,
                          timeout=timeout, cwd=root)
    return proc, time.monotonic() - start


STATUS = ("import json, torch, quasigrad\nfrom quasigrad.estimators import _native\n"
          "y = quasigrad.st(torch.randn(32, 5), generator=torch.Generator().manual_seed(0))\n"
          "print(json.dumps({'info': _native.info(), 'status': _native.status(), 'ok': bool((y.sum(-1) == 1).all())}))")


def test_a_truncated_library_in_a_new_process_is_rebuilt_not_loaded(tmp_path):
    # the fault that killed Python with SIGBUS inside dlopen: a new process, a truncated cache file
    _scripts(tmp_path)
    pkg = _package_copy(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    lib = cache / f"kernels-{_build.source_digest()[:16]}.so"
    shutil.copyfile(_native.info()["path"], lib)
    _build.write_record(lib, {"sources": _build.source_digest(), "compiler": "earlier", "openmp": True,
                              "variants": [v for v, _ in _build.variants()]})
    lib.write_bytes(lib.read_bytes()[: lib.stat().st_size // 3])
    proc, _ = _fresh_process(tmp_path, pkg, STATUS, 300, QUASIGRAD_CACHE=str(cache), PATH=str(tmp_path / "bin"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["ok"] and out["info"]["in_use"] and "truncated" in out["status"] and "rebuilt" in out["status"]


def test_a_hanging_compiler_is_killed_and_the_next_one_used(tmp_path):
    _scripts(tmp_path)
    pkg = _package_copy(tmp_path)
    proc, seconds = _fresh_process(tmp_path, pkg, STATUS, 300, QUASIGRAD_CACHE=str(tmp_path / "cache"),
                                   CC=str(tmp_path / "hangcc"), PATH=str(tmp_path / "bin"), QUASIGRAD_CC_TIMEOUT="3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["ok"] and out["info"]["in_use"], out["status"]
    assert "timed out after 3 s" in out["status"]
    pid = int((tmp_path / "hang.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)                                           # the hanging compiler was killed
    # and with no other compiler: the PyTorch path, still no hang
    proc, seconds = _fresh_process(tmp_path, pkg, STATUS, 300, QUASIGRAD_CACHE=str(tmp_path / "cache2"),
                                   CC=str(tmp_path / "hangcc"), PATH=str(tmp_path / "empty"), QUASIGRAD_CC_TIMEOUT="3")
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["ok"] and not out["info"]["in_use"] and "timed out after 3 s" in out["status"]


def test_installed_library_is_checked_like_a_cached_one(tmp_path):
    _scripts(tmp_path)
    pkg = _package_copy(tmp_path)
    installed = pkg / "quasigrad" / "estimators" / _build.INSTALLED_NAME
    shutil.copyfile(_native.info()["path"], installed)
    os.chmod(installed, 0o755)
    _build.write_record(installed, {"sources": _build.source_digest(), "compiler": "setup", "openmp": True,
                                    "variants": [v for v, _ in _build.variants()]})
    code = STATUS
    proc, _ = _fresh_process(tmp_path, pkg, code, 300, QUASIGRAD_CACHE=str(tmp_path / "cache"), PATH=str(tmp_path / "bin"))
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["ok"] and out["info"]["path"] == str(installed), out["status"]
    assert "when the package was installed" in out["status"]
    # damaged: refused, and the cache is used instead
    installed.write_bytes(installed.read_bytes()[:1000])
    proc, _ = _fresh_process(tmp_path, pkg, code, 300, QUASIGRAD_CACHE=str(tmp_path / "cache"), PATH=str(tmp_path / "bin"))
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["ok"] and out["info"]["in_use"] and out["info"]["path"] != str(installed)
    assert "installed library refused" in out["status"] and "truncated" in out["status"]


def test_status_explains_windows_and_environment_fallbacks(monkeypatch):
    # the loader's decision on Windows, faked here (the kernels are not built there)
    for name, value in (("_tried", False), ("_kernels", None), ("_reason", None), ("_notes", [])):
        monkeypatch.setattr(_native, name, value)
    monkeypatch.setattr(sys, "platform", "win32")
    assert "not built on Windows" in _native.status() and "PyTorch operators" in _native.status()
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setenv("QUASIGRAD_NATIVE", "0")
    assert "turned off by QUASIGRAD_NATIVE" in _native.status()
