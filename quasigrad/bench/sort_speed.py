"""`quasigrad bench sort-speed`: forward and forward+backward time of the relaxed sorts against
`torch.sort`, across the number of items n and the batch size.

Methods: `torch.sort` (the hard sort, for scale), `soft_sort` and `soft_rank` (l2 and KL,
Blondel et al. 2020, this package's pure-PyTorch PAV), `neural_sort` and
`soft_sort_permutation` (O(n²) permutation matrices, run for n ≤ `--max-quadratic-n`), and,
when installed, torchsort's `soft_sort` and `soft_rank` (l2 and KL; the column "/ torchsort" divides
each of ours by torchsort's function for the same operation) and `diffsort` (odd-even network) as
peers. Each time
is the median of `--repeats` runs after one warm-up, on Gaussian rows (seed 0), with one torch
thread by default (`--threads`), on `--device` (default cpu). The number of PAV rounds that `soft_rank` (l2 and KL) needed
is reported beside it.

Short preset: n ∈ {10, 100, 1000}, batch ∈ {1, 64} (`--batch-sizes`). `--full`: n up to 10⁴,
batch up to 256.
"""

from __future__ import annotations

import importlib
import statistics
import time

import torch

from . import runner

DESCRIPTION = "time of soft sort/rank, NeuralSort, SoftSort (and torchsort/diffsort if installed) vs torch.sort"

METHODS = ["torch.sort", "soft_sort", "soft_sort_kl", "soft_rank", "soft_rank_kl", "neural_sort",
           "soft_sort_permutation", "torchsort", "torchsort_kl", "torchsort_sort", "torchsort_sort_kl", "diffsort"]
#: Each of this package's soft sorts and ranks and the torchsort function computing the same thing
#: ("torchsort" is its soft_rank with l2, the name stores have always used).
TORCHSORT_PEER = {"soft_sort": "torchsort_sort", "soft_sort_kl": "torchsort_sort_kl", "soft_rank": "torchsort",
                  "soft_rank_kl": "torchsort_kl"}
QUADRATIC = {"neural_sort", "soft_sort_permutation", "diffsort"}


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
    if method == "soft_sort_kl":
        return lambda x: qs.soft_sort(x, regularization="kl", regularization_strength=eps)
    if method == "soft_rank":
        return lambda x: qs.soft_rank(x, regularization_strength=eps)
    if method == "soft_rank_kl":
        return lambda x: qs.soft_rank(x, regularization="kl", regularization_strength=eps)
    if method == "neural_sort":
        return lambda x: qs.neural_sort(x, tau=eps)
    if method == "soft_sort_permutation":
        return lambda x: qs.soft_sort_permutation(x, tau=eps)
    if method.startswith("torchsort"):
        ts = _peer("torchsort")
        if ts is None:
            return None
        fn = ts.soft_sort if method.startswith("torchsort_sort") else ts.soft_rank
        reg = "kl" if method.endswith("_kl") else "l2"
        return lambda x: fn(x, regularization=reg, regularization_strength=eps)
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


class SortSpeed(runner.Benchmark):
    name = "sort-speed"
    description = DESCRIPTION
    full = "n in 10..10000 and batch in 1, 16, 256"
    device = threads = True
    default_threads = 1

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--sizes", type=int, nargs="+", default=None,
                            help="numbers of items n (default 10 100 1000)")
        parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="batch sizes (default 1 64)")
        parser.add_argument("--methods", nargs="+", default=None, help=f"subset of {METHODS}")
        parser.add_argument("--strength", type=float, default=1.0, help="regularization strength ε / temperature τ")
        parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
        parser.add_argument("--max-quadratic-n", type=int, default=1000, help="largest n for the O(n²) methods")

    def plan(self, args, ctx):
        self.methods = args.methods or METHODS
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise runner.BenchmarkError(f"unknown --methods {unknown}; choose from {METHODS}")
        self.sizes = args.sizes or ([10, 100, 1000, 10000] if args.full else [10, 100, 1000])
        self.batches = args.batch_sizes or ([1, 16, 256] if args.full else [1, 64])
        if min(self.sizes) < 1 or min(self.batches) < 1 or args.repeats < 1 or not args.strength > 0:
            raise runner.BenchmarkError("--sizes, --batch-sizes and --repeats need positive integers and --strength "
                                        "a positive number")
        config = {"sizes": self.sizes, "batches": self.batches, "strength": args.strength, "repeats": args.repeats,
                  "max_quadratic_n": args.max_quadratic_n, "threads": args.threads}
        if ctx.device.type != "cpu":  # stores written on the CPU before --device existed keep resuming
            config["device"] = str(ctx.device)
        units = [runner.Unit(f"{m}/n={n}/b={b}", (m, n, b)) for n in self.sizes for b in self.batches
                 for m in self.methods]
        return runner.Plan(config, units)

    def check_result(self, key, value):
        if isinstance(value, dict) and "skipped" in value:
            return None
        if not isinstance(value, dict) or "forward_ms" not in value or "forward_backward_ms" not in value:
            return "expected an object with forward_ms and forward_backward_ms, or skipped"
        return None

    def run_unit(self, unit, ctx):
        from .. import sort as qs

        method, n, b = unit.data
        args = ctx.args
        if method in QUADRATIC and n > args.max_quadratic_n:
            return {"skipped": f"O(n^2) method, n > {args.max_quadratic_n}"}
        fn = _make(method, n, args.strength)
        if fn is None:
            return {"skipped": "not installed"}
        x = torch.randn(b, n, generator=torch.Generator().manual_seed(0))
        xd = x.to(ctx.device)
        row = {"forward_ms": _time(fn, xd, args.repeats, False), "forward_backward_ms": _time(fn, xd, args.repeats, True)}
        if method in ("soft_rank", "soft_rank_kl"):
            s = (x / args.strength).sort(-1, descending=True).values
            rho = torch.arange(n, 0, -1, dtype=s.dtype)
            reg, w = ("l2", rho) if method == "soft_rank" else ("kl", torch.log(rho))
            row["pav_rounds"] = qs.isotonic._isotonic(s, w, reg, count_rounds=True)
        return row

    def report(self, store, ctx):
        rows = []
        for n in self.sizes:
            for b in self.batches:
                base = store.get(f"torch.sort/n={n}/b={b}", {}).get("forward_backward_ms")
                for m in self.methods:
                    r = store.get(f"{m}/n={n}/b={b}", {})
                    if "skipped" in r:
                        continue
                    ratio = r["forward_backward_ms"] / base if base else float("nan")
                    peer = store.get(f"{TORCHSORT_PEER.get(m)}/n={n}/b={b}", {}).get("forward_backward_ms")
                    vs_peer = r["forward_backward_ms"] / peer if peer else ""
                    rows.append([m, n, b, r["forward_ms"], r["forward_backward_ms"], ratio, vs_peer,
                                 r.get("pav_rounds", "")])
        print(runner.format_table(rows, ["method", "n", "batch", "fwd ms", "fwd+bwd ms", "fwd+bwd / torch.sort",
                                         "fwd+bwd / torchsort", "PAV rounds"], floatfmt=".3g"))
        skipped = sorted({f"{k.split('/')[0]} ({v['skipped']})" for k, v in store.results.items() if "skipped" in v})
        if skipped:
            print("skipped: " + ", ".join(skipped))
        _plot(store, self.methods, self.sizes, self.batches, ctx)
        return None


BENCHMARK = SortSpeed


def _plot(store, methods, sizes, batches, ctx):
    plt = ctx.pyplot()
    if plt is None:
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
    ctx.figure(fig, "sort-speed.png")
