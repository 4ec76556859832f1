"""What a benchmark keeps on disk: its result store, the record of the runs that filled it, and
its checkpoints.

A store is `out/<name>.json`:

```text
{"benchmark": "polynomial",
 "config": {...},                 # the settings the results depend on
 "results": {"st/seed=0": {...}, ...},
 "meta": {"invocations": [...], "wall_seconds": ..., "cpu_seconds": ...},
 ...}                             # the benchmark's summary (tables) after a complete run
```

A store is validated when it is opened, before any work starts: a damaged file, a missing
field or a result the benchmark cannot read is refused with one line naming the file. A store
written under another `config` is refused too (so a changed setting never mixes with old
numbers). `meta` records, for every invocation of the command, the versions of quasigrad
and torch, the git commit when run from a checkout, the full command line, and the wall and
CPU time; it takes no part in the `config` check, so stores written before it existed
resume as they are.

Checkpoints hold tensors, numbers, strings and containers of them, and are loaded with
`torch.load(..., weights_only=True)`: a file planted in `--out` cannot run code.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

from .._util.files import atomic_torch_save, atomic_write_json
from .._util.files import jsonable as _jsonable

__all__ = ["BenchmarkError", "ResultStore", "check_out_dir", "load_checkpoint", "save_checkpoint",
           "restoring_checkpoint", "invocation_record", "package_version"]

#: Checks one stored result: ``(key, value) -> None`` when it is usable, else what is wrong.
ResultCheck = Callable[[str, Any], Optional[str]]


class BenchmarkError(ValueError):
    """A benchmark's arguments or files are wrong; raised before any work starts where it can
    be, and shown by `quasigrad bench` as one line (exit status 2)."""


def check_out_dir(path: os.PathLike, *, option: str = "--out") -> Path:
    """Create `path` if needed and make sure a file can be written there.

    Args:
        path: the directory.
        option: the option that named it, for the message.

    Returns:
        The directory as a `Path`.

    Raises:
        BenchmarkError: naming `option` and the reason.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchmarkError(f"{option} {str(path)!r} cannot be written: {exc.strerror or exc}") from None
    return path


# --------------------------------------------------------------------------- provenance

_GIT: Dict[str, Any] = {}


def _git_state() -> Dict[str, Any]:
    """The commit of the checkout quasigrad is imported from (`None` outside a checkout) and
    whether tracked files differ from it."""
    if not _GIT:
        root = Path(__file__).resolve().parents[2]
        commit, dirty = None, None
        if (root / ".git").exists():
            try:
                commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
                if commit:
                    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                            capture_output=True, text=True, timeout=10)
                    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
            except (OSError, subprocess.SubprocessError):
                commit, dirty = None, None
        _GIT.update(commit=commit, dirty=dirty)
    return dict(_GIT)


def package_version() -> str:
    """quasigrad's version, `quasigrad.__version__` (read from the package, which Python has
    initialised before any of its modules; importing it here would make a cycle)."""
    return str(getattr(sys.modules[__name__.split(".")[0]], "__version__", "unknown"))


