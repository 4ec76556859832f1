"""Gradient quality across τ: [`quasigrad.lab.quality`][quasigrad.lab.quality] on the built-in problems.

For each problem (`--problems`, default: polynomial with p = 2, linear, quadratic, cubic,
decoder) and each estimator, the relative bias, the variance (trace of the covariance), the
mean squared error and the single-draw cosine with the exact gradient, at each τ in `--taus`
for estimators that have a temperature. Exact by enumeration where the estimator's gradient is
a function of the sample alone; Monte Carlo with `--draws` draws (and standard errors)
otherwise. One unit of work is one problem and one estimator; each unit's Monte Carlo draws
come from a generator seeded by `--seed` and the unit's position, so a resumed run gives the
same numbers. `--full`: 20,000 Monte Carlo draws and nine temperatures.
"""

from __future__ import annotations

import zlib
from typing import Any

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

# The estimator families' colour maps, in the order the legend lists them: a family's members
# take shades of one hue and a marker each; a dashed line marks an estimator without a temperature.
FAMILY_COLORMAPS = {"straight-through": "Blues", "relaxation": "Oranges", "score-function": "Greens",
                    "control-variate": "Reds", "pair": "Purples", "exact": "Greys"}
OTHER_COLORMAPS = ("YlOrBr", "RdPu", "BuGn", "GnBu")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def estimator_styles(specs) -> dict:
    """The line style of each estimator in the quality plot: a hue per family, a shade and a
    marker per member, solid for an estimator drawn against τ, dashed for one without a temperature.

    Args:
        specs: the estimator specifications ([Spec][quasigrad.lab.Spec]), in plotting order.

    Returns:
        `{label: {"color", "marker", "linestyle", "family"}}` with colours as `"#rrggbb"`; one
        distinct (colour, marker, line style) triple per label, and the same label gets the same
        style in every panel.
    """
    import matplotlib
    from matplotlib.colors import to_hex

    members: dict = {}
    for spec in specs:
        members.setdefault(spec.info.family, []).append(spec.label)
    maps = dict(FAMILY_COLORMAPS)
    for i, fam in enumerate(sorted(f for f in members if f not in maps)):
        maps[fam] = OTHER_COLORMAPS[i % len(OTHER_COLORMAPS)]
    styles = {}
    for spec in specs:
        fam = spec.info.family
        i, n = members[fam].index(spec.label), len(members[fam])
        shade = 0.85 - 0.45 * i / max(n - 1, 1)     # darkest first, never as pale as the background
        # past the eighth member of a family the markers repeat, with a dash-dot pattern per round
        swept = spec.info.has_tau and "tau" not in spec.kwargs
        linestyle: Any = ("-" if swept else "--") if i < len(MARKERS) else (0, (i // len(MARKERS), 1, 1, 1))
        styles[spec.label] = {"color": to_hex(matplotlib.colormaps[maps[fam]](shade)),
                              "marker": MARKERS[i % len(MARKERS)], "linestyle": linestyle, "family": fam}
    return styles


def _legend(fig, styles) -> None:
    """One legend below the panels: a column per family, headed by the family's name."""
    from matplotlib.lines import Line2D

    columns: dict = {}
    for label, st in styles.items():
        columns.setdefault(st["family"], []).append(
            Line2D([], [], color=st["color"], marker=st["marker"], ls=st["linestyle"], ms=4, lw=1.2, label=label))
    order = list(FAMILY_COLORMAPS)
    columns = dict(sorted(columns.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    depth = 1 + max(len(c) for c in columns.values())
    handles: list = []
    headers: list = []
    for fam, entries in columns.items():
        blank = Line2D([], [], ls="none", label=" ")
        headers.append(len(handles))
        handles += [Line2D([], [], ls="none", label=fam)] + entries + [blank] * (depth - 1 - len(entries))
    # "outside": the constrained layout keeps a strip below the panels for it, so it covers none
    legend = fig.legend(handles=handles, labels=[h.get_label() for h in handles], loc="outside lower center",
                        ncol=len(columns), fontsize=8, frameon=False, handlelength=2.5, columnspacing=1.5)
    for i in headers:
        legend.get_texts()[i].set_fontweight("bold")


def _plot(store, names, specs, ctx) -> None:
    plt = ctx.pyplot()
    if plt is None:
        return
    import matplotlib.ticker

    metrics = [("bias", "relative bias"), ("mse_rel", "MSE / ‖∇‖²"), ("cosine", "E cos(ĝ, ∇)")]
    fig, axes = plt.subplots(len(metrics), len(names), figsize=(3.3 * len(names), 2.8 * len(metrics)), squeeze=False,
                             layout="constrained")
    styles = estimator_styles(specs)
    floor = 1e-6  # exact zeros (1e-16) would flatten the log scale: plotted at this floor
    all_taus = sorted({r["tau"] for name in names for spec in specs for r in store[f"{name}/{spec.label}"]
                       if r["tau"] is not None})
    for j, name in enumerate(names):
        for i, (key, label) in enumerate(metrics):
            ax = axes[i, j]
            for spec in specs:
                rows = store[f"{name}/{spec.label}"]
                st = styles[spec.label]
                vals = [r[key] if key == "cosine" else max(r[key], floor) for r in rows]
                if rows[0]["tau"] is None:
                    # no temperature: one value, drawn flat across the τ range with the estimator's markers
                    xs = all_taus or [1.0]
                    ax.plot(xs, [vals[0]] * len(xs), color=st["color"], ls=st["linestyle"], marker=st["marker"],
                            ms=3.5, lw=1.0)
                else:
                    ax.plot([r["tau"] for r in rows], vals, color=st["color"], ls=st["linestyle"],
                            marker=st["marker"], ms=4, lw=1.3)
            ax.set_xscale("log")
            if all_taus:
                ax.set_xticks(all_taus)
                ax.set_xticklabels([f"{t:g}" for t in all_taus])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if key != "cosine":
                ax.set_yscale("log")
            if i == 0:
                ax.set_title(name)
            if j == 0:
                ax.set_ylabel(label)
            if i == len(metrics) - 1:
                ax.set_xlabel("τ")
    fig.suptitle(f"solid: estimator with a temperature, against τ; dashed: no temperature (one value); "
                 f"values below {floor:g} drawn at {floor:g}", fontsize=8)
    _legend(fig, styles)
    ctx.figure(fig, "quality.png")
