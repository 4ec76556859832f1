"""Gradient quality across τ: :func:`quasigrad.lab.quality` on the built-in problems.

For each problem (``--problems``, default: polynomial with p = 2, linear, quadratic, cubic,
decoder) and each estimator, the relative bias, the variance (trace of the covariance), the
mean squared error and the single-draw cosine with the exact gradient, at each τ in ``--taus``
for estimators that have a temperature. Exact by enumeration where the estimator's gradient is
a function of the sample alone; Monte Carlo with ``--samples`` draws (and standard errors)
otherwise. One unit of work is one problem and one estimator; each unit's Monte Carlo draws
come from a generator seeded by ``--seed`` and the unit's position, so a resumed run gives the
same numbers. ``--full``: 20,000 Monte Carlo draws and nine temperatures.
"""

from __future__ import annotations

import zlib

import torch

from ..lab import problems as P
from ..lab._specs import StopHook, default_specs, parse_specs
from ..lab.quality import format_quality, quality
from . import runner

DESCRIPTION = "bias, variance, MSE and cosine of each estimator against the exact gradient, across tau"

QUICK_TAUS = [0.25, 0.5, 1.0, 2.0, 4.0]
FULL_TAUS = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 4.0]


def add_arguments(parser) -> None:
    runner.add_common_arguments(parser, default_out="results/quality", seeds=None)
    parser.add_argument("--problems", nargs="+", default=list(P.PROBLEMS), help=f"problems (default: {' '.join(P.PROBLEMS)})")
    parser.add_argument("--taus", type=float, nargs="+", default=None, help="temperatures (default 0.25 0.5 1 2 4)")
    parser.add_argument("--samples", type=int, default=None, help="Monte Carlo draws (default 2000; --full 20000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random problems and of the draws (default 0)")
    parser.add_argument("--full", action="store_true", help="20,000 draws, nine temperatures")


def run(args) -> int:
    unknown = [p for p in args.problems if p not in P.PROBLEMS]
    if unknown:
        raise runner.BenchmarkError(f"unknown problem(s) {', '.join(map(repr, unknown))}; "
                                    f"known problems: {', '.join(P.PROBLEMS)}")
    taus = args.taus or (FULL_TAUS if args.full else QUICK_TAUS)
    if not all(t > 0 for t in taus):
        raise runner.BenchmarkError(f"--taus must be positive, got {taus}")
    samples = args.samples or (20000 if args.full else 2000)
    if samples < 2:
        raise runner.BenchmarkError(f"--samples must be at least 2, got {samples}")
    try:
        specs = parse_specs(args.estimators, default=default_specs())
    except ValueError as exc:
        if isinstance(exc, KeyError):
            raise
        raise runner.BenchmarkError(str(exc)) from None
    out = runner.check_out_dir(args.out)
    config = {"taus": [float(t) for t in taus], "samples": samples, "seed": args.seed}
    store = runner.ResultStore(out, "quality", config, fresh=args.fresh)
    hook = StopHook()
    units = [(name, spec) for name in args.problems for spec in specs]
    for name, spec in runner.progress(units, total=len(units), desc="quality", disable=args.no_progress):
        key = f"{name}/{spec.label}"
        if key in store:
            continue
        problem = P.make(name, seed=args.seed)
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + zlib.crc32(key.encode()))
        store.put(key, quality(problem, [spec.label], taus=taus, num_samples=samples, generator=gen))
        hook.tick("units")
    for name in args.problems:
        problem = P.make(name, seed=args.seed)
        rows = [r for spec in specs for r in store[f"{name}/{spec.label}"]]
        print(f"\n{problem.name}: {problem.description}; ‖∇‖ = {rows[0]['grad_norm']:.4g}")
        print(format_quality(rows))
    store.save()
    _plot(store, args.problems, specs, out / "quality.png")
    print(f"\nresults: {store.path}\nplot: {out / 'quality.png'}")
    return 0


def _plot(store, names, specs, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metrics = [("bias", "relative bias"), ("mse_rel", "MSE / ‖∇‖²"), ("cosine", "E cos(ĝ, ∇)")]
    fig, axes = plt.subplots(len(metrics), len(names), figsize=(3.3 * len(names), 2.8 * len(metrics)), squeeze=False)
    colors = [plt.get_cmap("tab20")(i) for i in range(20)]
    floor = 1e-6  # exact zeros (1e-16) would flatten the log scale: plotted at this floor
    for j, name in enumerate(names):
        for i, (key, label) in enumerate(metrics):
            ax = axes[i, j]
            taus = None
            for c, spec in enumerate(specs):
                rows = store[f"{name}/{spec.label}"]
                color = colors[c % len(colors)]
                vals = [r[key] if key == "cosine" else max(r[key], floor) for r in rows]
                if rows[0]["tau"] is None:
                    ax.axhline(vals[0], color=color, ls="--", lw=1.2, label=spec.label)
                else:
                    ax.plot([r["tau"] for r in rows], vals, "o-", ms=3, color=color, label=spec.label)
                    taus = [r["tau"] for r in rows]
            ax.set_xscale("log")
            if taus:
                ax.set_xticks(taus)
                ax.set_xticklabels([f"{t:g}" for t in taus])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if key != "cosine":
                ax.set_yscale("log")
            if i == 0:
                ax.set_title(name)
            if j == 0:
                ax.set_ylabel(label)
            if i == len(metrics) - 1:
                ax.set_xlabel("τ")
    axes[0, 0].text(0.02, 0.02, f"values below {floor:g} drawn at {floor:g}", transform=axes[0, 0].transAxes, fontsize=7)
    axes[0, -1].legend(fontsize=7, ncol=2)
    runner.save_figure(fig, path)
    plt.close(fig)
