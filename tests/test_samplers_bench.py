"""Smoke tests of `quasigrad bench samplers` and `quasigrad bench em` at tiny sizes: they
write JSON and a PNG, resume without redoing work, and reject bad arguments before working."""

import json
from pathlib import Path

import pytest
from bench_cli import run_bench

from quasigrad.bench import BENCHMARKS
from quasigrad.bench.runner import BenchmarkError

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def test_registered():
    assert BENCHMARKS["samplers"] == "quasigrad.bench.samplers"
    assert BENCHMARKS["em"] == "quasigrad.bench.em"


def test_samplers_bench_tiny(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--steps", "20", "--chains", "4", "--lattice", "3", "--rbm-visible", "6",
            "--rbm-hidden", "3", "--no-progress"]
    assert run_bench("samplers", argv) == 0
    data = json.loads((tmp_path / "samplers.json").read_text())
    assert (tmp_path / "samplers.png").exists()
    for key in ("ising/gibbs/0", "ising/gwg/0", "ising/dula/0", "ising/dmala/0", "rbm/dmala/0"):
        r = data["results"][key]
        assert len(r["log10_rmse"]) == len(r["record_steps"]) and r["ess"] > 0
    out = capsys.readouterr().out
    assert "ESS/s" in out and "dmala" in out
    # resume: nothing is recomputed (the stored numbers are kept exactly)
    assert run_bench("samplers", argv) == 0
    assert json.loads((tmp_path / "samplers.json").read_text())["results"] == data["results"]


@pytest.mark.parametrize("argv, match", [
    (["--samplers", "hmc"], "unknown sampler"),
    (["--models", "potts"], "unknown model"),
    (["--step-size", "0"], "step-size"),
    (["--steps", "2"], "steps"),
    (["--lattice", "20"], "lattice"),
])
def test_samplers_bench_bad_arguments(tmp_path, argv, match):
    with pytest.raises(BenchmarkError, match=match):
        run_bench("samplers", ["--out", str(tmp_path)] + argv)
    assert not (tmp_path / "samplers.json").exists()


@pytest.mark.parametrize("argv, match", [
    (["--estimators", "nope"], "unknown estimator"),
    (["--samples", "1"], "--samples"),
    (["--pseudo-count", "-1"], "pseudo-count"),
])
def test_em_bench_bad_arguments(tmp_path, argv, match):
    with pytest.raises((BenchmarkError, KeyError), match=match):
        run_bench("em", ["--out", str(tmp_path)] + argv)
    assert not (tmp_path / "em.json").exists()


@pytest.mark.skipif(not MNIST.exists(), reason="MNIST files not present")
def test_em_bench_tiny(tmp_path):
    argv = ["--out", str(tmp_path), "--data", str(MNIST), "--train-size", "100", "--test-size", "50", "--components", "3",
            "--seconds", "0.3", "--no-progress"]
    assert run_bench("em", argv) == 0
    data = json.loads((tmp_path / "em.json").read_text())
    assert (tmp_path / "em.png").exists()
    for m in ("em", "reinmax", "st", "rloo"):
        curve = data["results"][f"{m}/0"]["curve"]
        assert curve[0]["seconds"] == 0 and curve[-1]["seconds"] > 0
    em_curve = [p["train_ll"] for p in data["results"]["em/0"]["curve"]]
    # EM with a small prior: the log-likelihood climbs (monotone up to the prior's pull)
    assert em_curve[-1] > em_curve[0]
