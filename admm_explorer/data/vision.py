"""torchvision datasets: CIFAR-10, an ImageNet folder, and FakeData of any shape.

torchvision is imported inside the loaders: importing it costs about 1.7 s (torch._dynamo through
torchvision.ops), which the dashboard's kernel and the CLI would pay on every start for nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from . import (DataBundle, DataMissing, DataSpec, DatasetEntry, LoaderBatches, default_data_root, holdout, register,
               tensor_bundle)

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def bundle(name, spec: DataSpec, train, test, shape, classes, description, workers=0, validation_view=None
           ) -> DataBundle:
    """Datasets read example by example through LoaderBatches. `validation_view()`: the training dataset as
    the test set sees it (no augmentation), to hold out from; None: `train` itself."""
    val = None
    if spec.validation:
        kept, held = holdout(len(train), spec.validation)
        plain = train if validation_view is None else validation_view()
        train, val = Subset(train, kept.tolist()), Subset(plain, held.tolist())
    workers = spec.loader_workers(workers)
    train_loader = LoaderBatches(train, spec.batch_size, spec, workers)
    test_loader = LoaderBatches(test, spec.test_batch_size, spec, workers, persistent=False)
    val_loader = None if val is None else LoaderBatches(val, spec.test_batch_size, spec, workers, persistent=False)
    return DataBundle(
        name=name, input_shape=shape, num_classes=classes, n_train=len(train), n_test=len(test),
        test_description=description, train_batches=train_loader.epoch,
        test_batches=lambda: test_loader.epoch(None), n_validation=0 if val is None else len(val),
        validation_batches=None if val_loader is None else (lambda: val_loader.epoch(None)))


class CropFlip:
    """The standard CIFAR augmentation done on the device, a batch at a time: zero-pad by `pad`, crop back to
    the image size at a random offset, flip left-right with probability 1/2 (what torchvision's
    RandomCrop(32, padding=4) and RandomHorizontalFlip do to one PIL image). x: (N, C, H, W) uint8;
    params: (N, 3) int64 per example: row offset, column offset (each in [0, 2 pad]), flip (0 or 1)."""

    def __init__(self, pad: int = 4):
        self.pad = pad

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
        flips = torch.randint(0, 2, (n, 1), generator=generator)
        return torch.cat([offsets, flips], 1)

    def __call__(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = torch.nn.functional.pad(x, (self.pad,) * 4)
        rows = params[:, :1] + torch.arange(h, device=x.device)  # (N, H) rows of `padded` to read
        cols = params[:, 1:2] + torch.arange(w, device=x.device)  # (N, W); a flip reads them backwards
        cols = torch.where(params[:, 2:].bool(), cols.flip(1), cols)
        return padded[torch.arange(n, device=x.device)[:, None, None, None],
                      torch.arange(c, device=x.device)[None, :, None, None], rows[:, None, :, None],
                      cols[:, None, None, :]]


class Normalise:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std, the ops of ToTensor then Normalize."""

    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return x.float().div(255).sub(self.mean).div(self.std)


def cifar_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision CIFAR10's images as uint8 (N, 3, 32, 32) and labels as int64 (N,)."""
    x = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))
    return x, torch.tensor(dataset.targets, dtype=torch.int64)


def load_cifar10(spec: DataSpec, model_input, model_classes) -> DataBundle:
    """50,000 training and 10,000 test images held as uint8 tensors on the training device (150 + 30 MB),
    augmented there a batch at a time (CropFlip) and normalised as they are read."""
    import torchvision

    root = Path(spec.data_root or default_data_root())
    present = (root / "cifar-10-batches-py").is_dir()
    if not present and not spec.download:
        raise DataMissing(f"CIFAR-10 is not in {root} (set download: true to fetch it, or point data_root at "
                          "the folder holding cifar-10-batches-py)")
    try:
        train = torchvision.datasets.CIFAR10(str(root), train=True, download=spec.download)
        test = torchvision.datasets.CIFAR10(str(root), train=False, download=spec.download)
    except RuntimeError as e:  # torchvision's md5 check: a file missing or cut short
        raise DataMissing(f"CIFAR-10 in {root} is incomplete or corrupt ({e}); delete cifar-10-batches-py and "
                          "set download: true") from None
    return tensor_bundle("cifar10", spec, cifar_tensors(train), cifar_tensors(test), (3, 32, 32), 10,
                         f"CIFAR-10 test set, {len(test)} images", augment=CropFlip(4),
                         prepare=Normalise(CIFAR_MEAN, CIFAR_STD))


def default_workers() -> int:
    """DataLoader processes per training process: up to 8, sharing this machine's CPUs with the other
    processes torchrun started here."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1))


def load_imagenet(spec: DataSpec, model_input, model_classes) -> DataBundle:
    import torchvision
    from torchvision import transforms as T

    if spec.data_root is None:
        raise DataMissing("imagenet needs data_root: a folder with train/ and val/ in ImageFolder layout")
    root = Path(spec.data_root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataMissing(f"imagenet: {root / split} is missing (ImageFolder layout: {split}/<class>/<image>)")
    normalise = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = torchvision.datasets.ImageFolder(
        str(root / "train"), T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), normalise]))
    test_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalise])
    test = torchvision.datasets.ImageFolder(str(root / "val"), test_tf)
    return bundle("imagenet", spec, train, test, (3, 224, 224), len(train.classes),
                  f"ImageNet val, {len(test)} images", workers=default_workers(),
                  validation_view=lambda: torchvision.datasets.ImageFolder(str(root / "train"), test_tf))


def load_fake(spec: DataSpec, model_input, model_classes) -> DataBundle:
    """Random images and labels (not a quality measure); shape and classes follow the model unless given."""
    import torchvision
    from torchvision import transforms as T

    shape = tuple(spec.fake_shape or model_input)
    classes = spec.fake_classes or model_classes
    tf = T.ToTensor()
    train = torchvision.datasets.FakeData(spec.fake_size, shape, classes, transform=tf, random_offset=0)
    test = torchvision.datasets.FakeData(max(spec.fake_size // 5, 1), shape, classes, transform=tf,
                                         random_offset=10**6)
    return bundle("fake", spec, train, test, shape, classes, f"FakeData, {len(test)} random images")


register(DatasetEntry("cifar10", "CIFAR-10 in data_root (download: true fetches it)", load_cifar10,
                      (3, 32, 32), 10, lambda spec: 50_000))
register(DatasetEntry("imagenet", "ImageNet as an ImageFolder root with train/ and val/", load_imagenet,
                      (3, 224, 224)))
register(DatasetEntry("fake", "torchvision FakeData: random images of the model's input shape (or fake_shape)",
                      load_fake, train_pool=lambda spec: spec.fake_size))
