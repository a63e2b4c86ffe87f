"""Every conv network of the zoo: random structured masks, shrink, and two oracles.

1. Outputs: the shrunk network equals the masked network (max abs difference < 1e-4, eval mode).
2. Size: its parameter count equals the count predicted from the masks by the hand-written channel
   tables below, which name each architecture's producers and consumers of every channel space
   (written from the model code, independent of the fx tracing in admm_explorer.prm.graph).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from admm_explorer.prm import masked, shrink
from admm_explorer.prm.paths import plan


@dataclass
class Space:
    """Channels that go together, in the order the forward pass touches them. producers: (conv/linear,
    BN right after or None) writing the channels (several: a residual stream, summed); channelwise:
    (depthwise conv, its BN); consumers: (conv/linear reading it, columns per channel, how many producers
    have written the channels by the time this consumer reads them)."""

    size: int
    producers: list[tuple[str, str | None]] = field(default_factory=list)
    channelwise: list[tuple[str, str]] = field(default_factory=list)
    consumers: list[tuple[str, int, int]] = field(default_factory=list)
    pinned: bool = False
    foldable: bool = False  # every consumer is unpadded and has a bias or a BN after it

    def write(self, conv: str, bn: str | None) -> Space:
        self.producers.append((conv, bn))
        return self

    def read(self, layer: str, r: int = 1) -> Space:
        self.consumers.append((layer, r, len(self.producers)))
        return self


def lenet5_spaces(model) -> list[Space]:
    return [
        Space(1, pinned=True).read("conv1"),
        Space(20, foldable=True).write("conv1", None).read("conv2"),  # conv2 5x5 unpadded
        Space(50, foldable=True).write("conv2", None).read("fc1", 16),  # flatten of 50x4x4
        Space(500, foldable=True).write("fc1", None).read("fc2"),
        Space(10, pinned=True).write("fc2", None),
    ]


def cifar_resnet_spaces(model) -> list[Space]:
    spaces = [Space(3, pinned=True).read("conv1")]
    stream = Space(model.conv1.out_channels).write("conv1", "bn1")
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage):
            p = f"layers.{i}.{j}"
            stream.read(f"{p}.conv1")
            spaces.append(Space(block.conv1.out_channels).write(f"{p}.conv1", f"{p}.bn1").read(f"{p}.conv2"))
            if len(block.shortcut):
                spaces.append(stream.read(f"{p}.shortcut.0"))
                stream = Space(block.conv2.out_channels).write(f"{p}.shortcut.0", f"{p}.shortcut.1")
            stream.write(f"{p}.conv2", f"{p}.bn2")
    return spaces + [stream.read("fc"), Space(10, pinned=True).write("fc", None)]


def vgg16_spaces(model) -> list[Space]:
    spaces, prev = [], Space(3, pinned=True)
    for idx, layer in enumerate(model.features):
        if isinstance(layer, nn.Conv2d):
            spaces.append(prev.read(f"features.{idx}"))
            prev = Space(layer.out_channels).write(f"features.{idx}", f"features.{idx + 1}")
    # 512x1x1 at 32x32 inputs
    return spaces + [prev.read("classifier"), Space(10, pinned=True).write("classifier", None)]


def mobilenetv2_spaces(model) -> list[Space]:
    spaces = [Space(3, pinned=True).read("conv1")]
    stream = Space(32, foldable=True).write("conv1", "bn1")  # stream consumers are 1x1 convs + BN
    for b, block in enumerate(model.blocks):
        p = f"blocks.{b}"
        stream.read(f"{p}.conv1")
        hidden = Space(block.conv1.out_channels, foldable=True).write(f"{p}.conv1", f"{p}.bn1").read(f"{p}.conv3")
        hidden.channelwise.append((f"{p}.conv2", f"{p}.bn2"))
        spaces.append(hidden)
        if not block.use_skip:
            spaces.append(stream)
            stream = Space(block.conv3.out_channels, foldable=True)
        stream.write(f"{p}.conv3", f"{p}.bn3")
    return spaces + [stream.read("conv2"), Space(1280, foldable=True).write("conv2", "bn2").read("fc"),
                     Space(10, pinned=True).write("fc", None)]


def torchvision_resnet_spaces(model) -> list[Space]:
    spaces = [Space(3, pinned=True).read("conv1")]
    stream = Space(64).write("conv1", "bn1")
    for L in range(1, 5):
        for j, block in enumerate(getattr(model, f"layer{L}")):
            p = f"layer{L}.{j}"
            convs = [c for c in ("conv1", "conv2", "conv3") if hasattr(block, c)]
            stream.read(f"{p}.conv1")
            for a, b in zip(convs, convs[1:]):
                inner = Space(getattr(block, a).out_channels).write(f"{p}.{a}", f"{p}.bn{a[-1]}")
                spaces.append(inner.read(f"{p}.{b}"))
            if block.downsample is not None:
                spaces.append(stream.read(f"{p}.downsample.0"))
                stream = Space(getattr(block, convs[-1]).out_channels).write(f"{p}.downsample.0", f"{p}.downsample.1")
            stream.write(f"{p}.{convs[-1]}", f"{p}.bn{convs[-1][-1]}")
    return spaces + [stream.read("fc"), Space(1000, pinned=True).write("fc", None)]


TABLES = {
    "lenet5": lenet5_spaces,
    "resnet20": cifar_resnet_spaces,
    "resnet32": cifar_resnet_spaces,
    "resnet56": cifar_resnet_spaces,
    "resnet18-cifar": cifar_resnet_spaces,
    "vgg16-cifar": vgg16_spaces,
    "mobilenetv2-cifar": mobilenetv2_spaces,
    "resnet18": torchvision_resnet_spaces,
    "resnet50": torchvision_resnet_spaces,
}
CLASSIFIER = {"lenet5": "fc2", "vgg16-cifar": "classifier"}


def _rows_zero(model, name) -> torch.Tensor:
    return model.get_submodule(name).weight.flatten(1).eq(0).all(1)


def _slice_zero(model, name, r) -> torch.Tensor:
    w = model.get_submodule(name).weight
    return w.reshape(w.shape[0], -1, r if w.dim() == 2 else w[0, 0].numel()).eq(0).all(2).all(0)


def expected_kept(model, spaces: list[Space]) -> list[int]:
    """Channels kept per space under the documented semantics (BN of a pruned filter zeroed).
    A channel goes when every consumer either ignores it (all-zero slice) or reads a constant that is
    exactly zero or foldable into it. The value a consumer reads is constant when every producer that has
    written by then is pruned (zero if each has a BN right after), or when the channel's depthwise filter
    is pruned (zero after its zeroed BN). At least one channel stays; pinned spaces keep all."""
    kept = []
    for s in spaces:
        if s.pinned:
            kept.append(s.size)
            continue
        dead = [_rows_zero(model, p) for p, _ in s.producers]
        dw_dead = torch.zeros(s.size, dtype=torch.bool)
        for dw, _ in s.channelwise:
            dw_dead |= _rows_zero(model, dw)
        gone = torch.ones(s.size, dtype=torch.bool)
        for layer, r, seen in s.consumers:
            constant = torch.stack(dead[:seen]).all(0)
            zero = all(bn is not None for _, bn in s.producers[:seen]) and not s.channelwise
            gone &= _slice_zero(model, layer, r) | dw_dead | (constant & (zero or s.foldable))
        kept.append(max(1, s.size - int(gone.sum())))
    return kept


def expected_params(model, spaces: list[Space]) -> int:
    kept = expected_kept(model, spaces)
    out_of, in_of = {}, {}  # module -> kept output channels / kept input columns
    for s, k in zip(spaces, kept):
        for conv, bn in s.producers + s.channelwise:
            out_of[conv] = k
            if bn is not None:
                out_of[bn] = k
        for conv, r, _ in s.consumers:
            in_of[conv] = k * r
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            total += 2 * out_of[name]
        elif isinstance(m, nn.Conv2d) and m.groups > 1:  # depthwise: one kh x kw filter per channel
            total += out_of[name] * (m.kernel_size[0] * m.kernel_size[1] + (m.bias is not None))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            taps = m.weight[0, 0].numel() if m.weight.dim() == 4 else 1
            total += out_of[name] * (in_of[name] * taps + (m.bias is not None))
    return total


@pytest.mark.parametrize("name", list(TABLES))
def test_shrunk_equals_masked_and_size_is_predicted(name, zoo, gen):
    model = zoo.calibrated(name, gen)
    spaces = TABLES[name](model)
    covered = {n for s in spaces for pair in s.producers + s.channelwise for n in pair if n} | \
              {c for s in spaces for c, _, _ in s.consumers}
    assert covered == {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}
    columns = {c: r for s in spaces for c, r, _ in s.consumers if r > 1}
    aligned = [[p for p, _ in s.producers] for s in spaces if len(s.producers) > 1]
    masks = zoo.random_masks(model, gen, CLASSIFIER.get(name, "fc"), columns, aligned)
    reference = masked(model, masks)

    x = torch.randn(4, *zoo.input_shape(name), generator=gen)
    small = shrink(reference, x[:1]).eval()
    with torch.no_grad():
        want, got = reference(x), small(x)
    assert want.std() > 1e-3  # a signal goes through the masked network
    assert (want - got).abs().max().item() < 1e-4

    predicted = expected_params(reference, spaces)
    assert sum(p.numel() for p in small.parameters()) == predicted
    assert predicted < sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2-cifar"])
def test_removed_dict_matches_shrunk_shapes(name, zoo, gen):
    model = zoo.calibrated(name, gen)
    reference = masked(model, zoo.random_masks(model, gen, "fc"))
    x = torch.randn(1, *zoo.input_shape(name), generator=gen)
    removed = plan(reference, x).by_layer()
    small = shrink(reference, x)
    for layer, gone in removed.items():
        before, after = reference.get_submodule(layer), small.get_submodule(layer)
        if isinstance(before, nn.Conv2d):
            assert after.out_channels == before.out_channels - len(gone["out"])
            assert after.in_channels == before.in_channels - len(gone["in" if before.groups == 1 else "out"])
        elif isinstance(before, nn.BatchNorm2d):
            assert after.num_features == before.num_features - len(gone["out"])


@pytest.mark.parametrize("name", ["resnet20", "vgg16-cifar", "mobilenetv2-cifar"])
def test_exact_without_the_bn_convention(name, zoo, gen):
    """Masks applied to the weights only: a pruned filter's BN gives a nonzero constant, which goes only
    where it folds exactly (MobileNetV2's 1x1 readers); outputs still match."""
    model = zoo.calibrated(name, gen)
    masks = zoo.random_masks(model, gen, CLASSIFIER.get(name, "fc"))
    reference = masked(model, {})
    with torch.no_grad():
        for layer, mask in masks.items():
            reference.get_submodule(layer).weight.mul_(mask)
    x = torch.randn(4, *zoo.input_shape(name), generator=gen)
    small = shrink(reference, x[:1]).eval()
    with torch.no_grad():
        assert (reference(x) - small(x)).abs().max().item() < 1e-4
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in reference.parameters())
