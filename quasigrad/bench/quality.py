"""Gradient quality across τ: :func:`quasigrad.lab.quality` on the built-in problems.

For each problem (``--problems``, default: polynomial with p = 2, linear, quadratic, cubic,
decoder) and each estimator, the relative bias, the variance (trace of the covariance), the
mean squared error and the single-draw cosine with the exact gradient, at each τ in ``--taus``
for estimators that have a temperature. Exact by enumeration where the estimator's gradient is
a function of the sample alone; Monte Carlo with ``--draws`` draws (and standard errors)
otherwise. One unit of work is one problem and one estimator; each unit's Monte Carlo draws
come from a generator seeded by ``--seed`` and the unit's position, so a resumed run gives the
same numbers. ``--full``: 20,000 Monte Carlo draws and nine temperatures.
"""

from __future__ import annotations

import zlib

import torch

from ..lab import problems as P
from ..lab._specs import default_specs
from ..lab.quality import format_quality, quality
from . import runner

DESCRIPTION = "bias, variance, MSE and cosine of each estimator against the exact gradient, across tau"

QUICK_TAUS = [0.25, 0.5, 1.0, 2.0, 4.0]
FULL_TAUS = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 4.0]
ROW_FIELDS = ("estimator", "tau", "bias", "mse_rel", "cosine", "grad_norm")


class Quality(runner.Benchmark):
    name = "quality"
    description = DESCRIPTION
    full = "20,000 draws, nine temperatures"
    estimators = "estimators, NAME or NAME:KEY=VALUE,... (default: every registered one that runs by name)"
    threads = True

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--problems", nargs="+", default=list(P.PROBLEMS),
                            help=f"problems (default: {' '.join(P.PROBLEMS)})")
        parser.add_argument("--taus", type=float, nargs="+", default=None, help="temperatures (default 0.25 0.5 1 2 4)")
        parser.add_argument("--draws", type=int, default=None,
                            help="Monte Carlo gradient estimates per estimator (default 2000; --full 20000)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the random problems and of the draws (default 0)")

    def plan(self, args, ctx) -> runner.Plan:
        unknown = [p for p in args.problems if p not in P.PROBLEMS]
        if unknown:
            raise runner.BenchmarkError(f"unknown problem(s) {', '.join(map(repr, unknown))}; "
                                        f"known problems: {', '.join(P.PROBLEMS)}")
        self.taus = taus = args.taus or (FULL_TAUS if args.full else QUICK_TAUS)
        runner.check_positive(**{"taus": min(taus)})
        self.draws = draws = args.draws or (20000 if args.full else 2000)
        if draws < 2:
            raise runner.BenchmarkError(f"--draws must be at least 2, got {draws}")
        self.specs = runner.estimator_specs(args.estimators, default=default_specs())
        self.problems = args.problems
        # "samples" is the stored name of the number of draws (stores written before keep resuming)
        config = {"taus": [float(t) for t in taus], "samples": draws, "seed": args.seed}
        units = [runner.Unit(f"{name}/{spec.label}", (name, spec)) for name in args.problems for spec in self.specs]
        return runner.Plan(config, units)

    def check_result(self, key, value):
        if not isinstance(value, list) or not value:
            return "expected a non-empty list of rows"
        for row in value:
            if not isinstance(row, dict) or any(f not in row for f in ROW_FIELDS):
                return f"a row misses one of {', '.join(ROW_FIELDS)}"
        return None

    def run_unit(self, unit, ctx):
        name, spec = unit.data
        seed = ctx.args.seed
        problem = P.make(name, seed=seed)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(unit.key.encode()))
        return quality(problem, [spec.label], taus=self.taus, num_samples=self.draws, generator=gen)

    def report(self, store, ctx):
        for name in self.problems:
            problem = P.make(name, seed=ctx.args.seed)
            rows = [r for spec in self.specs for r in store[f"{name}/{spec.label}"]]
            print(f"\n{problem.name}: {problem.description}; ‖∇‖ = {rows[0]['grad_norm']:.4g}")
            print(format_quality(rows))
        print()
        _plot(store, self.problems, self.specs, ctx)
        return None


BENCHMARK = Quality

def _plot(store, names, specs, ctx) -> None:
    plt = ctx.pyplot()
    if plt is None:
        return
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
    ctx.figure(fig, "quality.png")
