"""The VAE benchmarks' named presets: what they plan, and the paper's column they print."""

from pathlib import Path

import pytest
from bench_cli import bench_args, run_bench

from quasigrad.bench import runner
from quasigrad.bench.paper import CATEGORICAL_CONFIGS, PAPER_TABLE6

# the presets load MNIST while planning (and the last test trains on it)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/mnist not present")


def _plan(name, argv):
    args = bench_args(name, argv)
    bench = runner.benchmark_class(name)()
    ctx = runner.Context(bench, args)
    return bench, ctx, bench.plan(args, ctx)


def test_twenty_epoch_preset_plans_every_configuration_on_all_images_with_seed_0():
    bench, ctx, plan = _plan("vae", ["--preset", "20-epochs"])
    assert ctx.seeds == [0]
    assert plan.config["epochs"] == 20 and plan.config["train_size"] is None
    keys = [u.key for u in plan.units]
    assert len(keys) == len(CATEGORICAL_CONFIGS) * 6
    assert {k.split("/")[0] for k in keys} == set(CATEGORICAL_CONFIGS)
    assert all(k.endswith("/seed0") for k in keys)
    assert all(u.steps == 20 * 600 for u in plan.units)   # 60,000 images in batches of 100


def test_a_preset_keeps_seeds_given_on_the_command_line():
    _, ctx, _ = _plan("vae", ["--preset", "20-epochs", "--seeds", "3", "4", "--configs", "8x4"])
    assert ctx.seeds == [3, 4]


def test_full_and_another_preset_together_are_refused():
    with pytest.raises(runner.BenchmarkError, match="--full and --preset 20-epochs"):
        _plan("vae", ["--full", "--preset", "20-epochs"])


def test_hundred_thousand_step_preset_runs_the_table_6_estimators_at_k_2_and_3():
    bench, ctx, plan = _plan("binary-vae", ["--preset", "100k-steps"])
    assert ctx.seeds == [0]
    assert all(u.steps == 100_000 for u in plan.units)
    keys = {u.key for u in plan.units}
    for e in ["reinmax", "st", "stgs", "zgr", "rloo", "disarm", "double_cv", "arms", "rodeo"]:
        assert f"K2/{e}/seed0" in keys
    for e in ["reinmax", "arms", "rodeo", "relax", "rloo", "double_cv"]:
        assert f"K3/{e}/seed0" in keys
    # what cannot use K evaluations per step is listed, not run: DisARM's pairs at K = 3, RELAX
    # (three evaluations per sample) at K = 2, as in Table 6
    for k, e in [(3, "disarm"), (2, "relax")]:
        assert f"K{k}/{e}/seed0" not in keys and any(s.startswith(f"K={k} {e}") for s in bench.skipped)
    assert bench.missing == []


def test_binary_vae_table_prints_the_papers_table_6_column(tmp_path, capsys):
    run_bench("binary-vae", ["--epochs", "1", "--train-size", "200", "--test-size", "100", "--seeds", "0",
                             "--samples", "2", "--estimators", "reinmax", "arms", "--out", str(tmp_path),
                             "--no-progress", "--threads", "1"])
    out = capsys.readouterr().out
    assert "paper train (Table 6, MNIST)" in out
    reinmax = PAPER_TABLE6[2]["mnist"]["reinmax"]
    assert f"{reinmax[0]:.2f} ± {reinmax[1]:.2f}" in out
    row = next(line for line in out.splitlines() if line.startswith("K2") and "ARMS" in line)
    assert row.rstrip().endswith("n/a")   # Table 6 has no ARMS value at K = 2