def invocation_record(command: Iterable[str], **extra: Any) -> Dict[str, Any]:
    """What one run of a benchmark command records about itself (times are filled in as it runs).

    Args:
        command: the full command line, program name first.
        **extra: more fields (device, threads).

    Returns:
        A dict with `command`, `argv`, `quasigrad`, `torch`, `python`, `git_commit`,
        `git_dirty`, `started` (UTC, ISO 8601), `wall_seconds`, `cpu_seconds` and `units`
        (the keys this invocation computed).
    """
    import torch

    argv = [str(a) for a in command]
    git = _git_state()
    return {"command": shlex.join(argv), "argv": argv, "quasigrad": package_version(), "torch": torch.__version__,
            "python": platform.python_version(), "git_commit": git["commit"], "git_dirty": git["dirty"],
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": 0.0, "cpu_seconds": 0.0, "units": [], **extra}


# --------------------------------------------------------------------------- the store


class ResultStore:
    """Finished results of one benchmark, kept in `out/<name>.json` and rewritten atomically
    after every `put`.

    Args:
        out: the output directory (created if needed).
        name: the benchmark's name (the file is `<name>.json`).
        config: the settings the results depend on; an existing store written under another
            `config` is refused.
        fresh: ignore (and, on the first write, replace) an existing store.
        check: validates each stored result when the store is opened.
        invocation: this run's `invocation_record`, appended to `meta` (`None`: no
            record, as for a store opened only to read it).
        write: `False` keeps results in memory only (the non-zero ranks of a distributed run).

    Raises:
        BenchmarkError: the file cannot be read, is not a store of this benchmark, misses a
            field, holds a result `check` refuses, or was written under another `config`.
    """

    def __init__(self, out: os.PathLike, name: str, config: Optional[Dict[str, Any]] = None, *, fresh: bool = False,
                 check: Optional[ResultCheck] = None, invocation: Optional[Dict[str, Any]] = None,
                 write: bool = True):
        self.path = check_out_dir(out) / f"{name}.json"
        self.name = name
        self.config = _jsonable(dict(config or {}))
        self.results: Dict[str, Any] = {}
        self.extra: Dict[str, Any] = {}
        self.meta: Dict[str, Any] = {"invocations": []}
        self.write = write
        if not fresh and (self.path.exists() or self.path.is_symlink()):
            self._load(check)
        self.invocation = invocation
        if invocation is not None:
            self.meta["invocations"].append(invocation)
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    def _refuse(self, what: str) -> BenchmarkError:
        return BenchmarkError(f"{self.path} {what}; repair or delete it, or pass --fresh to start over")

    def _load(self, check: Optional[ResultCheck]) -> None:
        try:
            text = self.path.read_bytes()
        except OSError as exc:
            raise BenchmarkError(f"{self.path} cannot be read ({exc.strerror or exc}); check its permissions, "
                                 f"or pass --fresh to replace it") from None
        try:
            saved = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._refuse(f"is not valid JSON ({exc})") from None
        if not isinstance(saved, dict):
            raise self._refuse(f"is not a result store (a JSON object), it holds a {type(saved).__name__}")
        for field, kind in (("benchmark", str), ("config", dict), ("results", dict)):
            if field not in saved:
                raise self._refuse(f"misses the field {field!r}")
            if not isinstance(saved[field], kind):
                raise self._refuse(f"has {field!r} = {_short(saved[field])}, expected a JSON "
                                   f"{'string' if kind is str else 'object'}")
        if saved["benchmark"] != self.name:
            raise BenchmarkError(f"{self.path} holds results of the benchmark {saved['benchmark']!r}, "
                                 f"not {self.name!r}; use another --out")
        meta = saved.get("meta", {"invocations": []})
        if not (isinstance(meta, dict) and isinstance(meta.get("invocations", []), list)):
            raise self._refuse(f"has a malformed 'meta' field ({_short(meta)})")
        if saved["config"] != self.config:
            raise BenchmarkError(
                f"{self.path} holds results of another configuration ({saved['config']}); "
                f"use another --out or pass --fresh to discard them")
        if check is not None:
            for key, value in saved["results"].items():
                problem = check(key, value)
                if problem:
                    raise self._refuse(f"holds a damaged result {key!r}: {problem}")
        self.results = saved["results"]
        self.meta = {**meta, "invocations": list(meta.get("invocations", []))}
        self.extra = {k: v for k, v in saved.items() if k not in ("benchmark", "config", "results", "meta")}

    def __contains__(self, key: str) -> bool:
        return key in self.results

    def __getitem__(self, key: str) -> Any:
        return self.results[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The result stored under `key`, or `default`."""
        return self.results.get(key, default)

    def put(self, key: str, value: Any) -> None:
        """Store one finished unit's result and rewrite the file."""
        self.results[key] = _jsonable(value)
        if self.invocation is not None:
            self.invocation["units"].append(key)
        self.save()

    def save(self, **extra: Any) -> None:
        """Rewrite the file (`extra`: top-level fields such as the summary; kept until replaced)."""
        self.extra.update(_jsonable(extra))
        if self.invocation is not None:
            self.invocation["wall_seconds"] = time.perf_counter() - self._wall0
            self.invocation["cpu_seconds"] = time.process_time() - self._cpu0
        runs = self.meta["invocations"]
        self.meta["wall_seconds"] = sum(float(r.get("wall_seconds") or 0) for r in runs if isinstance(r, dict))
        self.meta["cpu_seconds"] = sum(float(r.get("cpu_seconds") or 0) for r in runs if isinstance(r, dict))
        if not self.write:
            return
        payload = {**self.extra, "benchmark": self.name, "config": self.config, "results": self.results,
                   "meta": self.meta}
        atomic_write_json(self.path, payload)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------- checkpoints


@contextlib.contextmanager
def restoring_checkpoint(path: os.PathLike) -> Iterator[None]:
    """Turn any failure while reading or restoring the checkpoint `path` into one
    `BenchmarkError` naming the file and suggesting `--fresh`."""
    try:
        yield
    except BenchmarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in many ways inside torch
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(reason) > 160:
            reason = reason[:157] + "..."
        raise BenchmarkError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {reason}); delete it, "
                             f"or pass --fresh to start over") from None


def load_checkpoint(path: os.PathLike, *, required: Iterable[str] = (), map_location: Any = None) -> Dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, refusing anything but tensors,
    numbers, strings and containers (`weights_only=True`).

    Args:
        path: the file.
        required: keys the checkpoint must have.
        map_location: as for `torch.load`.

    Returns:
        The checkpoint's dict.

    Raises:
        BenchmarkError: the file is unreadable, truncated, not a checkpoint, holds objects
            other than tensors and plain data, or misses a required key.
    """
    import torch

    with restoring_checkpoint(path):
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"it holds a {type(state).__name__}, not a dict")
        missing = [k for k in required if k not in state]
        if missing:
            raise KeyError(f"missing {', '.join(map(repr, missing))}")
    return state


def save_checkpoint(state: Dict[str, Any], path: os.PathLike) -> None:
    """Write a checkpoint atomically (a reader never sees half a file)."""
    atomic_torch_save(state, path)
