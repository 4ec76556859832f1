"""The polynomial benchmark's second target (``--target spread``, c_i = (i − 0.5)/L): the stated c is
built, its optimum is the exact minimum of the expected loss, and the benchmark prints that optimum."""

import json

import pytest
import torch
from bench_cli import bench_args, run_bench

from quasigrad.bench import polynomial
from quasigrad.bench.runner import BenchmarkError

ARGS = ["--steps", "3", "--num-vars", "8", "--batch-size", "4", "--seeds", "0", "--p", "1.5", "2",
        "--estimators", "reinmax", "rloo", "--no-progress"]


def test_spread_target_builds_the_stated_c():
    config = polynomial.config_of(bench_args("polynomial", ARGS + ["--target", "spread"]))
    c = polynomial.target_of(config)
    assert c.tolist() == [(i - 0.5) / 8 for i in range(1, 9)]
    assert config["target"] == "spread"
    # the default keeps one c = 0.45 and the configuration of the stores written before the option
    default = polynomial.config_of(bench_args("polynomial", ARGS))
    assert "target" not in default and default["c"] == 0.45
    assert polynomial.target_of(default).tolist() == [0.45] * 8


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_spread_optimum_is_the_minimum_of_the_exact_expected_loss(p):
    config = polynomial.config_of(bench_args("polynomial", ARGS + ["--target", "spread"]))
    c = polynomial.target_of(config)
    want = sum(min(ci, 1 - ci) ** p for ci in c.tolist()) / 8
    assert polynomial.optimum(config, p) == pytest.approx(want, rel=1e-12)
    # θ that puts each x_i = D_{i,0} on the nearer side of c_i reaches it; every other corner is worse
    big = 40.0
    nearer = torch.where(c > 0.5, big, -big)                       # logit of category 0 minus category 1
    theta = torch.stack([nearer, torch.zeros(8, dtype=torch.float64)], -1).unsqueeze(0)
    ps = torch.tensor([p], dtype=torch.float64)
    assert float(polynomial.exact_loss(theta, ps, c)) == pytest.approx(want, rel=1e-9)
    flipped = theta.clone()
    flipped[0, 0, 0] = -flipped[0, 0, 0]
    assert float(polynomial.exact_loss(flipped, ps, c)) > want
    # the constant target's optimum is c^p, as before
    assert polynomial.optimum(polynomial.config_of(bench_args("polynomial", ARGS)), p) == pytest.approx(0.45 ** p)


def test_benchmark_prints_and_stores_the_spread_optimum(tmp_path, capsys):
    out = tmp_path / "spread"
    assert run_bench("polynomial", ARGS + ["--target", "spread", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "polynomial.json").read_text())
    assert saved["config"]["target"] == "spread" and saved["config"]["c"] == "(i - 0.5)/L"
    c = [(i - 0.5) / 8 for i in range(1, 9)]
    for p in (1.5, 2.0):
        want = sum(min(ci, 1 - ci) ** p for ci in c) / 8
        rows = [line.split() for line in printed.splitlines() if line.split()[:1] == [f"{p:g}"]]
        assert len(rows) == 2 and all(r[-1] == f"{want:.4f}" for r in rows), printed
    # the spread target's losses are not the constant target's
    for key, value in saved["results"].items():
        theta_free = polynomial.exact_loss(torch.zeros(1, 8, 2, dtype=torch.float64), torch.tensor([1.5]),
                                           torch.tensor(c, dtype=torch.float64))
        assert value["curve"][0][0] == pytest.approx(float(theta_free), abs=2e-3), key


def test_spread_target_refuses_a_constant_c():
    with pytest.raises(BenchmarkError, match="--target spread"):
        polynomial.config_of(bench_args("polynomial", ARGS + ["--target", "spread", "--c", "0.3"]))
