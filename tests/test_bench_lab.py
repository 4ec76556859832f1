"""The lab's benchmarks: resumable after an interruption, clear errors before any work starts."""

import json
import math

import pytest
from bench_cli import run_bench

from quasigrad.bench import BENCHMARKS, efficiency, polynomial
from quasigrad.lab._specs import STOP_ENV


@pytest.fixture
def cli_main():
    from quasigrad.cli import main

    return main


def _results(path):
    data = json.loads(path.read_text())["results"]
    for value in data.values():
        if isinstance(value, dict):
            value.pop("seconds", None)
    return data


POLY = ["--steps", "24", "--num-vars", "6", "--batch-size", "4", "--seeds", "0", "1", "--p", "1.5", "3",
        "--estimators", "st", "reinmax", "stgs", "rloo", "--checkpoint-every", "5", "--no-progress"]


def test_benchmarks_are_registered():
    assert {"polynomial", "quality", "efficiency", "objective-poly"} <= set(BENCHMARKS)


def test_polynomial_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    assert run_bench("polynomial", POLY + ["--out", str(whole)]) == 0
    expected = _results(whole / "polynomial.json")
    assert len(expected) == 8 and (whole / "polynomial.png").exists()

    part = tmp_path / "part"
    calls = []
    real = polynomial.run_unit

    def counting(spec, seed, *a, **k):
        calls.append((spec.label, seed))
        return real(spec, seed, *a, **k)

    monkeypatch.setattr(polynomial, "run_unit", counting)
    # Stop after two finished units, then once more in the middle of a unit (after a checkpoint).
    monkeypatch.setenv(STOP_ENV, "units:2")
    with pytest.raises(KeyboardInterrupt):
        run_bench("polynomial", POLY + ["--out", str(part)])
    assert len(_results(part / "polynomial.json")) == 2
    monkeypatch.setenv(STOP_ENV, "steps:12")
    with pytest.raises(KeyboardInterrupt):
        run_bench("polynomial", POLY + ["--out", str(part)])
    assert len(list((part / "checkpoints").glob("*.pt"))) == 1
    monkeypatch.delenv(STOP_ENV)
    calls.clear()
    assert run_bench("polynomial", POLY + ["--out", str(part)]) == 0
    assert len(calls) == 6                                   # the two finished units are not run again
    assert _results(part / "polynomial.json") == expected    # same numbers, checkpoint resumed exactly
    assert not list((part / "checkpoints").glob("*.pt"))
    assert "final train loss" in capsys.readouterr().out


def test_polynomial_exact_loss_factorises():
    import torch

    theta = torch.randn(1, 5, 2, dtype=torch.float64)
    p, c = 1.5, 0.45
    pi0 = torch.softmax(theta, -1)[0, :, 0]
    direct = sum(float(pi0[i] * (1 - c) ** p + (1 - pi0[i]) * c ** p) for i in range(5)) / 5
    assert float(polynomial.exact_loss(theta, torch.tensor([p], dtype=torch.float64), c)) == pytest.approx(direct)


def test_quality_bench_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    argv = ["--problems", "linear", "quadratic", "--estimators", "st", "stgs", "--taus", "0.5", "1",
            "--draws", "64", "--no-progress"]
    assert run_bench("quality", argv + ["--out", str(tmp_path / "a")]) == 0
    monkeypatch.setenv(STOP_ENV, "units:3")
    with pytest.raises(KeyboardInterrupt):
        run_bench("quality", argv + ["--out", str(tmp_path / "b")])
    monkeypatch.delenv(STOP_ENV)
    assert run_bench("quality", argv + ["--out", str(tmp_path / "b")]) == 0
    assert _results(tmp_path / "b" / "quality.json") == _results(tmp_path / "a" / "quality.json")
    assert (tmp_path / "b" / "quality.png").exists()


def test_efficiency_bench_runs_and_resumes(tmp_path, monkeypatch):
    argv = ["--shapes", "8x4", "16x3x2", "--estimators", "st", "reinmax", "--gr-k", "--repeats", "1",
            "--min-time", "0.001", "--no-peers", "--threads", "1", "--no-progress", "--out", str(tmp_path)]
    monkeypatch.setenv(STOP_ENV, "units:3")
    with pytest.raises(KeyboardInterrupt):
        run_bench("efficiency", argv)
    first = _results(tmp_path / "efficiency.json")
    assert len(first) == 3
    monkeypatch.delenv(STOP_ENV)
    assert run_bench("efficiency", argv) == 0
    res = _results(tmp_path / "efficiency.json")
    assert set(res) == {"8x4/st", "8x4/reinmax", "16x3x2/st", "16x3x2/reinmax"}
    for key in first:                                        # finished units kept, not measured again
        assert res[key] == first[key]
    for r in res.values():
        assert r["time_ratio"] > 0 and r["peak_mib"] >= 0
    assert (tmp_path / "efficiency.png").exists()


def test_efficiency_median_round_pairs_each_round_with_its_softmax():
    from quasigrad._util.tables import paired_median
    # rounds 2 and 3 disturbed: the ratio of the fastest rounds (1.0 / 2.0 = 0.5) misses that the
    # estimator took 1.5x softmax's time within most rounds
    r = {"time_ms_all": [3.0, 9.0, 1.0, 4.5, 6.0], "softmax_ms_all": [2.0, 2.0, 4.0, 3.0, 4.0]}
    assert paired_median(r) == 1.5
    assert math.isnan(paired_median({"time_ms": 1.0}))   # a store without the rounds


def test_peak_memory_counts_an_allocation_made_during_the_call():
    import torch

    def call():
        x = torch.ones(1 << 18)          # 1 MiB of float32, freed on return
        return float(x.sum())

    peak = efficiency._peak_bytes(call, torch.device("cpu"))
    assert (1 << 20) <= peak < (1 << 20) * 1.5


@pytest.mark.parametrize("name", ["polynomial", "quality", "efficiency"])
def test_unknown_estimator_fails_before_any_work(cli_main, name, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["bench", name, "--estimators", "st", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown estimator(s) 'nope'" in err and "reinmax" in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["polynomial", "quality", "efficiency"])
def test_unwritable_out_fails_before_any_work(cli_main, name, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli_main(["bench", name, "--estimators", "st", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "cannot be written" in err
    assert not (blocker.parent / "efficiency.json").exists()


def test_unknown_benchmark_and_problem(cli_main, tmp_path, capsys):
    assert cli_main(["bench", "polynomials"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'polynomials'" in err and "polynomial" in err
    assert cli_main(["bench", "quality", "--problems", "quartic", "--out", str(tmp_path / "q")]) == 2
    assert "unknown problem(s) 'quartic'" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
