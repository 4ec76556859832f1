"""The benchmarks' figures: legends that cover no panel, styles that tell estimators apart,
skipped entries that show, integer ticks on axes that count. Drawn on the Agg backend from
small hand-made results (the plotting functions take the same store the runner passes them)."""

from __future__ import annotations

import types

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from quasigrad.bench import binary_mlp, efficiency, mnist_sort, quality  # noqa: E402
from quasigrad.lab._specs import default_specs, parse_specs  # noqa: E402


class _Ctx:
    """What a plotting function uses of the runner's context: pyplot and figure()."""

    def __init__(self, seeds=(0,)):
        self.figures = {}
        self.seeds = list(seeds)

    def pyplot(self):
        return plt

    def figure(self, fig, filename):
        self.figures[filename] = fig


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig):
    """Every text the figure shows: texts, titles, labels, tick labels, legend entries."""
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def _overlaps_any_axes(fig, legend):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    return [ax for ax in fig.axes if box.overlaps(ax.get_window_extent(renderer))]


def _spec(label, family, has_tau=True, **kwargs):
    return types.SimpleNamespace(label=label, kwargs=kwargs, info=types.SimpleNamespace(family=family,
                                                                                        has_tau=has_tau))


# ----------------------------------------------------------------------------------- quality


def _quality_store(names, specs):
    store = {}
    for n, name in enumerate(names):
        for i, spec in enumerate(specs):
            taus = quality.QUICK_TAUS if spec.info.has_tau else [None]
            store[f"{name}/{spec.label}"] = [
                {"estimator": spec.label, "tau": t, "bias": 0.1 + 0.01 * (i + n + k), "mse_rel": 1.0 + i + k,
                 "cosine": 0.5 - 0.01 * i, "grad_norm": 1.0} for k, t in enumerate(taus)]
    return store


def test_quality_styles_unique_for_the_default_estimators():
    specs = parse_specs(None, default=default_specs())
    styles = quality.estimator_styles(specs)
    triples = [(s["color"], s["marker"], str(s["linestyle"])) for s in styles.values()]
    assert len(styles) == len(specs) and len(set(triples)) == len(triples)
    # a colour of its own for each estimator, and the colour map says the family
    assert len({s["color"] for s in styles.values()}) == len(specs)
    for spec in specs:
        cmap = matplotlib.colormaps[quality.FAMILY_COLORMAPS[spec.info.family]]
        shades = {matplotlib.colors.to_hex(cmap(i)) for i in range(cmap.N)}   # its lookup table
        assert styles[spec.label]["color"] in shades


def test_quality_styles_unique_past_the_markers_of_one_family():
    specs = [_spec(f"e{i}", "straight-through", has_tau=i % 2 == 0) for i in range(3 * len(quality.MARKERS) + 1)]
    specs.append(_spec("fixed", "straight-through", tau=0.5))   # tau fixed: drawn as a constant
    specs.append(_spec("new", "a family without a set colour"))
    styles = quality.estimator_styles(specs)
    triples = [(s["color"], s["marker"], str(s["linestyle"])) for s in styles.values()]
    assert len(set(triples)) == len(specs)
    assert styles["fixed"]["linestyle"] != styles["e0"]["linestyle"]
    assert styles["new"]["color"] != styles["e0"]["color"]


def test_quality_plot_same_style_in_every_panel_and_legend_outside():
    specs = parse_specs(["st", "reinmax", "gumbel_softmax", "rloo", "reinforce", "zgr"], default=[])
    names = ["linear", "quadratic"]
    ctx = _Ctx()
    quality._plot(_quality_store(names, specs), names, specs, ctx)
    fig = ctx.figures["quality.png"]
    styles = quality.estimator_styles(specs)
    expected = [(matplotlib.colors.to_hex(styles[s.label]["color"]), styles[s.label]["marker"]) for s in specs]
    for ax in fig.axes:
        lines = ax.get_lines()
        assert [(matplotlib.colors.to_hex(ln.get_color()), ln.get_marker()) for ln in lines] == expected
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    legend = fig.legends[0]
    shown = {t.get_text() for t in legend.get_texts()}
    assert {s.label for s in specs} | {"straight-through", "score-function", "relaxation"} <= shown
    assert _overlaps_any_axes(fig, legend) == []


