import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("QUASIGRAD_TEST_MNIST", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture
def mnist_dir():
    """The shared MNIST files (../shared/data/mnist relative to the checkout)."""
    if not MNIST_DIR.is_dir():
        pytest.fail(f"MNIST files not found at {MNIST_DIR}; set QUASIGRAD_TEST_MNIST to their directory")
    return MNIST_DIR


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_thread():
    # The tests' tensors are small and the machine has 2 shared cores: one intra-op thread avoids
    # OpenMP spin-waiting (30 optimiser steps took 7 s with 2 threads under load, 0.1 s with one).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
