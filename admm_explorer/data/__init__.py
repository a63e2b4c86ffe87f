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
    """What the recipe says about the data (validated by the recipe layer), and where batches go."""

    name: str = "mnist-sample"
    data_root: Path | None = None
    test_root: Path | None = None
    download: bool = False
    batch_size: int = 64  # of the global batch: under torchrun each rank gets its shard (BatchPlan)
    test_batch_size: int = 1000
    # training examples held out as the validation set (a fixed draw, see holdout): a count, or a share in (0, 1)
    validation: int | float = 0
    # FakeData only: sample count and shape; None = the model's input shape / class count
    fake_size: int = 1000
    fake_shape: tuple[int, int, int] | None = None
    fake_classes: int | None = None
    device: str = "cpu"  # datasets held as tensors live there; loaders pin memory for a CUDA device
    workers: int | None = None  # DataLoader processes of image-file datasets; None: the dataset's default
    rank: int = 0
    world: int = 1

    def loader_workers(self, default: int) -> int:
        return default if self.workers is None else self.workers


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


def validation_count(n: int, validation: int | float) -> int:
    """Examples held out of n training examples: `validation` itself (a count), or round(share * n), at least 1
    (a share in (0, 1))."""
    return validation if isinstance(validation, int) else max(1, round(validation * n))


def check_holdout(n: int, validation: int | float) -> int:
    """The count of n examples `validation` holds out; RecipeError if that leaves none to train on."""
    count = validation_count(n, validation)
    if count >= n:
        raise RecipeError(f"validation = {validation}: the training set has only {n} examples; hold out fewer")
    return count


