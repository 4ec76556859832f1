"""Damaged or hostile files and bad arguments given to ``quasigrad bench``: each is refused with one
line naming the file or the argument (exit status 2), before any work; a checkpoint planted in
``--out`` cannot run code; result files get the user's file mode; every store records how it
was made; and the command line lists the benchmarks and prints the version."""

import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from bench_cli import run_bench

from quasigrad.bench import BENCHMARKS, polynomial, runner
from quasigrad.bench.store import ResultStore
from quasigrad.cli import main
from quasigrad.lab._specs import STOP_ENV

ROOT = Path(__file__).resolve().parents[1]
POLY = ["--steps", "6", "--num-vars", "4", "--batch-size", "2", "--seeds", "0", "--p", "2", "--estimators", "st",
        "reinmax", "--checkpoint-every", "2", "--no-progress"]


@pytest.fixture
def no_work(monkeypatch):
    """Make any unit of work fail the test: a refusal must come before the work."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a unit of work ran although the arguments or files were bad")

    monkeypatch.setattr(polynomial, "run_unit", forbidden)


def _one_error_line(capsys):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("quasigrad: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def _finished_store(tmp_path):
    out = tmp_path / "out"
    assert run_bench("polynomial", POLY + ["--out", str(out)]) == 0
    return out, out / "polynomial.json"


# ------------------------------------------------------------------ result stores


@pytest.mark.parametrize("content, what", [
    ("[]", "not a result store"),
    ("", "not valid JSON"),
    ("{\"benchmark\": \"polynomial\", \"config\": {", "not valid JSON"),
    ("\x00\xff garbage", "not valid JSON"),
    ("null", "not a result store"),
])
def test_a_store_that_is_not_a_store_is_refused_before_any_work(tmp_path, capsys, no_work, content, what):
    out = tmp_path / "out"
    out.mkdir()
    (out / "polynomial.json").write_text(content)
    assert main(["bench", "polynomial", *POLY, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(out / "polynomial.json") in line and what in line and "--fresh" in line
    assert (out / "polynomial.json").read_text() == content          # left as it was


@pytest.mark.parametrize("damage, what", [
    (lambda d: d.update(results=None), "'results'"),
    (lambda d: d.update(results=[]), "'results'"),
    (lambda d: d.pop("config"), "misses the field 'config'"),
    (lambda d: d.pop("results"), "misses the field 'results'"),
    (lambda d: d.pop("benchmark"), "misses the field 'benchmark'"),
    (lambda d: d["results"]["st/seed=0"].pop("exact_loss"), "'st/seed=0'"),
    (lambda d: d["results"].update({"st/seed=0": None}), "'st/seed=0'"),
    (lambda d: d.update(meta=[]), "'meta'"),
])
def test_a_store_with_a_missing_or_malformed_field_is_refused_before_any_work(tmp_path, capsys, monkeypatch,
                                                                              damage, what):
    out, path = _finished_store(tmp_path)
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    before = path.read_text()
    capsys.readouterr()

    def forbidden(*args, **kwargs):
        raise AssertionError("a unit of work ran although the store was damaged")

    monkeypatch.setattr(polynomial, "run_unit", forbidden)
    # another seed: without the check, the missing field would be found only after this unit ran
    assert main(["bench", "polynomial", *POLY, "--seeds", "0", "1", "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(path) in line and what in line and "--fresh" in line
    assert path.read_text() == before


def test_fresh_replaces_a_damaged_store(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "polynomial.json").write_text("[]")
    assert main(["bench", "polynomial", *POLY, "--out", str(out), "--fresh"]) == 0
    assert set(json.loads((out / "polynomial.json").read_text())["results"]) == {"st/seed=0", "reinmax/seed=0"}


def test_a_store_of_another_benchmark_or_configuration_is_refused(tmp_path, capsys, no_work):
    out = tmp_path / "out"
    out.mkdir()
    (out / "polynomial.json").write_text(json.dumps({"benchmark": "quality", "config": {}, "results": {}}))
    assert main(["bench", "polynomial", *POLY, "--out", str(out)]) == 2
    assert "'quality'" in _one_error_line(capsys)
    (out / "polynomial.json").write_text(json.dumps({"benchmark": "polynomial", "config": {"steps": 1},
                                                     "results": {}}))
    assert main(["bench", "polynomial", *POLY, "--out", str(out)]) == 2
    assert "another configuration" in _one_error_line(capsys)


def test_an_unreadable_store_is_one_line(tmp_path, capsys, no_work):
    out = tmp_path / "out"
    (out / "polynomial.json").mkdir(parents=True)                    # a directory where the file should be
    assert main(["bench", "polynomial", *POLY, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(out / "polynomial.json") in line and "cannot be read" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_a_store_without_read_permission_is_one_line(tmp_path, capsys, no_work):
    out = tmp_path / "out"
    out.mkdir()
    path = out / "polynomial.json"
    path.write_text("{}")
    path.chmod(0)
    try:
        assert main(["bench", "polynomial", *POLY, "--out", str(out)]) == 2
    finally:
        path.chmod(0o600)
    assert "cannot be read" in _one_error_line(capsys)


def test_an_unreadable_data_directory_is_one_line(tmp_path, capsys, monkeypatch):
    import quasigrad.data

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz"))

    monkeypatch.setattr(quasigrad.data, "load_mnist", denied)
    assert main(["bench", "mnist-sort", "--data", str(tmp_path / "mnist"), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "--data" in line and "train-images-idx3-ubyte.gz" in line and "Permission denied" in line
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ checkpoints


class _Planted:
    """Unpickling this would write a file: the proof that a checkpoint ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def _interrupted_with_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv(STOP_ENV, "steps:3")
    with pytest.raises(KeyboardInterrupt):
        run_bench("polynomial", POLY + ["--out", str(out)])
    monkeypatch.delenv(STOP_ENV)
    (checkpoint,) = (out / "checkpoints").glob("*.pt")
    return out, checkpoint


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "planted", "a list", "foreign dict"])
def test_a_damaged_or_planted_checkpoint_is_one_line_and_runs_no_code(tmp_path, capsys, monkeypatch, kind):
    out, checkpoint = _interrupted_with_checkpoint(tmp_path, monkeypatch)
    marker = tmp_path / "code-ran"
    good = checkpoint.read_bytes()
    if kind == "truncated":
        checkpoint.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        checkpoint.write_bytes(b"")
    elif kind == "garbage":
        checkpoint.write_bytes(os.urandom(4096))
    elif kind == "planted":
        torch.save({"theta": _Planted(marker)}, checkpoint)
    elif kind == "a list":
        torch.save([1, 2, 3], checkpoint)
    else:
        torch.save({"model": torch.zeros(2)}, checkpoint)
    capsys.readouterr()
    assert main(["bench", "polynomial", *POLY, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert f"checkpoint {checkpoint}" in line and "--fresh" in line
    assert not marker.exists()
    # --fresh starts over without reading it
    assert main(["bench", "polynomial", *POLY, "--out", str(out), "--fresh"]) == 0
    assert not marker.exists() and not list((out / "checkpoints").glob("*.pt"))


def test_a_planted_pickle_really_would_run_code(tmp_path):
    # The control for the test above: the same file loaded without weights_only runs its code.
    marker = tmp_path / "code-ran"
    path = tmp_path / "x.pt"
    torch.save({"theta": _Planted(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_the_vae_trainer_refuses_a_planted_checkpoint(tmp_path):
    from quasigrad import vae

    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "run.pt"
    torch.save({"spec": {}, "model": _Planted(marker)}, checkpoint)
    spec = vae.RunSpec(model="categorical", latents=2, categories=3, epochs=1, train_size=100, test_size=10)
    with pytest.raises(vae.VAEError, match=f"checkpoint {checkpoint} cannot be loaded.*--fresh"):
        vae.train(spec, torch.rand(100, 784), torch.rand(10, 784), checkpoint=checkpoint)
    torch.save({"spec": {}, "model": {}}, checkpoint)
    with pytest.raises(vae.VAEError, match="is not a checkpoint of this trainer"):
        vae.train(spec, torch.rand(100, 784), torch.rand(10, 784), checkpoint=checkpoint)
    assert not marker.exists()


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("spec, what", [
    ("gst:gap=nan", "gap=nan is not a finite number"),
    ("gst:gap=inf", "not a finite number"),
    ("gst:gap=-1", "gap"),
    ("gumbel_rao:k=0", "k"),
    ("reinmax:bogus=1", "bogus"),
    ("gumbel_rao:k", "key=value"),
])
def test_a_bad_estimator_argument_is_one_line_naming_it(tmp_path, capsys, no_work, spec, what):
    out = tmp_path / "out"
    assert main(["bench", "polynomial", *POLY, "--estimators", "st", spec, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "--estimators" in line and what in line
    assert not out.exists()


def test_the_trial_of_an_estimator_leaves_the_global_generator_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    runner.estimator_specs(["gumbel_rao:k=4", "rloo", "stgs"], default=[])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
@pytest.mark.parametrize("name", ["polynomial", "vae", "binary-vae", "mnist-sort", "binary-mlp", "qat-equivalence",
                                  "em", "efficiency", "sort-speed"])
def test_device_cuda_without_cuda_is_one_line(tmp_path, capsys, name):
    assert main(["bench", name, "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "--device 'cuda'" in line and "CUDA is not available" in line
    assert not (tmp_path / "o").exists()


def test_a_malformed_device_is_one_line(tmp_path, capsys):
    assert main(["bench", "polynomial", "--device", "gpu0", "--out", str(tmp_path / "o")]) == 2
    assert "--device 'gpu0'" in _one_error_line(capsys)


# ------------------------------------------------------------------ what the files are


def test_result_files_get_the_users_file_mode(tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        out, checkpoint = _interrupted_with_checkpoint(tmp_path, monkeypatch)
        assert checkpoint.stat().st_mode & 0o777 == 0o644                # not mkstemp's 0o600
        os.umask(0o007)
        assert run_bench("polynomial", POLY + ["--out", str(out)]) == 0
        assert (out / "polynomial.json").stat().st_mode & 0o777 == 0o660
        assert (out / "polynomial.png").stat().st_mode & 0o777 == 0o660
    finally:
        os.umask(old)


def test_a_store_records_how_it_was_made_outside_the_config(tmp_path, capsys):
    out, path = _finished_store(tmp_path)
    data = json.loads(path.read_text())
    (first,) = data["meta"]["invocations"]
    import quasigrad

    assert first["quasigrad"] == quasigrad.__version__ and first["torch"] == torch.__version__
    assert first["argv"] == ["quasigrad", "bench", "polynomial", *POLY, "--out", str(out)]
    assert first["command"].startswith("quasigrad bench polynomial --steps 6")
    assert first["units"] == ["st/seed=0", "reinmax/seed=0"]
    assert first["wall_seconds"] > 0 and first["cpu_seconds"] > 0
    assert data["meta"]["wall_seconds"] == pytest.approx(first["wall_seconds"])
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.returncode == 0:
            assert first["git_commit"] == head.stdout.strip()
    assert "meta" not in data["config"]
    # A second invocation resumes (meta is not compared) and adds its own record.
    assert run_bench("polynomial", POLY + ["--seeds", "0", "1", "--out", str(out)]) == 0
    data = json.loads(path.read_text())
    assert len(data["meta"]["invocations"]) == 2
    assert data["meta"]["invocations"][1]["units"] == ["st/seed=1", "reinmax/seed=1"]
    out_text = capsys.readouterr().out
    assert f"results: {path}" in out_text and f"plot: {out / 'polynomial.png'}" in out_text


def test_a_store_written_before_meta_existed_loads(tmp_path):
    path = tmp_path / "polynomial.json"
    path.write_text(json.dumps({"benchmark": "polynomial", "config": {"a": 1}, "results": {"x": {"k": 1}},
                                "table": "old"}))
    store = ResultStore(tmp_path, "polynomial", {"a": 1})
    assert store["x"] == {"k": 1} and store.meta == {"invocations": []}
    store.save()
    saved = json.loads(path.read_text())
    assert saved["table"] == "old" and saved["results"] == {"x": {"k": 1}} and "meta" in saved


# ------------------------------------------------------------------ the command line


def test_bench_help_lists_every_benchmark_and_exits_0(capsys):
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for name in BENCHMARKS.names():
        cls = runner.benchmark_class(name)
        assert cls.name == name and cls.description
        assert f"  {name}" in out and cls.description in out
    assert main(["bench"]) == 2                                      # no name: the list, as a usage error


def test_version(capsys):
    import quasigrad

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"quasigrad {quasigrad.__version__}"


def test_a_single_seed_prints_n_equals_1_and_step_counts_print_as_integers(tmp_path, capsys):
    assert runner.mean_pm([0.25]) == "0.25000 (n = 1)"
    assert runner.mean_pm([1.0, 3.0], ".2f") == "2.00 ± 1.41"
    assert runner.mean_pm([None]) == "n/a"
    assert run_bench("polynomial", POLY + ["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(n = 1)" in out and "± 0.00000" not in out
    assert runner.format_table([["em", round(20280.0)]], ["method", "steps"]).splitlines()[-1].split()[-1] == "20280"


def test_options_mean_one_thing_everywhere():
    # The old spellings are gone (argparse still accepts unambiguous prefixes such as --batch).
    banned = {"--batch", "--batches", "--train", "--test", "--rloo-samples", "--timing-batch"}
    meaning = {"--batch-size": [], "--samples": [], "--train-size": [], "--draws": []}
    for name in BENCHMARKS.names():
        parser = runner.parser(name)
        options = {s: a for a in parser._actions for s in a.option_strings}
        assert not banned & set(options), (name, banned & set(options))
        for flag in meaning:
            if flag in options:
                meaning[flag].append((name, options[flag].help))
        for common in ("--out", "--fresh", "--no-progress"):
            assert common in options, (name, common)
    for name, text in meaning["--samples"]:
        assert "per gradient estimate" in text, (name, text)
    for name, text in meaning["--draws"]:
        assert "estimates" in text, (name, text)
    assert {n for n, _ in meaning["--batch-size"]} >= {"polynomial", "mnist-sort", "vae", "binary-vae", "em",
                                                      "binary-mlp", "qat-equivalence", "objective-poly"}


def test_benchmark_modules_have_no_main_blocks_or_loops_of_their_own():
    bench = ROOT / "quasigrad" / "bench"
    for path in bench.glob("*.py"):
        if path.name in ("runner.py", "store.py"):
            continue
        text = path.read_text()
        assert "__main__" not in text, path.name
        assert "ResultStore(" not in text, path.name
        assert "weights_only=False" not in text, path.name


def test_every_training_benchmark_takes_device():
    for name in ("polynomial", "vae", "binary-vae", "mnist-sort", "binary-mlp", "qat-equivalence", "em"):
        args = runner.parser(name).parse_args([])
        assert args.device == "cpu", name