# -------------------------------------------------------------------------------- efficiency


def _efficiency_store(shapes, labels, skipped):
    store = {}
    for shape in shapes:
        for i, label in enumerate(labels):
            key = f"{'x'.join(map(str, shape))}/{label}"
            if key not in skipped:
                store[key] = {"time_ratio": 1.0 + i, "memory_ratio": 1.5 + i}
    return store


def test_efficiency_plot_marks_skipped_entries():
    shapes, labels = [(8, 4), (256, 50257)], ["st", "gumbel_rao", "gumbel_rao:k=100"]
    skipped = ["256x50257/gumbel_rao", "256x50257/gumbel_rao:k=100"]
    ctx = _Ctx()
    efficiency._plot(_efficiency_store(shapes, labels, skipped), shapes, labels, ctx, skipped, 2e8)
    fig = ctx.figures["efficiency.png"]
    for ax in fig.axes:   # one mark and one note per skipped entry, in each panel
        notes = [t for t in ax.texts if "skipped" in t.get_text() and "2e+08" in t.get_text()]
        marks = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
        assert len(notes) == len(skipped) and len(marks) == len(skipped)
    assert any("not run" in t and "--max-gr-work" in t for t in _texts(fig))


def test_efficiency_plot_without_skipped_entries_says_nothing_of_skipping():
    shapes, labels = [(8, 4)], ["st", "reinmax"]
    ctx = _Ctx()
    efficiency._plot(_efficiency_store(shapes, labels, []), shapes, labels, ctx)
    assert not any("skipped" in t for t in _texts(ctx.figures["efficiency.png"]))


def test_efficiency_plot_every_line_is_in_the_legend():
    shapes, labels = [(8, 4), (16, 3)], ["st", "reinmax"]
    ctx = _Ctx()
    efficiency._plot(_efficiency_store(shapes, labels, []), shapes, labels, ctx)
    fig = ctx.figures["efficiency.png"]
    legend = fig.legends[0]
    entries = [t.get_text() for t in legend.get_texts()]
    # the vertical guides (x = 1 and x = 2 in data coordinates) are named in the legend
    guides = {float(ln.get_xdata()[0]) for ax in fig.axes for ln in ax.get_lines()}
    assert guides == {1.0, 2.0}
    assert any(e.startswith("1×") for e in entries) and any(e.startswith("2×") for e in entries)
    assert {f"shape {s}" for s in shapes} <= set(entries)
    assert _overlaps_any_axes(fig, legend) == []


# ---------------------------------------------------------------------- integer tick axes


def _integer_ticks(axis):
    ticks = [t for t in axis.get_majorticklocs() if axis.axes.get_xlim()[0] <= t <= axis.axes.get_xlim()[1]]
    labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
    return ticks, labels


@pytest.mark.parametrize("sizes", [[3, 5], [3, 5, 7, 9, 15], list(range(2, 40, 3))])
def test_mnist_sort_plot_has_integer_n_ticks(sizes):
    summary = {f"{m}/n={n}": {"exact": (0.9 - 0.01 * n, 0.01)} for m in ("neural_sort", "soft_sort_permutation")
               for n in sizes}
    ctx = _Ctx()
    mnist_sort._plot(summary, sizes, ["neural_sort", "soft_sort_permutation"], ctx)
    fig = ctx.figures["mnist-sort.png"]
    fig.canvas.draw()
    ticks, labels = _integer_ticks(fig.axes[0].xaxis)
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert labels and all("." not in text for text in labels)


def test_binary_mlp_plot_has_integer_epoch_ticks():
    hist = [{"epoch": e, "val_acc": 0.9 + 0.01 * e} for e in (1, 2, 3)]
    store = {f"{name}/seed0": {"history": hist} for name in ("ste-adam", "md-tanh")}
    ctx = _Ctx()
    binary_mlp._plot(store, ["ste-adam", "md-tanh"], ctx)
    fig = ctx.figures["binary-mlp.png"]
    fig.canvas.draw()
    ticks, labels = _integer_ticks(fig.axes[0].xaxis)
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert labels and all("." not in text for text in labels)
