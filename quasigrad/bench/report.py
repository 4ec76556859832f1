"""`quasigrad report`: every published claim beside our figure, on one generated page.

Reads the committed result stores (`docs/results/**/*.json`, the JSON the benchmarks write),
validates them, and writes `docs/reproduction.md` with its plot: for each claim of the papers
(ReinMax Tables 1, 2, 4, 6, its efficiency table and polynomial targets; NeuralSort's accuracy)
the paper's figure (from `quasigrad.bench.paper`, labelled as the paper's), ours, how much
of the paper's training ours represents, and a verdict in words: reproduced, not reproduced, or
not run (with the reason). Where several stores hold a claim, the one with the most training is
used. A store still being written is read as it is: the page shows the seeds present.

The page is generated, never edited by hand; the same stores always give the same page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .._util.files import atomic_write_bytes
from .._util.tables import mean_std, paired_median
from ._report_apps import listops_claim, nas_claim
from ._report_claim import MIN_FRACTION, NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim
from ._report_claim import best as _best
from ._report_claim import judge as _judge
from ._report_claim import name as _name
from ._report_claim import pct as _pct
from ._report_claim import pm as _pm
from ._report_stores import ReportError, Store, load_stores
from .paper import (
    PAPER_EFFICIENCY,
    PAPER_NEURALSORT_EXACT,
    PAPER_POLYNOMIAL_SPREAD,
    PAPER_SETTINGS,
    PAPER_TABLE2,
    PAPER_TABLE6,
    TABLE6_QUOTED,
)

__all__ = ["ReportError", "Store", "load_stores", "build_page", "write_report", "add_arguments", "run"]

DESCRIPTION = "the reproduction page: each published claim beside our figure, with a verdict"
PLOT_NAME = "reproduction.png"
TABLE2_ORDER = ["st", "stgs", "gumbel_rao", "gst", "reinmax", "zgr"]
NEURALSORT_TOLERANCE = 0.03     # our exact-sort accuracy may fall this far below the paper's
NEURALSORT_PLATEAU = 0.01      # a run has stopped rising if its exact accuracy gained at most this over its second half
EFFICIENCY_LIMITS = (1.5, 2.0)  # ReinMax / ST time and peak memory that still count as "the same cost"
SAME_SETTINGS = "the paper's optimiser and learning rate"


# ---------------------------------------------------------------------------------------------
# Helpers


def _grouped(store: Store, group: str) -> Dict[str, Dict[int, dict]]:
    """`{estimator: {seed: result}}` of a VAE store's `group` (`8x4`, `K2`)."""
    out: Dict[str, Dict[int, dict]] = {}
    for key, value in store.results.items():
        g, est, seed = key.split("/")
        if g == group:
            out.setdefault(est, {})[int(seed[4:])] = value
    return out


def _overrides(config: dict) -> List[str]:
    return [f"{k} {config[k]}" for k in ("lr", "tau", "optimizer") if config.get(k) is not None]


# ---------------------------------------------------------------------------------------------
# The claims


