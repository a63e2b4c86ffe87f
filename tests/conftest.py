from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_TEST = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _threads():
    # two cores: leave the default, but make every test start from the same global RNG state
    torch.manual_seed(0)
    yield


@pytest.fixture
def mnist_test_root() -> Path:
    if not (MNIST_TEST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is not beside the checkout")
    return MNIST_TEST
