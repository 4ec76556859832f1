"""The papers' figures in quasigrad.bench.paper equal the published tables, value for value.

The tables are parsed from ``tests/data/published-tables.md`` (a copy of the project's reference
file, checked against the original when it is present), so a typo in a constant fails here.
"""

import re
from pathlib import Path

import pytest

from quasigrad.bench import paper

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "published-tables.md"
ORIGINAL = HERE.parents[1] / "shared" / "reference" / "published-tables.md"
NUMBER = re.compile(r"^(-?\d+(?:\.\d+)?)\s*±\s*(\d+(?:\.\d+)?)$")


def _sections(text):
    """``{heading: body}`` for every ``###`` section."""
    parts = re.split(r"^### (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _table(body):
    """The first Markdown table of ``body``: ``(header, rows)``, cells stripped."""
    lines = [ln.strip() for ln in body.splitlines() if ln.strip().startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert len(cells) >= 3 and set("".join(cells[1])) <= set("-: "), "not a Markdown table"
    return cells[0], cells[2:]


def _mean_std(cell):
    m = NUMBER.match(cell)
    assert m, f"not 'mean ± std': {cell!r}"
    return float(m.group(1)), float(m.group(2))


SECTIONS = _sections(REFERENCE.read_text())
NAMES = {"STGS": "stgs", "GR-MCK": "gumbel_rao", "GST-1.0": "gst", "ST": "st", "ReinMax": "reinmax",
         "RELAX*": "relax", "ARMS*": "arms", "DisARM*": "disarm", "Double CV*": "double_cv", "RODEO*": "rodeo",
         "GR-MCK100": "gumbel_rao:k=100", "GR-MCK300": "gumbel_rao:k=300", "GR-MCK1000": "gumbel_rao:k=1000"}


def _section(prefix):
    (key,) = [k for k in SECTIONS if k.startswith(prefix)]
    return SECTIONS[key]


def test_reference_copy_equals_the_original():
    if not ORIGINAL.exists():
        pytest.skip("the project's reference file is not beside this checkout")
    assert REFERENCE.read_text() == ORIGINAL.read_text()


def test_table2():
    header, rows = _table(_section("Table 2"))
    assert header[:2] == ["estimator", "AVG"]
    configs = header[2:]
    assert configs == ["8×4", "4×24", "8×16", "16×12", "64×8", "10×30"]
    seen = set()
    for row in rows:
        name = NAMES[row[0]]
        seen.add(name)
        assert paper.PAPER_TABLE2_AVG[name] == float(row[1])
        for cfg, cell in zip(configs, row[2:]):
            assert paper.PAPER_TABLE2[name][cfg.replace("×", "x")] == _mean_std(cell), (name, cfg)
    assert seen == set(paper.PAPER_TABLE2) == set(paper.PAPER_TABLE2_AVG)
    assert all(len(v) == 6 for v in paper.PAPER_TABLE2.values())
    assert set(paper.CATEGORICAL_CONFIGS) == {c.replace("×", "x") for c in configs}


def test_table2_keys_are_the_vae_benchmarks_estimators():
    from quasigrad import registry
    from quasigrad.bench import vae

    assert set(paper.PAPER_TABLE2) <= set(vae.DEFAULT_ESTIMATORS)
    assert all(n in registry.names() or registry.canonical(n) in registry.names() for n in paper.PAPER_TABLE2)


def test_table1_listops():
    header, rows = _table(_section("Table 1"))
    names = [NAMES[h] for h in header[1:]]
    assert set(names) == set(paper.PAPER_TABLE1_LISTOPS)
    for row in rows:
        split = {"valid accuracy": "valid", "test accuracy": "test"}[row[0]]
        for name, cell in zip(names, row[1:]):
            assert paper.PAPER_TABLE1_LISTOPS[name][split] == _mean_std(cell), (name, split)


def test_table4_nas():
    header, rows = _table(_section("Table 4"))
    cols = [h.rsplit(" ", 1) for h in header[1:]]
    data = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "ImageNet-16-120": "imagenet16-120"}
    assert len(rows) == 2
    for row in rows:
        name = {"GDAS + STGS*": "stgs", "GDAS + ReinMax": "reinmax"}[row[0]]
        for (ds, split), cell in zip(cols, row[1:]):
            assert paper.PAPER_TABLE4_NAS[name][data[ds]][split] == _mean_std(cell), (name, ds, split)
        assert sum(len(v) for v in paper.PAPER_TABLE4_NAS[name].values()) == 6


def test_table6_binary_vae():
    header, rows = _table(_section("Table 6"))
    assert header[:2] == ["K", "data"]
    names = [NAMES[h] for h in header[2:]]
    data = {"MNIST": "mnist", "Fashion-MNIST": "fashion_mnist", "Omniglot": "omniglot"}
    count = 0
    for row in rows:
        k, ds = int(row[0]), data[row[1]]
        want = {n: _mean_std(c) for n, c in zip(names, row[2:]) if c != "–"}
        assert paper.PAPER_TABLE6[k][ds] == want, (k, ds)
        count += 1
    assert count == sum(len(v) for v in paper.PAPER_TABLE6.values()) == 6
    starred = {NAMES[h] for h in header[2:] if h.endswith("*")}
    assert paper.TABLE6_QUOTED == starred


def test_efficiency_table():
    header, rows = _table(_section("Efficiency table"))
    names = [NAMES[h] for h in header[1:]]
    for row in rows:
        setting = {"QP": "qp", "MNIST-VAE": "mnist_vae"}[row[0]]
        for name, cell in zip(names, row[1:]):
            t, mem = (s.strip() for s in cell.split("/"))
            assert t.endswith(" s")
            assert paper.PAPER_EFFICIENCY[setting][name] == {"seconds": float(t[:-2]), "memory": mem}, (setting, name)
    assert {len(v) for v in paper.PAPER_EFFICIENCY.values()} == {len(names)}


def test_polynomial_second_target_and_claim():
    body = _section("Polynomial programming, second target")
    assert "c_i = (i − 0.5)/L" in body
    assert paper.PAPER_POLYNOMIAL_SPREAD["target"].startswith("c_i = (i - 0.5)/L")
    words = " ".join(body.split())
    for phrase in ("REINFORCE-style estimators do well on the simple target", "ReinMax handles the harder one better",
                   "converges more slowly on simple ones because of its bias"):
        assert phrase in words
    claim = paper.PAPER_POLYNOMIAL_SPREAD["claim"]
    assert "do well on the simple target" in claim and "more slowly on simple ones because of its bias" in claim


def test_neuralsort_accuracy():
    text = REFERENCE.read_text()
    found = {int(n): float(v) for n, v in re.findall(r"n = (\d+): (\d\.\d+)", text)}
    assert found == paper.PAPER_NEURALSORT_EXACT == {3: 0.930, 5: 0.837}


def test_settings_match_the_stated_training():
    body = _section("Table 2")
    assert "160 epochs, batch 100" in body
    assert paper.PAPER_SETTINGS["table2"]["epochs"] == 160 and paper.PAPER_SETTINGS["table2"]["batch_size"] == 100
