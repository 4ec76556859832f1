"""Shared machinery for benchmarks: checked output directories, progress bars, results that
are written atomically and resumed after an interruption, plain-text tables and plots.

A benchmark keeps one :class:`ResultStore` per output directory. Each finished unit of work
(one estimator and one seed, say) is stored under a key as soon as it finishes; a run that is
interrupted and started again skips the keys already stored::

    store = ResultStore(args.out, "polynomial", config={"steps": 8000})
    for key in progress(keys, desc="polynomial"):
        if key in store:
            continue
        store.put(key, run_one(key))          # atomic: never a half-written file

A store refuses to resume results written under a different ``config`` (so a changed setting
never mixes with old numbers); pass ``--fresh`` to start over.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .._util.files import atomic_torch_save, atomic_write_bytes, atomic_write_json
from .._util.files import jsonable as _jsonable
from .._util.tables import format_table, mean_std
from typing import Any, Dict, Iterable, Iterator, List, Optional

__all__ = ["ResultStore", "atomic_write_json", "atomic_write_bytes", "atomic_torch_save", "save_figure",
           "check_out_dir", "progress", "format_table", "add_common_arguments", "mean_std", "load_mnist_arg", "BenchmarkError"]


class BenchmarkError(ValueError):
    """A benchmark's arguments are wrong; raised before any work starts."""


def check_out_dir(path) -> Path:
    """Create ``path`` if needed and make sure a file can be written there; raise
    :class:`BenchmarkError` naming ``--out`` if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchmarkError(f"--out {str(path)!r} cannot be written: {exc.strerror or exc}") from None
    return path


class ResultStore:
    """Finished results of one benchmark, kept in ``out/<name>.json`` and rewritten atomically
    after every :meth:`put`."""

    def __init__(self, out, name: str, config: Optional[Dict[str, Any]] = None, *, fresh: bool = False):
        self.path = check_out_dir(out) / f"{name}.json"
        self.name = name
        self.config = _jsonable(dict(config or {}))
        self.results: Dict[str, Any] = {}
        if self.path.exists() and not fresh:
            try:
                saved = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise BenchmarkError(f"{self.path} exists but cannot be read ({exc}); "
                                     f"delete it or pass --fresh") from None
            if saved.get("config") != self.config:
                raise BenchmarkError(
                    f"{self.path} holds results of another configuration ({saved.get('config')}); "
                    f"use another --out or pass --fresh to discard them")
            self.results = saved.get("results", {})

    def __contains__(self, key: str) -> bool:
        return key in self.results

    def __getitem__(self, key: str) -> Any:
        return self.results[key]

    def get(self, key: str, default=None):
        return self.results.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.results[key] = _jsonable(value)
        self.save()

    def save(self, **extra) -> None:
        payload = {"benchmark": self.name, "config": self.config, "results": self.results}
        payload.update(extra)
        atomic_write_json(self.path, payload)


def progress(iterable: Iterable, *, total: Optional[int] = None, desc: str = "", disable: bool = False) -> Iterator:
    """A progress bar on stderr (tqdm where installed, else a plain counter with elapsed time)."""
    if disable:
        yield from iterable
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    start = time.time()
    for i, item in enumerate(iterable):
        sys.stderr.write(f"\r{desc} {i}/{total if total is not None else '?'} [{time.time() - start:.0f}s]")
        sys.stderr.flush()
        yield item
    sys.stderr.write(f"\r{desc} done [{time.time() - start:.0f}s]\n")


def load_mnist_arg(data):
    """MNIST for a benchmark's ``--data`` option (``None``: the loader's search path); a missing
    or damaged file becomes a :class:`BenchmarkError` raised before any work starts."""
    from ..data import DataError, load_mnist

    try:
        return load_mnist(data)
    except DataError as exc:
        raise BenchmarkError(f"--data: {exc}") from None


def save_figure(fig, path) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def add_common_arguments(parser: argparse.ArgumentParser, *, default_out: str, seeds: Optional[List[int]] = None,
                         estimators: bool = True) -> None:
    """The options every benchmark takes: ``--out``, ``--fresh``, ``--seeds``, ``--estimators``."""
    parser.add_argument("--out", default=default_out, help=f"output directory (default: {default_out})")
    parser.add_argument("--fresh", action="store_true", help="discard results already in --out and start over")
    if seeds is not None:
        parser.add_argument("--seeds", type=int, nargs="+", default=seeds, help=f"seeds (default: {seeds})")
    if estimators:
        parser.add_argument("--estimators", nargs="+", default=None,
                            help="estimator names from the registry (default: the benchmark's own list)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