def _table2(stores: List[Store], cfg: str) -> Claim:
    title = f"Table 2, categorical VAE {cfg.replace('x', '×')}"
    claim = "ReinMax reaches the lowest training −ELBO of ST, STGS, GR-MCK, GST-1.0 and ReinMax"
    paper = f"ReinMax {_pm(PAPER_TABLE2['reinmax'][cfg])}"
    full = PAPER_SETTINGS["table2"]
    cands = []
    for s in stores:
        if s.benchmark == "vae" and _grouped(s, cfg):
            images = s.config.get("train_size") or full["train_images"]
            frac = float(s.config.get("epochs", 0)) * images / (full["epochs"] * full["train_images"])
            cands.append((frac, len(_grouped(s, cfg)), s, images))
    best = _best(cands)
    if best is None:
        return Claim(title, claim, NOT_RUN, "no categorical VAE store holds this configuration", paper)
    frac, _, store, images = best
    runs = _grouped(store, cfg)
    rows, means = [], {}
    for est in sorted(runs, key=lambda e: (TABLE2_ORDER.index(e) if e in TABLE2_ORDER else 99, e)):
        seeds = sorted(runs[est])
        tr = mean_std([runs[est][s]["train_neg_elbo"] for s in seeds])
        te = mean_std([runs[est][s]["test_neg_elbo"] for s in seeds])
        p = PAPER_TABLE2.get(est, {}).get(cfg)
        means[est] = tr[0]
        rows.append([_name(est), ", ".join(map(str, seeds)), _pm(tr, len(seeds)), _pm(te, len(seeds)),
                     _pm(p) if p else "–"])
    scale = (f"{store.config.get('epochs')} epochs on {images:,} images ({_pct(frac)} of 160 epochs on 60,000); "
             f"seeds as listed (the paper: {full['seeds']})")
    compared = [e for e in means if e in PAPER_TABLE2]
    out = Claim(title, claim, NOT_RUN, "", paper, scale=scale, source=store.path,
                table=(["estimator", "seeds", "train −ELBO (ours)", "test −ELBO (ours)", "train −ELBO (paper's)"], rows),
                points=[(f"T2 {cfg} {_name(e)}", PAPER_TABLE2[e][cfg][0], means[e]) for e in compared])
    if "reinmax" not in means or len(compared) < 2:
        out.reason = "the store lacks ReinMax or every other estimator of the table"
        return out
    order = sorted(compared, key=lambda e: means[e])
    out.ours = f"ReinMax {means['reinmax']:.2f} (rank {order.index('reinmax') + 1} of {len(order)})"
    lead = "ReinMax is lowest" if order[0] == "reinmax" else f"{_name(order[0])} is lowest, not ReinMax"
    lower = [e for e in sorted(means, key=lambda e: means[e]) if e not in compared and means[e] < means["reinmax"]]
    if lower:
        lead += "; lower still, outside the paper's table: " + ", ".join(f"{_name(e)} {means[e]:.2f}" for e in lower)
    return _judge(out, order[0] == "reinmax", lead, frac, _overrides(store.config))


def _table6(stores: List[Store], k: int) -> Claim:
    title = f"Table 6, binary VAE, MNIST, K = {k}"
    paper_k = PAPER_TABLE6[k]["mnist"]
    baselines = [e for e in paper_k if e != "reinmax"]
    claim = "ReinMax reaches a lower training −ELBO than " + ", ".join(_name(e) for e in baselines)
    paper = f"ReinMax {_pm(paper_k['reinmax'])}"
    full = PAPER_SETTINGS["table6"]
    cands = []
    for s in stores:
        runs = _grouped(s, f"K{k}") if s.benchmark == "binary-vae" else {}
        if runs:
            steps = max(r["history"][-1]["steps"] for rr in runs.values() for r in rr.values())
            cands.append((steps / full["steps"], len(runs), s, steps))
    best = _best(cands)
    if best is None:
        return Claim(title, claim, NOT_RUN, f"no binary VAE store holds K = {k}", paper)
    frac, _, store, steps = best
    runs, rows, means = _grouped(store, f"K{k}"), [], {}
    for est in sorted(runs, key=lambda e: (e != "reinmax", e not in paper_k, e)):
        seeds = sorted(runs[est])
        tr = mean_std([runs[est][s]["train_neg_elbo"] for s in seeds])
        means[est] = tr[0]
        p = paper_k.get(est)
        label = f"{_pm(p)}{' (quoted from Shi et al.)' if est in TABLE6_QUOTED else ''}" if p else "–"
        rows.append([_name(est), ", ".join(map(str, seeds)), _pm(tr, len(seeds)),
                     _pm(mean_std([runs[est][s]["test_neg_elbo"] for s in seeds]), len(seeds)), label])
    overrides = _overrides(store.config)
    scale = (f"{int(steps):,} steps of {full['steps']:,} ({_pct(frac)}), batch 100, "
             f"{', '.join(overrides) if overrides else SAME_SETTINGS}")
    compared = [e for e in means if e in paper_k]
    out = Claim(title, claim, NOT_RUN, "", paper, scale=scale, source=store.path,
                table=(["estimator", "seeds", "train −ELBO (ours)", "test −ELBO (ours)", "train −ELBO (paper's)"], rows),
                points=[(f"T6 K{k} {_name(e)}", paper_k[e][0], means[e]) for e in compared])
    if "reinmax" not in means or len(compared) < 2:
        out.reason = "the store lacks ReinMax or every baseline of the table"
        return out
    beaten = [e for e in compared if e != "reinmax" and means[e] <= means["reinmax"]]
    out.ours = f"ReinMax {means['reinmax']:.2f}; " + ", ".join(f"{_name(e)} {means[e]:.2f}" for e in compared
                                                                 if e != "reinmax")
    missing = [_name(e) for e in baselines if e not in means]
    lead = ("ReinMax is below every baseline run" if not beaten
            else f"{', '.join(_name(e) for e in beaten)} at or below ReinMax")
    return _judge(out, not beaten, lead + (f" (not run: {', '.join(missing)})" if missing else ""), frac, overrides)


