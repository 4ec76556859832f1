"""Speed and memory of every sample-level estimator, relative to plain softmax.

For each shape (categories along the last dimension, float32) and each estimator, one call is
`y = estimator(logits); y.backward(g)` with a fixed upstream gradient `g`; the baseline is
`logits.softmax(-1).backward(g)` on the same tensor. Shapes: the ReinMax paper's
efficiency-table settings (`(512, 128, 2)`: 128 binary latents as two-way categoricals,
batch 512; `(100, 30, 10)`: 30 latents of 10 categories, batch 100) and larger ones
(`(4096, 64)`, `(256, 50257)`: a language model's vocabulary).

**Time**: estimator and softmax are timed in alternation (blocks of calls, `--repeats`
rounds), so that load from other processes affects both alike; the table shows the fastest
round's time per call (the least disturbed, as `timeit` advises) and the ratio of those, and
the median over rounds of the ratio within a round (`median round`, which a few disturbed
rounds move less); every round's times are in the JSON. Threads: `--threads` (default 2).

**Kernels**: on the CPU the straight-through family runs through the fused C kernels of
`quasigrad.estimators._native` when they build (the header line says whether they did; run with
`QUASIGRAD_NATIVE=0` to time the pure PyTorch path instead).

**Peak memory** (CPU): one call runs under `torch.profiler` with `profile_memory=True`; its
allocation and free events (Kineto's `[memory]` events, sizes signed) are summed in time order
and the maximum of the running sum is the peak of memory allocated during the call (the input
`logits` and `g` exist before and are not counted; `logits.grad` is). On CUDA, the
allocator's `max_memory_allocated` is used the same way.

Peers, timed in the same run where installed: `torch.nn.functional.gumbel_softmax(hard=True)`
and the `reinmax` package's `reinmax(logits, tau)` (`pip install reinmax`; optional).
GR-MCK is run with `k` in `--gr-k` (default 100 300 1000) besides the registry's default;
a combination with `k × numel` above `--max-gr-work` is skipped: the table says "skipped" and the
plot puts a cross and a note at its place.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from .._util.tables import paired_median
from ..estimators import _native
from . import runner

DESCRIPTION = "forward+backward time and peak memory of each estimator relative to softmax"

SHAPES = [(512, 128, 2), (100, 30, 10), (4096, 64), (256, 50257)]
PEERS = ["torch.gumbel_softmax(hard)", "reinmax (pip)"]
DEFAULT_ESTIMATORS = ["st", "stgs", "gumbel_rao", "gst", "reinmax", "zgr", "darn"]


def _parse_shape(text):
    try:
        shape = tuple(int(s) for s in str(text).lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape) or shape[-1] < 2:
        raise runner.BenchmarkError(f"--shapes: {text!r} is not a shape like 512x128x2 (last dimension >= 2)")
    return shape


def _peer(label):
    if label == "torch.gumbel_softmax(hard)":
        return lambda x: torch.nn.functional.gumbel_softmax(x, tau=1.0, hard=True, dim=-1)
    try:
        import reinmax as _reinmax_pkg
    except ImportError:
        return None
    return lambda x: _reinmax_pkg.reinmax(x, 1.0)[0]


def _peak_bytes(call, device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    # Kineto logs a line per profiler start and stop on stderr unless told otherwise (the user's
    # own setting wins).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    # Kineto's raw "[memory]" events: one per allocation (+bytes) and per free (-bytes), CPU side.
    events = [(e.start_ns(), i, e.nbytes()) for i, e in enumerate(prof.profiler.kineto_results.events())
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    running = peak = 0
    for _, _, size in sorted(events):
        running += size
        peak = max(peak, running)
    return int(peak)


def _timer(call, device, min_time):
    """Calls per block so that a block takes about `min_time` seconds, and a block runner."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def block(n):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        sync()
        return (time.perf_counter() - t0) / n

    per = block(1)
    return max(1, int(min_time / max(per, 1e-7))), block


