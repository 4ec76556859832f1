"""Every program in examples/ runs to the end at its tiny size (``--tiny``) in a fresh process,
with this checkout's quasigrad, and prints what it promises."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# what each example must print (regular expressions, found anywhere in its output)
EXPECT = {
    "categorical_vae.py": [r"epoch 2: train -ELBO \d+\.\d+, test -ELBO \d+\.\d+ nats/image"],
    "mixture_of_experts.py": [r"st  top-1: MSE \d", r"st  top-2: MSE \d", r"reinmax  top-1: MSE \d",
                              r"reinmax  top-2: MSE \d", r"one expert for every input"],
    "qat_lsq_mlp.py": [r"weight_bits=4, act_bits=8", r"weight_bits=4 \(2 per byte\)",
                       r"outputs identical: True", r"KiB as 4-bit codes"],
    "spearman_ranking.py": [r"untrained scorer +rho [+-]0\.\d+", r"soft Spearman .* rho [+-]\d\.\d+",
                            r"mean squared error +rho"],
    "ising_sampling.py": [r"gibbs: accept", r"gwg: accept \d\.\d+, max \|marginal error\| \d\.\d+",
                          r"dmala: accept"],
}


def test_every_example_is_run():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECT)


MNIST_DIR = Path(os.environ.get("QUASIGRAD_TEST_MNIST", ROOT.parent / "shared" / "data" / "mnist"))


def _needs_mnist(name: str) -> bool:
    return "mnist" in (EXAMPLES / name).read_text()


@pytest.fixture(scope="module")
def runs():
    """Every example started at once (each uses one thread), so that the module takes about as long
    as the slowest one; the tests then wait for their own."""
    env = dict(os.environ, QUASIGRAD_EXAMPLE_TINY="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    env["QUASIGRAD_MNIST"] = str(MNIST_DIR)
    procs = {name: subprocess.Popen([sys.executable, str(EXAMPLES / name), "--tiny"], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in sorted(EXPECT) if MNIST_DIR.is_dir() or not _needs_mnist(name)}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs_at_tiny_size(name, runs):
    if name not in runs:
        pytest.skip(f"{name} reads MNIST, which is not at {MNIST_DIR} (set QUASIGRAD_TEST_MNIST to its directory)")
    try:
        stdout, stderr = runs[name].communicate(timeout=600)
    except subprocess.TimeoutExpired:
        runs[name].kill()
        stdout, stderr = runs[name].communicate()
        pytest.fail(f"{name} did not finish in 600 s:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    assert runs[name].returncode == 0, f"{name} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    for pattern in EXPECT[name]:
        assert re.search(pattern, stdout), f"{name} did not print {pattern!r}:\n{stdout[-3000:]}"