def _poly_family(label: str) -> bool:
    from .. import registry

    try:
        return registry.get(label.split(":")[0]).family in ("score-function", "pair", "control-variate")
    except KeyError:
        return False


def _polynomial(stores: List[Store], spread: bool) -> Claim:
    from .polynomial import optimum

    target = "spread" if spread else "constant"
    title = f"Polynomial programming, {'spread target c_i = (i − 0.5)/L' if spread else 'simple target c = 0.45'}"
    claim = ("ReinMax reaches a lower expected loss than the REINFORCE-style estimators" if spread else
             "REINFORCE-style estimators do well: at least as low an expected loss as ReinMax")
    full = PAPER_SETTINGS["polynomial"]
    cands = []
    for s in stores:
        if s.benchmark == "polynomial" and (s.config.get("target") == "spread") == spread and s.results:
            cands.append((min(1.0, s.config.get("steps", 0) / full["steps"]), len(s.results), s))
    best = _best(cands)
    paper = "a figure, not a table (the claim in words)"
    if best is None:
        return Claim(title, claim, NOT_RUN, f"no polynomial store with the {target} target", paper)
    frac, _, store = best
    runs: Dict[str, Dict[int, dict]] = {}
    for key, value in store.results.items():
        label, seed = key.rsplit("/seed=", 1)
        runs.setdefault(label, {})[int(seed)] = value
    ps, rows, verdicts = store.config["p"], [], []
    for i, p in enumerate(ps):
        gaps = {lab: mean_std([r["exact_loss"][i] - optimum(store.config, p) for r in rr.values()])
                for lab, rr in runs.items()}
        for lab in sorted(runs, key=lambda lab: gaps[lab][0]):
            rows.append([f"{p:g}", _name(lab), str(len(runs[lab])), f"{gaps[lab][0]:.5f} ± {gaps[lab][1]:.5f}",
                         "REINFORCE-style" if _poly_family(lab) else "pathwise"])
        sf = [lab for lab in runs if _poly_family(lab)]
        if "reinmax" in runs and sf:
            best_sf = min(sf, key=lambda lab: gaps[lab][0])
            holds = gaps["reinmax"][0] < gaps[best_sf][0] if spread else gaps[best_sf][0] <= gaps["reinmax"][0]
            verdicts.append((p, holds, best_sf))
    seeds = sorted({int(k.rsplit("/seed=", 1)[1]) for k in store.results})
    scale = (f"{store.config.get('steps')} steps of {full['steps']}, seeds {', '.join(map(str, seeds))} "
             f"(the paper: 0–9)")
    out = Claim(title, claim, NOT_RUN, "the store lacks ReinMax or every REINFORCE-style estimator", paper,
                scale=scale, source=store.path,
                table=(["p", "estimator", "seeds", "exact E[loss] − optimum at the end (ours)", "family"], rows))
    if verdicts:
        good = [f"{p:g}" for p, h, _ in verdicts if h]
        bad = [f"{p:g}" for p, h, _ in verdicts if not h]
        out.ours = "; ".join(f"p={p:g}: {'holds' if h else 'fails'} (best REINFORCE-style: {_name(b)})"
                             for p, h, b in verdicts)
        lead = (f"it holds for p = {', '.join(good) or 'none'}" + (f", not for p = {', '.join(bad)}" if bad else "")
                + ", comparing the exact expected loss at the final θ with the optimum, mean over seeds")
        _judge(out, not bad, lead, frac)
    return out


def _by_step(history: list) -> str:
    """`step: exact` at up to six evaluations of a run (its first, its last, and evenly between)."""
    if not history:
        return "–"
    pick = sorted({round(i * (len(history) - 1) / 5) for i in range(6)}) if len(history) > 6 else range(len(history))
    return ", ".join(f"{history[i][0]:,}: {history[i][1]:.3f}" for i in pick)