def holdout(n: int, validation: int | float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of n training examples: validation_count(n, validation) of them drawn by a
    fixed seed.

    The same n and count always hold out the same examples: a run that starts from another run's
    checkpoint, both with the same `validation`, validates on examples that checkpoint never trained on.
    """
    count = check_holdout(n, validation)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[count:].sort().values, order[:count].sort().values


class BatchPlan:
    """One epoch's batches as index tensors.

    Training (a seed): the n examples in a seeded order (torch.randperm with a generator seeded by `seed`)
    cut into global batches of batch_size, a shorter last one included. Each global batch is split into
    `world` contiguous shards (sizes differ by at most one) and this rank takes shard `rank`, so N processes
    together train on exactly the batches one process does. (torch's DistributedSampler instead pads the
    epoch with repeated examples, or drops its tail.) With world > 1 a last global batch smaller than world
    is dropped: a rank would get no example. global_sizes[i]: examples in global batch i, over all ranks.

    Evaluation (seed None): in order; each rank reads its own contiguous part of the examples (parts differ
    by at most one), in batches of batch_size, so every example is evaluated once; the ranks' sums are added
    up afterwards (Session.evaluate). global_sizes: this rank's batch sizes."""

    def __init__(self, n: int, batch_size: int, seed: int | None, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        if seed is None:
            self.part = torch.arange(n).tensor_split(world)[rank]
            size = len(self.part)
            self.global_sizes = [min(batch_size, size - start) for start in range(0, size, batch_size)]
            return
        sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
        self.global_sizes = [s for s in sizes if s >= world]

    def __len__(self) -> int:
        return len(self.global_sizes)

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def order(self, generator: torch.Generator | None) -> torch.Tensor:
        return self.part if generator is None else torch.randperm(self.n, generator=generator)

    def shards(self, order: torch.Tensor):
        if self.seed is None:
            yield from order.split(self.batch_size) if len(order) else ()
            return
        for i, size in enumerate(self.global_sizes):
            batch = order[i * self.batch_size:i * self.batch_size + size]
            yield batch if self.world == 1 else batch.tensor_split(self.world)[self.rank]

    def __iter__(self):
        return self.shards(self.order(None if self.seed is None else self.generator()))


class TensorBatches:
    """Batches over tensors already in memory, on the training device (indexing there: no per-sample
    collation, no host-to-device copy per batch). `augment` (optional) transforms each training batch with
    per-example parameters drawn once per epoch from the plan's generator after the order: an example's
    augmentation depends on the seed and the example only, not on which rank or batch position took it.
    `prepare` turns stored examples (uint8, say) into model inputs."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, plan: BatchPlan, augment=None, prepare=None):
        self.x, self.y, self.plan, self.augment, self.prepare = x, y, plan, augment, prepare

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        plan, device = self.plan, self.y.device
        generator = None if plan.seed is None else plan.generator()
        order = plan.order(generator)
        params = (self.augment.draw(plan.n, generator).to(device)
                  if self.augment is not None and generator is not None else None)
        for idx in plan.shards(order.to(device)):
            x = self.x[idx]
            if params is not None:
                x = self.augment(x, params[idx])
            yield (x if self.prepare is None else self.prepare(x)), self.y[idx]


class PlanSampler(torch.utils.data.Sampler):
    """A DataLoader's batch_sampler following a BatchPlan, replaced before each epoch (the loader and its
    workers persist across epochs). Yields (seed, index) keys that SeededSamples reads."""

    def __init__(self, plan: BatchPlan):
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        seed = self.plan.seed
        for idx in self.plan:
            yield [(seed, i) for i in idx.tolist()]


class SeededSamples(torch.utils.data.Dataset):
    """A map-style dataset read by (epoch seed, index): the random transforms of an example run with torch's
    RNG seeded from both, the caller's RNG state restored after. An example's augmentation is then the same
    whatever the worker, rank or batch that reads it, so runs (and resumed runs) repeat exactly, and N
    processes train on what one process would."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int | None, int]):
        seed, index = key
        if seed is None:
            return self.dataset[index]
        # the CPU generator alone: torch.manual_seed also queues a CUDA seeding, with a stack trace, on a CUDA
        # build where CUDA is not initialised (a worker, a CPU machine), 0.1 ms per example
        cpu = torch.default_generator
        state = cpu.get_state()
        cpu.manual_seed(seed_for(seed, index))
        try:
            return self.dataset[index]
        finally:
            cpu.set_state(state)


def seed_for(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (recipe seed, stage, phase, epoch; epoch seed, example)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) % (1 << 64)
    return h % (1 << 63)


class LoaderBatches:
    """One torch DataLoader over a map-style dataset for the whole session: worker processes started once and
    kept (persistent_workers; not for an evaluation set, whose workers would sit idle between evaluations
    beside the training ones), pinned memory for a CUDA device. epoch(seed) gives one epoch in the BatchPlan
    order of that seed (None: in order)."""

    def __init__(self, dataset, batch_size: int, spec: DataSpec, workers: int, persistent: bool = True):
        self.plan = lambda seed: BatchPlan(len(dataset), batch_size, seed, spec.rank, spec.world)
        self.sampler = PlanSampler(self.plan(None))
        self.loader = torch.utils.data.DataLoader(
            SeededSamples(dataset), batch_sampler=self.sampler, num_workers=workers,
            pin_memory=spec.device.startswith("cuda"), persistent_workers=persistent and workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator().manual_seed(0))  # its workers' base seed, not drawn from torch's RNG

    def epoch(self, seed: int | None) -> "LoaderEpoch":
        return LoaderEpoch(self, self.plan(seed))


class LoaderEpoch:
    def __init__(self, batches: LoaderBatches, plan: BatchPlan):
        self.batches, self.plan = batches, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        self.batches.sampler.plan = self.plan
        return iter(self.batches.loader)


def tensor_bundle(name: str, spec: DataSpec, train: tuple, test: tuple, shape, classes, test_description: str,
                  augment=None, prepare=None) -> DataBundle:
    """A bundle over in-memory (x, y) tensors, moved once to spec.device; the validation set is held out of
    train (holdout) and, like the test set, neither shuffled nor augmented."""
    (x_train, y_train), (x_test, y_test) = ((t.to(spec.device) for t in pair) for pair in (train, test))
    x_val = y_val = None
    if spec.validation:
        kept, held = (i.to(spec.device) for i in holdout(len(y_train), spec.validation))
        x_val, y_val = x_train[held], y_train[held]
        x_train, y_train = x_train[kept], y_train[kept]

    def batches(x, y, batch_size, seed, augment=None):
        return TensorBatches(x, y, BatchPlan(len(y), batch_size, seed, spec.rank, spec.world), augment, prepare)

    return DataBundle(
        name=name, input_shape=shape, num_classes=classes,
        n_train=len(y_train), n_test=len(y_test), test_description=test_description,
        train_batches=lambda seed: batches(x_train, y_train, spec.batch_size, seed, augment),
        test_batches=lambda: batches(x_test, y_test, spec.test_batch_size, None),
        n_validation=0 if y_val is None else len(y_val),
        validation_batches=None if y_val is None
        else (lambda: batches(x_val, y_val, spec.test_batch_size, None)))


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
