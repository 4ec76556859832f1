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