def _trend(history: list) -> Tuple[str, bool]:
    """Whether exact accuracy still rose over the second half of a run (by more than
    `NEURALSORT_PLATEAU`) or had stopped rising: in words, and as a flag."""
    last_step = history[-1][0]
    mid = min(history, key=lambda row: abs(row[0] - last_step / 2))
    gain = history[-1][1] - mid[1]
    rising = gain > NEURALSORT_PLATEAU
    verdict = "still rising" if rising else "stopped rising"
    return f"{verdict} ({gain:+.3f} from step {mid[0]:,} to {last_step:,})", rising


def _neuralsort(stores: List[Store]) -> Claim:
    title = "NeuralSort, large-MNIST sorting, exact-permutation accuracy"
    claim = "deterministic NeuralSort sorts n = 3 and n = 5 sequences exactly as often as the paper reports"
    paper = ", ".join(f"n = {n}: {a:.3f}" for n, a in PAPER_NEURALSORT_EXACT.items())
    cands = []
    for s in stores:
        hits = [k for k in s.results if k.startswith("neural_sort/")] if s.benchmark == "mnist-sort" else []
        if hits:
            cands.append((s.config.get("steps", 0) / PAPER_SETTINGS["neuralsort"]["steps"], len(hits), s))
    best = _best(cands)
    if best is None:
        return Claim(title, claim, NOT_RUN, "no mnist-sort store with NeuralSort runs", paper)
    frac, _, store = best
    rows, checks, trends, rising = [], [], [], []
    for n, acc in PAPER_NEURALSORT_EXACT.items():
        res = [v for k, v in sorted(store.results.items()) if k.startswith(f"neural_sort/n={n}/")]
        if res:
            ex = mean_std([r["exact"] for r in res])
            history = res[0].get("history", [])
            rows.append([str(n), str(len(res)), f"{ex[0]:.3f} ± {ex[1]:.3f}", _by_step(history), f"{acc:.3f}"])
            checks.append((n, ex[0] >= acc - NEURALSORT_TOLERANCE, ex[0]))
            if len(history) > 2:
                words, still = _trend(history)
                trends.append(f"n = {n}: {words}")
                if still and ex[0] < acc - NEURALSORT_TOLERANCE:
                    rising.append(n)
    scale = f"{store.config.get('steps')} steps of 100,000 ({_pct(frac)})"
    if trends:
        scale += "; exact accuracy over the run's last half (seed 0): " + "; ".join(trends)
    out = Claim(title, claim, NOT_RUN, "the store has neither n = 3 nor n = 5", paper,
                scale=scale, source=store.path,
                table=(["n", "seeds", "exact accuracy (ours)", "exact accuracy by step (ours, seed 0)",
                        "exact accuracy (paper's)"], rows))
    if checks:
        ok = all(c for _, c, _ in checks)
        out.ours = ", ".join(f"n = {n}: {a:.3f}" for n, _, a in checks)
        unsettled = (f"exact accuracy was below the paper's and still rising at the end of the run for "
                     f"n = {', '.join(map(str, rising))} (a sorting run is judged once its accuracy gains at most "
                     f"{NEURALSORT_PLATEAU} over its second half)") if rising else ""
        _judge(out, ok, f"ours is {'within' if ok else 'not within'} {NEURALSORT_TOLERANCE} of the paper's "
                        f"accuracy for every n run", frac, unsettled=unsettled)
    return out


