import gzip

import numpy as np
import pytest
import torch

from admm_explorer.data import DataMissing, DataSpec, load_data
from admm_explorer.data.mnist import MNIST_MEAN, MNIST_STD, mnist_sample, read_idx
from admm_explorer.recipe import RecipeError


def test_sample_split_is_deterministic_and_disjoint():
    a = load_data(DataSpec(batch_size=5000), (1, 28, 28), 10)
    b = load_data(DataSpec(batch_size=5000), (1, 28, 28), 10)
    assert (a.n_train, a.n_test) == (4000, 1000)
    xa, ya = next(iter(a.train_batches(None)))
    xb, yb = next(iter(b.train_batches(None)))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xt, _ = next(iter(a.test_batches()))
    # no test digit is also a training digit
    train_rows = {r.numpy().tobytes() for r in xa.reshape(len(xa), -1)}
    assert not any(r.numpy().tobytes() in train_rows for r in xt.reshape(len(xt), -1))
    assert ya.bincount().min() > 350  # every class present in training


def test_sample_is_real_mnist():
    x, y = mnist_sample()
    assert x.shape == (5000, 784) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10
    batch = load_data(DataSpec(batch_size=4000), (1, 28, 28), 10)
    xb, _ = next(iter(batch.train_batches(None)))
    assert xb.shape == (4000, 1, 28, 28)
    # standardised with MNIST's mean/std: background pixels sit at -mean/std
    assert float(xb.min()) == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-5)


def test_shuffle_depends_only_on_seed():
    data = load_data(DataSpec(), (1, 28, 28), 10)
    first = [y for _, y in data.train_batches(3)]
    again = [y for _, y in data.train_batches(3)]
    other = [y for _, y in data.train_batches(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert len(first) == len(data.train_batches(3)) == 63


def test_real_test_set(mnist_test_root):
    data = load_data(DataSpec(test_root=mnist_test_root), (1, 28, 28), 10)
    assert (data.n_train, data.n_test) == (5000, 10_000)
    labels = torch.cat([y for _, y in data.test_batches()])
    # the MNIST test set's published class counts
    assert labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_idx_errors(tmp_path):
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"not idx"))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(DataMissing, match="t10k-images"):
        load_data(DataSpec(test_root=tmp_path / "nowhere"), (1, 28, 28), 10)


def test_fake_follows_the_model():
    data = load_data(DataSpec(name="fake", fake_size=20, batch_size=8), (3, 32, 32), 10)
    x, y = next(iter(data.train_batches(0)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64 and int(y.max()) < 10
    assert data.n_train == 20 and data.n_test == 4


def test_missing_data_without_download(tmp_path):
    with pytest.raises(DataMissing, match="download: true"):
        load_data(DataSpec(name="cifar10", data_root=tmp_path), (3, 32, 32), 10)
    with pytest.raises(DataMissing, match="download: true"):
        load_data(DataSpec(name="mnist", data_root=tmp_path), (1, 28, 28), 10)


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_validation_is_held_out_of_training():
    plain = load_data(DataSpec(batch_size=5000), (1, 28, 28), 10)
    data = load_data(DataSpec(batch_size=5000, validation=600), (1, 28, 28), 10)
    assert (data.n_train, data.n_validation, data.n_test) == (3400, 600, 1000)
    assert plain.validation_batches is None and plain.n_validation == 0
    x_all, _ = next(iter(plain.train_batches(None)))
    x_train, _ = next(iter(data.train_batches(None)))
    x_val, y_val = next(iter(data.validation_batches()))
    assert len(x_val) == 600 and y_val.bincount().min() > 30
    # a partition of the same 4,000 training digits; the test digits stay where they were
    assert not rows(x_train) & rows(x_val) and rows(x_train) | rows(x_val) == rows(x_all)
    again = load_data(DataSpec(batch_size=5000, validation=600), (1, 28, 28), 10)
    assert torch.equal(next(iter(again.validation_batches()))[0], x_val)  # a fixed draw


def test_validation_of_a_torchvision_dataset():
    data = load_data(DataSpec(name="fake", fake_size=20, batch_size=20, validation=5), (3, 8, 8), 10)
    assert (data.n_train, data.n_validation) == (15, 5)
    x_train, _ = next(iter(data.train_batches(None)))
    x_val, _ = next(iter(data.validation_batches()))
    assert x_train.shape == (15, 3, 8, 8) and x_val.shape == (5, 3, 8, 8)
    assert not rows(x_train) & rows(x_val)


def test_validation_larger_than_the_training_set_is_refused():
    with pytest.raises(RecipeError, match="validation = 4000: the training set has only 4000 examples"):
        load_data(DataSpec(validation=4000), (1, 28, 28), 10)


def test_validation_of_an_augmented_dataset_uses_the_plain_view():
    from torchvision import datasets
    from torchvision import transforms as T

    from admm_explorer.data.vision import bundle

    def fake(shift: float):
        return datasets.FakeData(30, (3, 4, 4), 10, transform=T.Compose([T.ToTensor(), T.Lambda(lambda x: x + shift)]))

    data = bundle("fake", DataSpec(batch_size=30, validation=10), fake(100.0), fake(0.0), (3, 4, 4), 10, "",
                  validation_view=lambda: fake(0.0))
    x_train, _ = next(iter(data.train_batches(None)))
    x_val, _ = next(iter(data.validation_batches()))
    assert x_train.shape[0] == 20 and x_train.min() >= 100  # the training view (here: shifted)
    assert x_val.shape[0] == 10 and x_val.max() <= 1  # the plain view of the held-out images
