from __future__ import annotations

import os
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


def needed(condition: bool, reason: str) -> None:
    """Skip where `condition` fails, except under CI (CI=true), where a missing browser or data set is a
    failure: those tests must not pass by skipping there."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require():
    return needed


@pytest.fixture
def mnist_test_root() -> Path:
    needed((MNIST_TEST / "t10k-images-idx3-ubyte.gz").exists(), "../shared/data/mnist is not beside the checkout")
    return MNIST_TEST
