"""``quasigrad bench vae`` resumes what earlier versions of the benchmark wrote: a result store
without the ``meta`` section (``tests/data/vae-store-*.json``, written by the benchmark before the
runner existed, with ``--configs 8x4 --epochs 2 --train-size 200 --test-size 100 --seeds 0
--estimators st stgs gst --checkpoint-every 1``: the first after an interruption during ``gst``,
the second after the whole run) and a checkpoint in the layout that version wrote."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from bench_cli import run_bench

from quasigrad.bench import vae_training

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
MNIST = ROOT / ".." / "shared" / "data" / "mnist"
pytestmark = pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist not present")

ARGS = ["--configs", "8x4", "--epochs", "2", "--train-size", "200", "--test-size", "100", "--seeds", "0",
        "--estimators", "st", "stgs", "gst", "--checkpoint-every", "1", "--no-progress", "--data", str(MNIST)]
# The checkpoint layout and the run spec of those stores (the spec of 8x4/gst/seed0 as it was written).
OLD_CHECKPOINT_KEYS = ("spec", "model", "optimizer", "est_optimizer", "estimator", "state")
OLD_STATE_KEYS = ("epoch", "batch", "steps", "sum", "count", "seconds", "history")
OLD_SPEC = {"model": "categorical", "latents": 4, "categories": 8, "estimator": "gst", "tau": 1.3, "lr": 0.0005,
            "optimizer": "adam", "epochs": 2, "batch_size": 100, "num_samples": 1, "seed": 0, "train_size": 200,
            "test_size": 100, "binarize": False, "shards": 1, "dtype": "float32"}


@pytest.fixture
def trained(monkeypatch):
    """Records the runs the benchmark trains and how many steps each took in this process."""
    calls = []
    real = vae_training.train

    def counting(spec, *args, **kwargs):
        record = {"estimator": spec.estimator, "steps": 0, "resumed": Path(kwargs["checkpoint"]).exists()}
        calls.append(record)
        on_step = kwargs.get("on_step")

        def step(s, v):
            record["steps"] += 1
            if on_step is not None:
                on_step(s, v)

        return real(spec, *args, **{**kwargs, "on_step": step})

    monkeypatch.setattr(vae_training, "train", counting)
    return calls


def _results(path):
    return json.loads(Path(path).read_text())["results"]


def _close(a, b):
    """The numbers of one run, as the earlier version gave them. The categorical draws now come
    from one random-number contract shared by every path (kernel, PyTorch, layouts), so the
    samples differ from that version's: the same run agrees to 0.1 % after 4 steps, not to
    float32 rounding."""
    assert a["train_neg_elbo"] == pytest.approx(b["train_neg_elbo"], rel=1e-3)
    assert a["test_neg_elbo"] == pytest.approx(b["test_neg_elbo"], rel=1e-3)
    assert [h["train_neg_elbo"] for h in a["history"]] == pytest.approx([h["train_neg_elbo"] for h in b["history"]],
                                                                         rel=1e-3)


def test_an_interrupted_old_store_resumes(tmp_path, trained, capsys):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(DATA / "vae-store-interrupted.json", out / "vae.json")
    old = _results(out / "vae.json")
    assert "meta" not in json.loads((out / "vae.json").read_text())
    assert run_bench("vae", ARGS + ["--out", str(out)]) == 0
    assert [c["estimator"] for c in trained] == ["gst"]           # the finished runs are kept
    saved = json.loads((out / "vae.json").read_text())
    for key in old:
        assert saved["results"][key] == old[key]
    assert saved["config"] == json.loads((DATA / "vae-store-interrupted.json").read_text())["config"]
    # the run the old version finished after its interruption gives the same numbers here
    _close(saved["results"]["8x4/gst/seed0"], _results(DATA / "vae-store-finished.json")["8x4/gst/seed0"])
    assert saved["meta"]["invocations"][0]["units"] == ["8x4/gst/seed0"]
    assert "GST-1.0" in capsys.readouterr().out


def test_a_finished_old_store_is_reported_without_training(tmp_path, trained, capsys):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(DATA / "vae-store-finished.json", out / "vae.json")
    old = _results(out / "vae.json")
    assert run_bench("vae", ARGS + ["--out", str(out)]) == 0
    assert trained == []
    assert _results(out / "vae.json") == old
    assert "resuming: 3 of 3 units" in capsys.readouterr().out


def test_a_checkpoint_in_the_old_layout_resumes(tmp_path, trained):
    # A checkpoint of 8x4/gst/seed0 after 3 of its 4 steps, in the layout and with the spec that
    # the earlier version wrote (keys and spec spelled out above, not taken from today's code).
    spec = vae_training.RunSpec(**OLD_SPEC)
    assert tuple(vae_training.CHECKPOINT_KEYS) == OLD_CHECKPOINT_KEYS
    from quasigrad.bench.vae import load_data

    train_x, test_x = load_data(str(MNIST))
    scratch = tmp_path / "scratch.pt"
    vae_training.train(spec, train_x, test_x, checkpoint=scratch, checkpoint_every=1, stop_after_steps=3)
    today = torch.load(scratch, weights_only=True)
    assert today["spec"] == OLD_SPEC and set(today) == set(OLD_CHECKPOINT_KEYS)
    assert set(today["state"]) == set(OLD_STATE_KEYS) and today["state"]["steps"] == 3
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(DATA / "vae-store-interrupted.json", out / "vae.json")
    torch.save({"spec": dict(OLD_SPEC), "model": today["model"], "optimizer": today["optimizer"],
                "est_optimizer": None, "estimator": None, "state": {k: today["state"][k] for k in OLD_STATE_KEYS}},
               out / "checkpoints" / "8x4_gst_seed0.pt")                 # the old name: key with / as _
    trained.clear()
    assert run_bench("vae", ARGS + ["--out", str(out)]) == 0
    assert trained == [{"estimator": "gst", "steps": 1, "resumed": True}]  # one step left of four
    assert not (out / "checkpoints" / "8x4_gst_seed0.pt").exists()
    _close(_results(out / "vae.json")["8x4/gst/seed0"], _results(DATA / "vae-store-finished.json")["8x4/gst/seed0"])
