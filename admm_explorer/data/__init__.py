"""Dataset registry: name -> a DataBundle of train and test batches, built from a DataSpec.

Every loader yields (x, y) batches with x float32 (N, C, H, W) and y int64 (N,). Shuffling is seeded per
epoch by the caller, so a run (and a resumed run) sees exactly the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch

from ..errors import DataMissing, RecipeError  # noqa: F401  (DataMissing: re-exported)
from ..registry import Registry


@dataclass(frozen=True)
class DataSpec:
    """What the recipe says about the data (validated by the recipe layer)."""

    name: str = "mnist-sample"
    data_root: Path | None = None
    test_root: Path | None = None
    download: bool = False
    batch_size: int = 64
    test_batch_size: int = 1000
    validation: int = 0  # training examples held out as the validation set (a fixed draw, see holdout)
    # FakeData only: sample count and shape; None = the model's input shape / class count
    fake_size: int = 1000
    fake_shape: tuple[int, int, int] | None = None
    fake_classes: int | None = None


class Batches(Protocol):
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...


@dataclass
class DataBundle:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    n_train: int
    n_test: int
    test_description: str
    train_batches: Callable[[int], Batches]  # train_batches(seed) -> one epoch, shuffled by seed
    test_batches: Callable[[], Batches]
    n_validation: int = 0
    validation_batches: Callable[[], Batches] | None = None  # None: no validation set was asked for


SPLIT_SEED = 20180411  # fixed: which examples are held out never depends on the recipe's seed


def check_holdout(n: int, validation: int) -> None:
    if validation >= n:
        raise RecipeError(f"validation = {validation}: the training set has only {n} examples; hold out fewer")


def holdout(n: int, validation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of n training examples: `validation` of them drawn by a fixed seed.

    The same n and count always hold out the same examples: a run that starts from another run's
    checkpoint, both with the same `validation`, validates on examples that checkpoint never trained on.
    """
    check_holdout(n, validation)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[validation:].sort().values, order[:validation].sort().values


class TensorBatches:
    """Batches over tensors already in memory: no per-sample collation, so tiny models train fast on CPU."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int | None):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        n = len(self.y)
        if self.seed is None:
            order = None
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        for start in range(0, n, self.batch_size):
            if order is None:
                yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                yield self.x[idx], self.y[idx]


class LoaderBatches:
    """A torch DataLoader over a map-style dataset, reshuffled from a seed."""

    def __init__(self, dataset, batch_size: int, seed: int | None, workers: int = 0):
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=seed is not None, generator=generator, num_workers=workers)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    load: Callable[[DataSpec, tuple[int, int, int], int], DataBundle]  # (spec, model input, classes)
    shape: tuple[int, int, int] | None = None  # None: follows the model (fake) or known only once loaded
    classes: int | None = None
    # training examples before any validation holdout, known before loading (from the recipe), or None
    train_pool: Callable[[DataSpec], int] | None = None

    def shape_for(self, spec, model_input, model_classes) -> tuple[tuple | None, int | None]:
        """(input shape, classes) this dataset will give, as far as known before loading it."""
        if self.name == "fake":
            return tuple(spec.fake_shape or model_input), spec.fake_classes or model_classes
        return self.shape, self.classes


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register(entry: DatasetEntry) -> DatasetEntry:
    return DATASETS.register(entry.name, entry)


def get_dataset(name: str) -> DatasetEntry:
    return DATASETS.get(name)


def load_data(spec: DataSpec, model_input: tuple[int, int, int], model_classes: int) -> DataBundle:
    """Load a dataset; raises DataMissing (naming the path) when its files are absent and download is off."""
    return get_dataset(spec.name).load(spec, model_input, model_classes)


def default_data_root() -> Path:
    return Path.home() / ".cache" / "admm_explorer" / "data"


from . import mnist, vision  # noqa: E402,F401  (registers the datasets)