def _efficiency(stores: List[Store]) -> Claim:
    title = "Efficiency table: ReinMax's cost"
    claim = "ReinMax costs what ST costs: the same time per epoch and about the same memory"
    paper = "; ".join(f"{setting}: ReinMax {v['reinmax']['seconds']} s / {v['reinmax']['memory']}, ST "
                      f"{v['st']['seconds']} s / {v['st']['memory']}" for setting, v in PAPER_EFFICIENCY.items())
    shapes = {"512x128x2": "QP (512 × 128 binary)", "100x30x10": "MNIST-VAE (100 × 30 × 10)"}
    cands = [(1.0, len(s.results), s) for s in stores if s.benchmark == "efficiency"
             and all(f"{sh}/{e}" in s.results for sh in shapes for e in ("reinmax", "st"))]
    best = _best(cands)
    if best is None:
        return Claim(title, claim, NOT_RUN, "no efficiency store with ReinMax and ST at the paper's two shapes", paper)
    store, rows, ok = best[2], [], True
    for sh, label in shapes.items():
        r, s = store.results[f"{sh}/reinmax"], store.results[f"{sh}/st"]
        if None in (r["time_ms"], s["time_ms"], r["peak_mib"], s["peak_mib"]):
            return Claim(title, claim, NOT_RUN, f"the store has no time or memory for {sh}", paper, source=store.path)
        rel_r, rel_s = _over_softmax(r, s)
        t, m = rel_r / rel_s, r["peak_mib"] / max(s["peak_mib"], 1e-12)
        ok = ok and t <= EFFICIENCY_LIMITS[0] and m <= EFFICIENCY_LIMITS[1]
        rows.append([label, f"{rel_r:.2f} / {rel_s:.2f}", f"{t:.2f}", f"{m:.2f}"])
    return Claim(title, claim, REPRODUCED if ok else NOT_REPRODUCED,
                 f"ReinMax / ST {'within' if ok else 'beyond'} {EFFICIENCY_LIMITS[0]}× in time and "
                 f"{EFFICIENCY_LIMITS[1]}× in peak memory at both shapes (one forward and backward call, not an epoch)",
                 paper, ours="time ratios " + ", ".join(row[2] for row in rows), scale="the paper's shapes",
                 source=store.path, table=(["setting", "time over softmax's, ReinMax / ST", "time ratio", "memory ratio"],
                                           rows))


def _over_softmax(a: dict, b: dict) -> Tuple[float, float]:
    """Two efficiency units' times over softmax's, each in its own unit, by the same statistic:
    the median round where both keep their rounds, else the fastest rounds' ratio where both
    have it, else the times themselves (ms). Each unit is timed against its own softmax, so two
    estimators are compared through these ratios rather than through times taken minutes apart."""
    ma, mb = paired_median(a), paired_median(b)
    if ma == ma and mb == mb:
        return ma, mb
    if a.get("time_ratio") is not None and b.get("time_ratio") is not None:
        return a["time_ratio"], b["time_ratio"]
    return a["time_ms"], b["time_ms"]


def claims(stores: List[Store]) -> List[Claim]:
    """Every published claim, in page order, with our figures from `stores` and the verdict.

    Args:
        stores: validated result stores (`load_stores`).

    Returns:
        One `Claim` per published claim (Tables 2 and 6 one per configuration).
    """
    out = [_table2(stores, cfg) for cfg in PAPER_TABLE2["reinmax"]]
    out += [_table6(stores, k) for k in (2, 3)]
    out += [_polynomial(stores, False), _polynomial(stores, True), _neuralsort(stores), _efficiency(stores)]
    out += [listops_claim(stores), nas_claim(stores)]
    return out


# ---------------------------------------------------------------------------------------------
# The page


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers)] + [
        "| " + " | ".join(map(esc, r)) + " |" for r in rows]


def build_page(stores: List[Store], *, results_label: str = "docs/results", plot: Optional[str] = None) -> str:
    """The Markdown page for `stores`: deterministic (the same stores give the same text).

    Args:
        stores: validated result stores (`load_stores`).
        results_label: how the page names the results directory.
        plot: the plot's file name relative to the page, or None for no plot.

    Returns:
        The page's Markdown text.
    """
    cs = claims(stores)
    counts = {v: sum(c.verdict == v for c in cs) for v in (REPRODUCED, NOT_REPRODUCED, NOT_RUN)}
    lines = ["# Reproduction of the published experiments", "",
             f"Generated by `quasigrad report` from the result stores under `{results_label}/`; do not edit by hand.",
             "Every figure marked *paper's* is the paper's own (`quasigrad.bench.paper`); every other figure "
             "is ours, read from the store named in its section.", "",
             f"A claim is judged only from a run with at least {_pct(MIN_FRACTION)} of the paper's training "
             "(steps, or epochs × images); a shorter run is shown with its "
             "outcome, and its verdict is *not run*, as is a sorting run whose accuracy is below the paper's and "
             "still rising at its end. Where several stores hold a claim, the one with the most "
             "training is used; a store still being written counts the seeds it holds.", "",
             f"{len(cs)} claims: {counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} not reproduced, "
             f"{counts[NOT_RUN]} not run.", ""]
    lines += _md_table(["claim", "paper's figure", "ours", "our training vs the paper's", "verdict"],
                       [[c.title, c.paper, c.ours, c.scale, f"**{c.verdict}**"] for c in cs])
    if plot:
        lines += ["", f"![our figures against the paper's]({plot})"]
    for c in cs:
        paper = PAPER_POLYNOMIAL_SPREAD["claim"] if c.title.startswith("Polynomial") else c.paper
        lines += ["", f"## {c.title}", "", f"*Claim (the paper's):* {c.claim}.", "",
                  f"*Paper's figure:* {paper}", ""]
        if c.source:
            lines += [f"*Ours:* `{results_label}/{c.source}`; {c.scale}.", ""]
        if c.table:
            lines += _md_table(*c.table) + [""]
        lines.append(f"**Verdict: {c.verdict}**" + (f", {c.reason}." if c.reason else "."))
    return "\n".join(lines) + "\n"


