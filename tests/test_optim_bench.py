"""Smoke test of ``quasigrad bench binary-mlp`` on a tiny slice of the real MNIST files:
it runs, writes JSON and PNG, resumes without retraining, and refuses bad arguments early."""

import json
from pathlib import Path

import pytest
import torch
from bench_cli import run_bench

from quasigrad.bench import BENCHMARKS, binary_mlp
from quasigrad.bench.runner import BenchmarkError

MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def test_registered():
    assert BENCHMARKS["binary-mlp"] == "quasigrad.bench.binary_mlp"


def test_bad_arguments_fail_before_work(tmp_path):
    with pytest.raises(BenchmarkError, match="--optimizers"):
        run_bench("binary-mlp", ["--out", str(tmp_path), "--optimizers", "sgd"])
    with pytest.raises(BenchmarkError, match="--tau"):
        run_bench("binary-mlp", ["--out", str(tmp_path), "--tau", "0"])
    assert not (tmp_path / "binary-mlp.json").exists()


def test_expected_calibration_error_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    # bins (0.8667, 0.9333]: {0.9 correct}; (0.5333, 0.6]: {0.6 wrong}; (0.6667, 0.7333]: {0.7 correct};
    # (0.7333, 0.8]: {0.8 wrong}
    expected = 0.25 * (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(0 - 0.8))
    assert binary_mlp.expected_calibration_error(probs, labels) == pytest.approx(expected)


@pytest.mark.skipif(not MNIST.exists(), reason="MNIST files not found next to the checkout")
def test_tiny_run_writes_results_and_resumes(tmp_path, monkeypatch, capsys):
    argv = ["--out", str(tmp_path), "--data", str(MNIST), "--epochs", "1", "--train-size", "600",
            "--hidden", "16", "--test-samples", "2", "--no-progress"]
    assert run_bench("binary-mlp", argv) == 0
    saved = json.loads((tmp_path / "binary-mlp.json").read_text())
    assert set(saved["results"]) == {"ste-adam/seed0", "md-tanh/seed0", "bayesbinn/seed0"}
    for res in saved["results"].values():
        assert 0.0 <= res["acc"] <= 1.0 and 0.0 <= res["ece"] <= 1.0
    assert "acc_mc" in saved["results"]["bayesbinn/seed0"]
    assert (tmp_path / "binary-mlp.png").stat().st_size > 0
    assert "bayesbinn" in capsys.readouterr().out

    def no_training(*a, **k):
        raise AssertionError("finished runs must not be trained again")

    monkeypatch.setattr(binary_mlp, "_run_one", no_training)
    assert run_bench("binary-mlp", argv) == 0
