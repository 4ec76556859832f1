"""``quasigrad bench sort-speed``: forward and forward+backward time of the relaxed sorts against
``torch.sort``, across the number of items n and the batch size.

Methods: ``torch.sort`` (the hard sort, for scale), ``soft_sort`` and ``soft_rank`` (l2 and KL,
Blondel et al. 2020, this package's pure-PyTorch PAV), ``neural_sort`` and
``soft_sort_permutation`` (O(n²) permutation matrices, run for n ≤ ``--max-quadratic-n``), and,
when installed, ``torchsort.soft_rank`` and ``diffsort`` (odd-even network) as peers. Each time
is the median of ``--repeats`` runs after one warm-up, on Gaussian rows (seed 0), with one torch
thread by default (``--threads``). The number of PAV rounds that ``soft_rank`` (l2 and KL) needed
is reported beside it.

Short preset: n ∈ {10, 100, 1000}, batch ∈ {1, 64}. ``--full``: n up to 10⁴, batch up to 256.
"""

from __future__ import annotations

import importlib
import statistics
import time

import torch

from .runner import BenchmarkError, ResultStore, add_common_arguments, format_table, progress, save_figure

DESCRIPTION = "time of soft sort/rank, NeuralSort, SoftSort (and torchsort/diffsort if installed) vs torch.sort"

METHODS = ["torch.sort", "soft_sort", "soft_rank", "soft_rank_kl", "neural_sort", "soft_sort_permutation",
           "torchsort", "diffsort"]
QUADRATIC = {"neural_sort", "soft_sort_permutation", "diffsort"}


def add_arguments(parser):
    add_common_arguments(parser, default_out="results/sort-speed", estimators=False)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of items n (default 10 100 1000)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 64)")
    parser.add_argument("--full", action="store_true", help="n in 10..10000 and batch in 1, 16, 256")
    parser.add_argument("--methods", nargs="+", default=None, help=f"subset of {METHODS}")
    parser.add_argument("--strength", type=float, default=1.0, help="regularization strength ε / temperature τ")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    parser.add_argument("--max-quadratic-n", type=int, default=1000, help="largest n for the O(n²) methods")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for the run (default 1: steadier timings on a shared machine)")


def _peer(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _make(method, n, eps):
    from .. import sort as qs

    if method == "torch.sort":
        return lambda x: x.sort(-1).values
    if method == "soft_sort":
        return lambda x: qs.soft_sort(x, regularization_strength=eps)
    if method == "soft_rank":
        return lambda x: qs.soft_rank(x, regularization_strength=eps)
    if method == "soft_rank_kl":
        return lambda x: qs.soft_rank(x, regularization="kl", regularization_strength=eps)
    if method == "neural_sort":
        return lambda x: qs.neural_sort(x, tau=eps)
    if method == "soft_sort_permutation":
        return lambda x: qs.soft_sort_permutation(x, tau=eps)
    if method == "torchsort":
        ts = _peer("torchsort")
        return None if ts is None else (lambda x: ts.soft_rank(x, regularization_strength=eps))
    if method == "diffsort":
        ds = _peer("diffsort")
        if ds is None:
            return None
        net = ds.DiffSortNet("odd_even", n, steepness=1.0 / eps)
        return lambda x: net(x)[1]
    raise AssertionError(method)


def _time(fn, x, repeats, backward):
    def once():
        xx = x.detach().requires_grad_(backward)
        start = time.perf_counter()
        out = fn(xx)
        if backward:
            out.backward(torch.ones_like(out))
        if x.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats)) * 1e3


def run(args) -> int:
    methods = args.methods or METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise BenchmarkError(f"unknown --methods {unknown}; choose from {METHODS}")
    sizes = args.sizes or ([10, 100, 1000, 10000] if args.full else [10, 100, 1000])
    batches = args.batches or ([1, 16, 256] if args.full else [1, 64])
    if min(sizes) < 1 or min(batches) < 1 or args.repeats < 1 or args.strength <= 0:
        raise BenchmarkError("--sizes, --batches and --repeats need positive integers and --strength a positive number")
    if args.threads < 1:
        raise BenchmarkError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    from .. import sort as qs

    config = {"sizes": sizes, "batches": batches, "strength": args.strength, "repeats": args.repeats,
              "max_quadratic_n": args.max_quadratic_n, "threads": torch.get_num_threads()}
    store = ResultStore(args.out, "sort-speed", config, fresh=args.fresh)
    cells = [(m, n, b) for n in sizes for b in batches for m in methods]
    for method, n, b in progress(cells, desc="sort-speed", disable=args.no_progress):
        key = f"{method}/n={n}/b={b}"
        if key in store:
            continue
        if method in QUADRATIC and n > args.max_quadratic_n:
            store.put(key, {"skipped": f"O(n^2) method, n > {args.max_quadratic_n}"})
            continue
        fn = _make(method, n, args.strength)
        if fn is None:
            store.put(key, {"skipped": "not installed"})
            continue
        x = torch.randn(b, n, generator=torch.Generator().manual_seed(0))
        row = {"forward_ms": _time(fn, x, args.repeats, False), "forward_backward_ms": _time(fn, x, args.repeats, True)}
        if method in ("soft_rank", "soft_rank_kl"):
            s = (x / args.strength).sort(-1, descending=True).values
            rho = torch.arange(n, 0, -1, dtype=s.dtype)
            reg, w = ("l2", rho) if method == "soft_rank" else ("kl", torch.log(rho))
            row["pav_rounds"] = qs.isotonic._isotonic(s, w, reg, count_rounds=True)
        store.put(key, row)

    rows = []
    for n in sizes:
        for b in batches:
            base = store.get(f"torch.sort/n={n}/b={b}", {}).get("forward_backward_ms")
            for m in methods:
                r = store.get(f"{m}/n={n}/b={b}", {})
                if "skipped" in r:
                    continue
                ratio = r["forward_backward_ms"] / base if base else float("nan")
                rows.append([m, n, b, r["forward_ms"], r["forward_backward_ms"], ratio, r.get("pav_rounds", "")])
    print(format_table(rows, ["method", "n", "batch", "fwd ms", "fwd+bwd ms", "fwd+bwd / torch.sort", "PAV rounds"],
                       floatfmt=".3g"))
    skipped = sorted({f"{k.split('/')[0]} ({v['skipped']})" for k, v in store.results.items() if "skipped" in v})
    if skipped:
        print("skipped: " + ", ".join(skipped))
    _plot(store, methods, sizes, batches, args.out)
    print(f"results: {store.path}")
    return 0


def _plot(store, methods, sizes, batches, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    b = max(batches)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, field, title in zip(axes, ["forward_ms", "forward_backward_ms"], ["forward", "forward + backward"]):
        for m in methods:
            pts = [(n, store.get(f"{m}/n={n}/b={b}", {}).get(field)) for n in sizes]
            pts = [(n, v) for n, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (items per row)")
        ax.set_title(f"{title}, batch {b}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("time (ms, median)")
    axes[1].legend(fontsize=8)
    from pathlib import Path

    save_figure(fig, Path(out) / "sort-speed.png")
    plt.close(fig)