def _plot(cs: List[Claim], path: Path) -> bool:
    pts = [p for c in cs for p in c.points]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    groups = sorted({label.split(" ")[0] + " " + label.split(" ")[1] for label, _, _ in pts})
    for g in groups:
        sel = [(x, y) for label, x, y in pts if label.startswith(g + " ")]
        ax.scatter([x for x, _ in sel], [y for _, y in sel], label=g, s=18)
    lo = min(min(x, y) for _, x, y in pts)
    hi = max(max(x, y) for _, x, y in pts)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="ours = paper's")
    ax.set_xlabel("paper's training −ELBO")
    ax.set_ylabel("our training −ELBO")
    ax.set_title("Tables 2 and 6: our figure against the paper's (lower is better)", fontsize=9)
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return True


def _label(results_dir, page: Path) -> str:
    """How the page names the results directory: relative to the folder above the page's (the
    repository root for `docs/reproduction.md`), else as given."""
    try:
        return Path(results_dir).resolve().relative_to(page.resolve().parent.parent).as_posix()
    except ValueError:
        return Path(results_dir).as_posix()


def write_report(results_dir, page) -> str:
    """Read the stores under `results_dir`, write `page` (Markdown) and its plot beside it.

    Args:
        results_dir: the directory searched for `*.json` result stores.
        page: the Markdown file to write (atomically); the plot goes beside it as `reproduction.png`.

    Returns:
        The page's text.
    """
    page = Path(page)
    stores = load_stores(results_dir)
    plotted = _plot(claims(stores), page.parent / PLOT_NAME)
    text = build_page(stores, results_label=_label(results_dir, page), plot=PLOT_NAME if plotted else None)
    atomic_write_bytes(page, text.encode("utf-8"))
    return text


def add_arguments(parser) -> None:
    """`quasigrad report` options: `--results DIR`, `--out PAGE`, `--check`.

    Args:
        parser: the `report` subcommand's parser.
    """
    parser.add_argument("--results", default="docs/results", help="directory of result stores (default docs/results)")
    parser.add_argument("--out", default="docs/reproduction.md", help="the page to write (default docs/reproduction.md)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the page differs from what the stores give")


def run(args) -> int:
    """Write (or with `--check` compare) the page.

    Args:
        args: parsed options of `add_arguments`.

    Returns:
        0 on success, 1 when `--check` finds the page differs from what the stores give.

    Raises:
        ReportError: a store that cannot be read or fails validation (a `BenchmarkError`, which
            the command line prints as one line).
    """
    if args.check:
        stores = load_stores(args.results)
        page = Path(args.out)
        plot = PLOT_NAME if any(c.points for c in claims(stores)) else None
        want = build_page(stores, results_label=_label(args.results, page), plot=plot)
        if not page.exists() or page.read_text(encoding="utf-8") != want:
            print(f"{page} is not what `quasigrad report` gives from {args.results}; run it to regenerate")
            return 1
        print(f"{page} is up to date")
        return 0
    write_report(args.results, args.out)
    print(f"wrote {args.out} (and {Path(args.out).parent / PLOT_NAME} where there is data to plot)")
    return 0
