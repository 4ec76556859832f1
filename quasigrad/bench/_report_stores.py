"""Result stores as the reproduction page reads them: found under a directory, parsed as JSON
(never unpickled), and validated field by field, so that a damaged or hostile file fails with one
line naming it and its fault."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List

from .mnist_sort import history_ok
from .runner import BenchmarkError

__all__ = ["ReportError", "Store", "load_stores", "MAX_STORE_BYTES"]

MAX_STORE_BYTES = 64 << 20


class ReportError(BenchmarkError):
    """A result store that cannot be read or fails validation (the message names the file)."""


@dataclasses.dataclass
class Store:
    """One validated result store: its path relative to the results directory and its content."""

    path: str
    benchmark: str
    config: Dict[str, Any]
    results: Dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Reading and validating the stores


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReportError(f"{where}: needs a finite number, got {value!r}")
    return float(value)


def _need(mapping, key: str, where: str):
    if not isinstance(mapping, dict) or key not in mapping:
        raise ReportError(f"{where}: missing {key!r}")
    return mapping[key]


_KEYS = {"vae": r"[^/]+/[^/]+/seed\d+", "binary-vae": r"K\d+/[^/]+/seed\d+", "polynomial": r".+/seed=\d+",
         "mnist-sort": r"[^/]+/n=\d+/seed=\d+", "efficiency": r"\d+(x\d+)*/.+", "listops": r"[^/]+/seed\d+",
         "nas": r"[^/]+/seed\d+"}


# Settings the page reads from a store's config, as numbers.
_CONFIG_NUMBERS = {"listops": ("epochs", "train", "hidden", "max_length"),
                   "nas": ("search_epochs", "search_size", "retrain_epochs", "retrain_size")}


def _validate(store: Store) -> None:
    pattern = _KEYS.get(store.benchmark)
    if pattern is None:
        return                                  # a store this page does not read: only its shape is checked
    where = store.path
    n_p = len(_need(store.config, "p", where)) if store.benchmark == "polynomial" else None
    for field in _CONFIG_NUMBERS.get(store.benchmark, ()):
        _number(_need(store.config, field, f"{where}: config"), f"{where}: config {field}")
    for key, value in store.results.items():
        at = f"{where}: result {key!r}"
        if not re.fullmatch(pattern, key):
            raise ReportError(f"{at}: the key does not have the form of a {store.benchmark} result")
        if not isinstance(value, dict):
            raise ReportError(f"{at}: needs an object, got {type(value).__name__}")
        if store.benchmark in ("vae", "binary-vae"):
            for field in ("train_neg_elbo", "test_neg_elbo"):
                _number(_need(value, field, at), f"{at} {field}")
            history = _need(value, "history", at)
            if not isinstance(history, list) or not history:
                raise ReportError(f"{at}: history must be a non-empty list")
            _number(_need(history[-1], "steps", at + " history"), f"{at} history steps")
        elif store.benchmark == "polynomial":
            for field in ("final_train_loss", "exact_loss"):
                vals = _need(value, field, at)
                if not isinstance(vals, list) or len(vals) != n_p:
                    raise ReportError(f"{at}: {field} must hold one value per p ({n_p})")
                for v in vals:
                    _number(v, f"{at} {field}")
        elif store.benchmark in ("listops", "nas"):
            for field in ("valid_acc", "test_acc"):
                if not 0 <= _number(_need(value, field, at), f"{at} {field}") <= 100:
                    raise ReportError(f"{at}: {field} must be a percentage in [0, 100]")
            if store.benchmark == "nas":
                genotype = _need(value, "genotype", at)
                if not (isinstance(genotype, list) and all(isinstance(g, str) for g in genotype)):
                    raise ReportError(f"{at}: genotype must be a list of operation names")
        elif store.benchmark == "mnist-sort":
            for field in ("exact", "elementwise"):
                if not 0 <= _number(_need(value, field, at), f"{at} {field}") <= 1:
                    raise ReportError(f"{at}: {field} must be a proportion in [0, 1]")
            if not history_ok(value.get("history", [])):
                raise ReportError(f"{at}: history must be a list of [step, exact, elementwise] rows")
        else:
            for field in ("time_ms", "peak_mib"):
                if _need(value, field, at) is not None:
                    _number(value[field], f"{at} {field}")
            if value.get("time_ratio") is not None:
                _number(value["time_ratio"], f"{at} time_ratio")
            for field in ("time_ms_all", "softmax_ms_all"):
                rounds = value.get(field, [])
                if not (isinstance(rounds, list) and len(rounds) <= 10_000):
                    raise ReportError(f"{at}: {field} must be a list of times in ms")
                for t in rounds:
                    if _number(t, f"{at} {field}") <= 0:
                        raise ReportError(f"{at}: {field} must hold positive times")


def load_stores(results_dir) -> List[Store]:
    """Every `*.json` store under `results_dir` (recursively, sorted by path), validated.

    Args:
        results_dir: the directory to search.

    Returns:
        The stores, sorted by path relative to `results_dir`.

    Raises:
        ReportError: a file that is not JSON, too large, or not a valid result store (one line
            naming the file and the fault).
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ReportError(f"--results {str(root)!r} is not a directory")
    stores = []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        if path.stat().st_size > MAX_STORE_BYTES:
            raise ReportError(f"{rel}: larger than {MAX_STORE_BYTES >> 20} MiB; not a result store")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ReportError(f"{rel}: cannot be read as JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("benchmark"), str):
            raise ReportError(f"{rel}: not a result store (needs an object with a 'benchmark' name)")
        config, results = data.get("config"), data.get("results")
        if not isinstance(config, dict) or not isinstance(results, dict):
            raise ReportError(f"{rel}: not a result store ('config' and 'results' must be objects)")
        store = Store(rel, data["benchmark"], config, results)
        _validate(store)
        stores.append(store)
    return stores
