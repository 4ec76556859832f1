"""Smoke tests of the sort benchmarks: tiny configurations, JSON and PNG written, resumption,
bad arguments refused before any work, and the large-MNIST sequences built correctly."""

import json
from pathlib import Path

import pytest
import torch
from bench_cli import run_bench

from quasigrad.bench import BENCHMARKS, mnist_sort, sort_speed
from quasigrad.bench.runner import BenchmarkError

MNIST_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _keep_threads():
    """The benchmarks set torch's thread count; give the rest of the suite its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_registered():
    assert BENCHMARKS["sort-speed"] == "quasigrad.bench.sort_speed"
    assert BENCHMARKS["mnist-sort"] == "quasigrad.bench.mnist_sort"
    assert sort_speed.BENCHMARK.name == "sort-speed" and mnist_sort.BENCHMARK.name == "mnist-sort"


def test_sort_speed_tiny_run_and_resume(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--sizes", "4", "--batch-sizes", "2", "--repeats", "1", "--no-progress",
            "--methods", "torch.sort", "soft_rank", "neural_sort", "torchsort"]
    assert run_bench("sort-speed", argv) == 0
    data = json.loads((tmp_path / "sort-speed.json").read_text())
    assert data["results"]["soft_rank/n=4/b=2"]["forward_backward_ms"] > 0
    assert data["results"]["soft_rank/n=4/b=2"]["pav_rounds"] >= 1
    assert (tmp_path / "sort-speed.png").exists()
    before = data["results"]
    assert run_bench("sort-speed", argv) == 0          # resumes: nothing re-timed
    assert json.loads((tmp_path / "sort-speed.json").read_text())["results"] == before
    assert "fwd+bwd" in capsys.readouterr().out


def test_sort_speed_bad_arguments(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown --methods"):
        run_bench("sort-speed", ["--out", str(tmp_path), "--methods", "bogus"])
    assert not (tmp_path / "sort-speed.json").exists()


def test_make_sequences_values_match_digits():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 28, 28).contiguous()  # image d is all d
    labels = torch.arange(10)
    pictures, values = mnist_sort.make_sequences(images, labels, 6, 4, torch.Generator().manual_seed(0))
    assert pictures.shape == (6, 4, 28, 112) and values.shape == (6, 4)
    # The four 28-pixel columns blocks read the digits of the value, most significant first.
    digits = (pictures[..., 0, ::28] * 255).round().long()
    assert torch.equal((digits * torch.tensor([1000, 100, 10, 1])).sum(-1), values)


def test_accuracies():
    values = torch.tensor([[3, 1, 2], [1, 2, 3]])
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.2, 0.9]])
    exact, element = mnist_sort.accuracies(scores, values)
    assert exact == 0.5 and element == pytest.approx(4 / 6)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="MNIST files not present")
def test_mnist_sort_tiny_run(tmp_path):
    argv = ["--out", str(tmp_path), "--sizes", "3", "--steps", "2", "--test-sequences", "8", "--no-progress",
            "--methods", "soft_sort_permutation", "--data", str(MNIST_DIR)]
    assert run_bench("mnist-sort", argv) == 0
    data = json.loads((tmp_path / "mnist-sort.json").read_text())
    res = data["results"]["soft_sort_permutation/n=3/seed=0"]
    assert 0 <= res["exact"] <= res["elementwise"] <= 1
    assert (tmp_path / "mnist-sort.png").exists()
    with pytest.raises(BenchmarkError, match="unknown --methods"):
        run_bench("mnist-sort", ["--out", str(tmp_path), "--methods", "bogus"])


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="MNIST files not present")
def test_mnist_sort_resumes_from_checkpoint(tmp_path, monkeypatch):
    from quasigrad.data import load_mnist

    mnist = load_mnist(MNIST_DIR)
    cfg = dict(mnist_sort.SHORT, steps=3, tau=1.0)
    test = mnist_sort.make_sequences(mnist.test_images, mnist.test_labels, 8, 3, torch.Generator().manual_seed(0))
    ckpt = tmp_path / "ck.pt"

    make = mnist_sort.make_sequences
    calls = []

    def interrupted(*args):   # the third step's batch: interrupted after the checkpoint at step 2
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return make(*args)

    monkeypatch.setattr(mnist_sort, "make_sequences", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnist_sort.train_one("neural_sort", 3, 0, cfg, mnist, test, ckpt, 2)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == 2 and [row[0] for row in saved["history"]] == [2]
    monkeypatch.undo()
    drawn = []
    monkeypatch.setattr(mnist_sort, "make_sequences", lambda *a: (drawn.append(1), make(*a))[1])
    result = mnist_sort.train_one("neural_sort", 3, 0, cfg, mnist, test, ckpt, 2)
    assert len(drawn) == 1                                 # only the third step was run
    monkeypatch.undo()
    whole = mnist_sort.train_one("neural_sort", 3, 0, cfg, mnist, test, tmp_path / "other.pt", 2)
    assert {k: v for k, v in result.items() if k != "train_seconds"} == \
        {k: v for k, v in whole.items() if k != "train_seconds"}
    assert [row[0] for row in result["history"]] == [2, 3]      # evaluated at the checkpoint and at the end
    assert result["history"][-1][1:] == [result["exact"], result["elementwise"]]