def measure(fn, shape, *, device, repeats, min_time, seed=0) -> dict:
    """Time and peak memory of `fn` forward+backward against softmax on one shape."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, generator=gen, device=device).requires_grad_(True)
    g = torch.randn(shape, generator=gen, device=device)

    def call_est():
        fn(x).backward(g)
        x.grad = None

    def call_soft():
        x.softmax(-1).backward(g)
        x.grad = None

    call_est(), call_soft()                                 # warm-up
    n_est, block_est = _timer(call_est, device, min_time)
    n_soft, block_soft = _timer(call_soft, device, min_time)
    t_est, t_soft = [], []
    for _ in range(repeats):
        t_soft.append(block_soft(n_soft))
        t_est.append(block_est(n_est))
    mem_est, mem_soft = _peak_bytes(call_est, device), _peak_bytes(call_soft, device)
    # The fastest round is the one least disturbed by other processes (as timeit advises); the
    # medians are kept too.
    te, ts = min(t_est), min(t_soft)
    return {"time_ms": te * 1e3, "softmax_ms": ts * 1e3, "time_ratio": te / ts,
            "time_ms_median": statistics.median(t_est) * 1e3, "softmax_ms_median": statistics.median(t_soft) * 1e3,
            "time_ms_all": [t * 1e3 for t in t_est], "softmax_ms_all": [t * 1e3 for t in t_soft],
            "peak_mib": mem_est / 2 ** 20, "softmax_peak_mib": mem_soft / 2 ** 20,
            "memory_ratio": mem_est / mem_soft if mem_soft else float("nan")}


class Efficiency(runner.Benchmark):
    name = "efficiency"
    description = DESCRIPTION
    full = "more rounds, longer blocks, larger GR-MCK limit"
    estimators = f"sample-level estimators, NAME or NAME:KEY=VALUE,... (default: {' '.join(DEFAULT_ESTIMATORS)})"
    device = threads = True
    default_threads = 2
    result_fields = ("time_ms", "softmax_ms", "time_ratio", "peak_mib", "memory_ratio")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--shapes", nargs="+", default=None,
                            help="shapes as AxBxC (default: 512x128x2 100x30x10 4096x64 256x50257)")
        parser.add_argument("--gr-k", type=int, nargs="*", default=[100, 300, 1000],
                            help="GR-MCK k values (default 100 300 1000)")
        parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 5; --full 15)")
        parser.add_argument("--min-time", type=float, default=None,
                            help="seconds per timing block (default 0.05; --full 0.2)")
        parser.add_argument("--max-gr-work", type=float, default=None,
                            help="skip GR-MCK when k × numel exceeds this (default 2e8; --full 2e10)")
        parser.add_argument("--no-peers", action="store_true",
                            help="do not time torch's gumbel_softmax and the reinmax package")

    def plan(self, args, ctx) -> runner.Plan:
        self.shapes = [_parse_shape(s) for s in args.shapes] if args.shapes else list(SHAPES)
        if any(k < 1 for k in args.gr_k):
            raise runner.BenchmarkError(f"--gr-k values must be positive, got {args.gr_k}")
        self.repeats = args.repeats or (15 if args.full else 5)
        self.min_time = args.min_time or (0.2 if args.full else 0.05)
        self.max_work = args.max_gr_work or (2e10 if args.full else 2e8)
        runner.check_positive(repeats=self.repeats, min_time=self.min_time, max_gr_work=self.max_work)
        specs = runner.estimator_specs(args.estimators, default=DEFAULT_ESTIMATORS, need="sample")
        gr = [s for s in specs if s.name == "gumbel_rao"]
        if gr:
            have = {s.kwargs.get("k") for s in gr}
            specs += runner.estimator_specs([f"gumbel_rao:k={k}" for k in args.gr_k if k not in have], default=[],
                                            need="sample")
        device = ctx.device
        self.kernels = _native.status() if device.type == "cpu" else "PyTorch operators (the fused kernels are CPU only)"
        config = {"statistic": "min", "threads": args.threads, "repeats": self.repeats, "min_time": self.min_time,
                  "device": str(device), "dtype": "float32", "torch": torch.__version__, "kernels": self.kernels}
        self.entries = [(s.label, (lambda fn, kw: (lambda x: fn(x, dim=-1, **kw)))(s.info.function("categorical"),
                                                                                   s.kwargs),
                         s.kwargs.get("k") if s.name == "gumbel_rao" else None) for s in specs]
        if not args.no_peers:
            for label in PEERS:
                fn = _peer(label)
                if fn is None:
                    print(f"peer {label} not installed: skipped (pip install reinmax to time it)")
                else:
                    self.entries.append((label, fn, None))
        units, self.skipped = [], []
        for shape in self.shapes:
            numel = 1
            for n in shape:
                numel *= n
            for label, fn, k in self.entries:
                key = f"{'x'.join(map(str, shape))}/{label}"
                if k is not None and k * numel > self.max_work:
                    self.skipped.append(key)
                else:
                    units.append(runner.Unit(key, (shape, fn)))
        return runner.Plan(config, units)

    def run_unit(self, unit, ctx):
        shape, fn = unit.data
        return measure(fn, shape, device=ctx.device, repeats=self.repeats, min_time=self.min_time)

    def report(self, store, ctx):
        rows = []
        for shape in self.shapes:
            sk = "x".join(map(str, shape))
            for label, _, _ in self.entries:
                r = store.get(f"{sk}/{label}")
                if r is None:
                    rows.append((str(shape), label, "skipped", "", "", "", "", ""))
                    continue
                rows.append((str(shape), label, _fmt(r["time_ms"], ".3g"), _fmt(r["softmax_ms"], ".3g"),
                             _fmt(r["time_ratio"], ".2f"), _fmt(paired_median(r), ".2f"), _fmt(r["peak_mib"], ".3g"),
                             _fmt(r["memory_ratio"], ".2f")))
        table = runner.format_table(rows, ["shape", "estimator", "fwd+bwd ms", "softmax ms", "time / softmax",
                                           "median round", "peak MiB", "peak / softmax"])
        print(f"efficiency: {ctx.device}, {torch.get_num_threads()} threads, float32, fastest of {self.repeats} "
              f"rounds; torch {torch.__version__}; {self.kernels}")
        print(table)
        if self.skipped:
            print(f"skipped (k × numel > {self.max_work:g}; raise --max-gr-work): {', '.join(self.skipped)}")
        _plot(store, self.shapes, [e[0] for e in self.entries], ctx, self.skipped, self.max_work)
        return {"table": table, "skipped": self.skipped}


BENCHMARK = Efficiency


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def _plot(store, shapes, labels, ctx, skipped=(), max_work=None) -> None:
    """Bars of time and peak memory over softmax's, one group per estimator and a bar per shape;
    an entry in `skipped` (keys `"AxBxC/label"`) gets a cross and the words "skipped" at its place."""
    plt = ctx.pyplot()
    if plt is None:
        return
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    skipped = set(skipped)
    reason = f"skipped: k × numel > {max_work:g}" if max_work is not None else "skipped"
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(labels) * len(shapes) / 2 + 2.5), layout="constrained")
    width = 0.8 / len(shapes)
    colors = [f"C{i % 10}" for i in range(len(shapes))]
    for j, (metric, title) in enumerate([("time_ratio", "fwd+bwd time / softmax's"),
                                         ("memory_ratio", "peak memory / softmax's")]):
        ax = axes[j]
        for i, shape in enumerate(shapes):
            sk = "x".join(map(str, shape))
            ys = [y + i * width for y in range(len(labels))]
            vals = [(store.get(f"{sk}/{lab}") or {}).get(metric) for lab in labels]
            ax.barh(ys, [float("nan") if v is None else v for v in vals], height=width, color=colors[i])
            for y, lab in zip(ys, labels):
                if f"{sk}/{lab}" in skipped:
                    # x in axes coordinates (the left edge), y in data: visible whatever the scale
                    tr = ax.get_yaxis_transform()
                    ax.plot([0.015], [y], marker="x", color=colors[i], ms=6, mew=1.5, transform=tr, clip_on=False)
                    ax.text(0.04, y, reason, transform=tr, va="center", fontsize=6.5, color=colors[i],
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
        ax.set_yticks([y + 0.4 - width / 2 for y in range(len(labels))])
        ax.set_yticklabels(labels if j == 0 else [])
        ax.axvline(1, color="k", lw=0.8)
        ax.axvline(2, color="r", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("ratio to plain softmax on the same tensor (log scale)")
        ax.set_title(title)
        ax.invert_yaxis()
    handles: list = [Patch(color=colors[i], label=f"shape {tuple(shape)}") for i, shape in enumerate(shapes)]
    handles += [Line2D([], [], color="k", lw=0.8, label="1×: as fast / as small as softmax"),
                Line2D([], [], color="r", lw=0.8, ls=":",
                       label="2×: twice softmax's")]
    if skipped:
        handles.append(Line2D([], [], color="gray", marker="x", ls="none", mew=1.5,
                              label=f"not run ({reason}; raise --max-gr-work)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    ctx.figure(fig, "efficiency.png")
