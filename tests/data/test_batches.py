"""Batch plans, device-side CIFAR augmentation and the persistent loader, against what they stand in for:
one process's batches, torchvision's per-image transforms, a loader without workers."""
import pickle

import numpy as np
import pytest
import torch
import torchvision
from torchvision.transforms import functional as TF

from admm_explorer.data import BatchPlan, DataSpec, LoaderBatches, load_data
from admm_explorer.data.vision import CIFAR_MEAN, CIFAR_STD, CropFlip, Normalise


@pytest.mark.parametrize("n, batch, world", [(100, 32, 2), (100, 32, 3), (106, 10, 4), (64, 64, 2)])
def test_shards_of_every_rank_make_the_single_process_batches(n, batch, world):
    single = [idx.tolist() for idx in BatchPlan(n, batch, seed=7)]
    ranks = [list(BatchPlan(n, batch, seed=7, rank=r, world=world)) for r in range(world)]
    assert all(len(r) == len(single) for r in ranks)
    for i, whole in enumerate(single):
        shards = [ranks[r][i].tolist() for r in range(world)]
        assert sum(shards, []) == whole  # contiguous shards, in order: nothing repeated, nothing left out
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert BatchPlan(n, batch, 7, 0, world).global_sizes == [len(b) for b in single]


def test_a_last_batch_smaller_than_the_world_is_dropped():
    plan = BatchPlan(65, 32, seed=1, rank=0, world=2)
    assert plan.global_sizes == [32, 32] and len(BatchPlan(65, 32, 1, 0, 1)) == 3
    assert BatchPlan(66, 32, 1, 0, 2).global_sizes == [32, 32, 2]


def test_plan_order_is_torch_randperm_of_the_seed():
    order = torch.randperm(50, generator=torch.Generator().manual_seed(11))
    assert torch.cat(list(BatchPlan(50, 8, 11))).tolist() == order.tolist()
    assert torch.cat(list(BatchPlan(50, 8, None))).tolist() == list(range(50))


def test_mnist_shards_under_two_ranks_are_halves_of_the_single_batches():
    one = load_data(DataSpec(batch_size=64), (1, 28, 28), 10)
    two = [load_data(DataSpec(batch_size=64, rank=r, world=2), (1, 28, 28), 10) for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(one.train_batches(5), two[0].train_batches(5), two[1].train_batches(5)):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def pil_pipeline(image: np.ndarray, top: int, left: int, flip: bool) -> torch.Tensor:
    """torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, with the crop
    offset and flip given instead of drawn."""
    from PIL import Image

    img = TF.crop(TF.pad(Image.fromarray(image), 4), top, left, 32, 32)
    if flip:
        img = TF.hflip(img)
    return TF.normalize(TF.to_tensor(img), CIFAR_MEAN, CIFAR_STD)


def test_crop_flip_on_a_batch_equals_torchvision_per_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    params = CropFlip(4).draw(24, torch.Generator().manual_seed(3))
    params[:4] = torch.tensor([[0, 0, 0], [8, 8, 1], [0, 8, 1], [8, 0, 0]])  # the corners, both flips
    ours = Normalise(CIFAR_MEAN, CIFAR_STD)(CropFlip(4)(x, params))
    for i in range(24):
        top, left, flip = params[i].tolist()
        assert torch.equal(ours[i], pil_pipeline(images[i], top, left, bool(flip))), i
    assert set(params[:, 2].tolist()) == {0, 1} and params[:, :2].min() >= 0 and params[:, :2].max() <= 8


@pytest.fixture()
def fake_cifar(tmp_path, monkeypatch):
    """A cifar-10-batches-py folder of random images in CIFAR-10's pickle format (torchvision's md5 check
    bypassed: the files are ours)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": rng.integers(0, 10, 20).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    return tmp_path


def test_cifar10_epoch_is_torchvisions_augmentation_of_the_seeded_draw(fake_cifar):
    data = load_data(DataSpec(name="cifar10", data_root=fake_cifar, batch_size=16), (3, 32, 32), 10)
    reference = torchvision.datasets.CIFAR10(str(fake_cifar), train=True)
    assert data.n_train == 100 and data.n_test == 20
    generator = torch.Generator().manual_seed(9)
    order = torch.randperm(100, generator=generator)
    params = CropFlip(4).draw(100, generator)
    batches = list(data.train_batches(9))
    assert [len(y) for _, y in batches] == [16] * 6 + [4]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    for k in (0, 37, 99):
        i = int(order[k])
        top, left, flip = params[i].tolist()
        assert torch.equal(x[k], pil_pipeline(reference.data[i], top, left, bool(flip)))
        assert int(y[k]) == reference.targets[i]
    xt, _ = next(iter(data.test_batches()))  # the test set: normalised, not augmented
    test = torchvision.datasets.CIFAR10(str(fake_cifar), train=False)
    assert torch.equal(xt[3], TF.normalize(TF.to_tensor(test.data[3]), CIFAR_MEAN, CIFAR_STD))


def test_loader_augmentation_depends_on_seed_and_example_not_on_workers_or_ranks():
    tf = torchvision.transforms.Compose([torchvision.transforms.RandomCrop(8, padding=2),
                                         torchvision.transforms.ToTensor()])
    fake = torchvision.datasets.FakeData(40, (3, 8, 8), 5, transform=tf)

    def epoch(workers, rank=0, world=1, seed=4):
        loader = LoaderBatches(fake, 8, DataSpec(rank=rank, world=world), workers)
        return list(loader.epoch(seed))

    plain = epoch(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(plain, epoch(2)))  # worker processes
    halves = zip(epoch(0, 0, 2), epoch(0, 1, 2))
    assert all(torch.equal(torch.cat([a[0], b[0]]), whole[0]) for (a, b), whole in zip(halves, plain))
    other = epoch(0, seed=5)
    assert not torch.equal(torch.cat([b[0] for b in other]), torch.cat([b[0] for b in plain]))
    state = torch.get_rng_state()
    epoch(0)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left as it was


@pytest.mark.parametrize("n, world", [(10, 3), (1000, 4), (2, 3)])
def test_evaluation_plans_read_every_example_once_over_the_ranks(n, world):
    parts = [torch.cat(list(BatchPlan(n, 4, None, r, world)) or [torch.zeros(0, dtype=torch.long)])
             for r in range(world)]
    assert torch.cat(parts).tolist() == list(range(n))  # in order, nothing dropped or repeated
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(len(b) <= 4 for r in range(world) for b in BatchPlan(n, 4, None, r, world))
