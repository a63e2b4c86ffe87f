"""torchvision datasets: CIFAR-10, an ImageNet folder, and FakeData of any shape.

torchvision is imported inside the loaders: importing it costs about 1.7 s (torch._dynamo through
torchvision.ops), which the dashboard's kernel and the CLI would pay on every start for nothing.
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Subset

from . import DataBundle, DataMissing, DataSpec, DatasetEntry, LoaderBatches, default_data_root, holdout, register

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def bundle(name, spec: DataSpec, train, test, shape, classes, description, workers=0, validation_view=None
           ) -> DataBundle:
    """`validation_view()`: the training dataset as the test set sees it (no augmentation), to hold out from;
    None: `train` itself."""
    val = None
    if spec.validation:
        kept, held = holdout(len(train), spec.validation)
        plain = train if validation_view is None else validation_view()
        train, val = Subset(train, kept.tolist()), Subset(plain, held.tolist())
    return DataBundle(
        name=name, input_shape=shape, num_classes=classes, n_train=len(train), n_test=len(test),
        test_description=description,
        train_batches=lambda seed: LoaderBatches(train, spec.batch_size, seed, workers),
        test_batches=lambda: LoaderBatches(test, spec.test_batch_size, None, workers),
        n_validation=spec.validation,
        validation_batches=None if val is None
        else (lambda: LoaderBatches(val, spec.test_batch_size, None, workers)))


def load_cifar10(spec: DataSpec, model_input, model_classes) -> DataBundle:
    import torchvision
    from torchvision import transforms as T

    root = Path(spec.data_root or default_data_root())
    present = (root / "cifar-10-batches-py").is_dir()
    if not present and not spec.download:
        raise DataMissing(f"CIFAR-10 is not in {root} (set download: true to fetch it, or point data_root at "
                          "the folder holding cifar-10-batches-py)")
    normalise = T.Normalize(CIFAR_MEAN, CIFAR_STD)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalise])
    test_tf = T.Compose([T.ToTensor(), normalise])
    train = torchvision.datasets.CIFAR10(str(root), train=True, transform=train_tf, download=spec.download)
    test = torchvision.datasets.CIFAR10(str(root), train=False, transform=test_tf, download=spec.download)
    return bundle("cifar10", spec, train, test, (3, 32, 32), 10, f"CIFAR-10 test set, {len(test)} images",
                  validation_view=lambda: torchvision.datasets.CIFAR10(str(root), train=True, transform=test_tf))


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
                  f"ImageNet val, {len(test)} images", workers=2,
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
