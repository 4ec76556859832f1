"""NaN scan of every layer-1 estimator: draws × dtypes × temperatures, counting non-finite values.

For each estimator (categorical and Bernoulli), dtype (float16, bfloat16, float32, float64) and
temperature τ (estimators without one are run once), ``--draws`` rows of hostile logits are
pushed through forward and backward in batches: each row has ``--categories`` logits drawn as
``s·N(0, 1)`` with a per-row scale ``s`` in {1, 30, 1e4}, clamped to ±1e4, with about one logit in
ten masked (−inf; Bernoulli: ±inf, a certain outcome) and every categorical row keeping one
finite logit. The upstream gradient is standard normal. A cell passes when no forward value
and no gradient entry is NaN or ±inf and no call raises.

    PYTHONPATH=. python scripts/nan_scan.py --draws 1000000 --out results/nan-scan.json

Prints one line per cell and a summary; writes the counts as JSON (atomically) if ``--out`` is
given. A run interrupted and restarted with the same ``--out`` skips the cells already written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import quasigrad
from quasigrad import registry
from quasigrad._util.files import atomic_write_json

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
TAUS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 1e3)


def hostile_logits(rows: int, categories: int, variable: str, gen: torch.Generator) -> torch.Tensor:
    """Rows of logits: scaled normals clamped to ±1e4 with about 10% masked (see the module doc)."""
    scale = torch.tensor([1.0, 30.0, 1e4])[torch.randint(0, 3, (rows, 1), generator=gen)]
    x = (torch.randn(rows, categories, generator=gen, dtype=torch.float64) * scale).clamp(-1e4, 1e4)
    masked = torch.rand(rows, categories, generator=gen) < 0.1
    if variable == "categorical":
        masked[:, 0] &= ~masked[:, 1:].all(-1)     # keep one finite logit per row
        return x.masked_fill(masked, float("-inf"))
    sign = torch.where(torch.rand(rows, categories, generator=gen) < 0.5, -1.0, 1.0).to(x.dtype)
    return torch.where(masked, sign * float("inf"), x)


def scan_cell(fn, variable: str, dtype: torch.dtype, tau, draws: int, batch: int, categories: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    bad_forward = bad_grad = errors = done = 0
    first_error = None
    while done < draws:
        rows = min(batch, draws - done)
        x = hostile_logits(rows, categories, variable, gen).to(dtype).requires_grad_(True)
        kwargs = {"generator": gen}
        if tau is not None:
            kwargs["tau"] = tau
        if fn in (quasigrad.gumbel_softmax, quasigrad.bernoulli.gumbel_softmax):
            kwargs["hard"] = True
        try:
            y = fn(x, **kwargs)
            (g,) = torch.autograd.grad(y, x, torch.randn(y.shape, generator=gen).to(y.dtype))
            bad_forward += int((~torch.isfinite(y)).sum())
            bad_grad += int((~torch.isfinite(g)).sum())
        except Exception as exc:  # noqa: BLE001 - counted and reported: the scan looks for failures
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
        done += rows
    out = {"draws": done, "nonfinite_forward": bad_forward, "nonfinite_grad": bad_grad, "errors": errors}
    if first_error:
        out["first_error"] = first_error
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100_000, help="rows per cell (default 100000)")
    parser.add_argument("--batch", type=int, default=50_000, help="rows per call (default 50000)")
    parser.add_argument("--categories", type=int, default=6, help="logits per row (default 6)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the counts (resumable)")
    args = parser.parse_args(argv)
    for name in ("draws", "batch", "categories", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    results = {}
    if args.out is not None and args.out.exists():
        try:
            results = json.loads(args.out.read_text())["cells"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"--out {args.out} is not a scan written by this script ({exc}); remove it or pick another")
    cells = 0
    start = time.time()
    for variable in ("categorical", "bernoulli"):
        for info in registry.entries(layer=1):
            fn = info.function(variable)
            for dname, dtype in DTYPES.items():
                for tau in (TAUS if info.has_tau else (None,)):
                    key = f"{variable}/{info.name}/{dname}/tau={tau}"
                    if key not in results:
                        results[key] = scan_cell(fn, variable, dtype, tau, args.draws, args.batch, args.categories,
                                                 seed=len(results))
                        if args.out is not None:
                            atomic_write_json(args.out, {"settings": vars(args) | {"out": str(args.out)},
                                                         "cells": results})
                    r = results[key]
                    cells += 1
                    status = "ok" if not (r["nonfinite_forward"] or r["nonfinite_grad"] or r["errors"]) else "FAIL"
                    print(f"{key:52s} draws={r['draws']:>9d} nonfinite y={r['nonfinite_forward']} "
                          f"grad={r['nonfinite_grad']} errors={r['errors']} {status}", flush=True)
    failing = [k for k, r in results.items() if r["nonfinite_forward"] or r["nonfinite_grad"] or r["errors"]]
    total = sum(r["draws"] for r in results.values())
    print(f"{cells} cells, {total} draws in all, {len(failing)} failing cell(s); {time.time() - start:.0f} s")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
