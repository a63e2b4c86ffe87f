"""Unused path removal on small constructed networks whose answer is known by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from admm_explorer.models import build_model
from admm_explorer.prm import masked, remove_unused_paths, shrink, structured_masks_to_bn


def assert_same_outputs(reference: nn.Module, small: nn.Module, x: torch.Tensor) -> None:
    reference.eval(), small.eval()
    with torch.no_grad():
        assert (reference(x) - small(x)).abs().max().item() < 1e-5


def bn_conv(consumer: nn.Module, bn_after: bool) -> nn.Sequential:
    """conv 3->6 3x3 (filter 2 zeroed), BN whose channel 2 is the constant 0.7 then, ReLU, the consumer."""
    torch.manual_seed(0)
    first = nn.Conv2d(3, 6, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        first.weight[2] = 0
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean[2] = 0
        bn.bias[2] = 0.7  # relu(0.7): a nonzero constant channel
    layers = [first, bn, nn.ReLU(), consumer] + ([nn.BatchNorm2d(consumer.out_channels)] if bn_after else [])
    model = nn.Sequential(*layers).eval()
    if bn_after:
        with torch.no_grad():
            model[4].running_mean.uniform_(-1, 1)
    return model


@pytest.mark.parametrize("consumer, bn_after, kept", [
    (nn.Conv2d(6, 4, 1), False, 5),  # 1x1 with bias: relu(beta) folded into the bias
    (nn.Conv2d(6, 4, 3, padding=1), False, 6),  # padded: the constant differs at the borders, channel stays
    (nn.Conv2d(6, 4, 1, bias=False), True, 5),  # no bias: folded into the next BN's running_mean
    (nn.Conv2d(6, 4, 3, padding=1, bias=False), True, 6),
    (nn.Conv2d(6, 4, 1, bias=False), False, 6),  # nowhere to fold
    (nn.Conv2d(6, 4, 3), False, 5),  # unpadded 3x3: every output sees all 9 taps
])
def test_constant_channel_folds_only_where_exact(consumer, bn_after, kept):
    model = bn_conv(consumer, bn_after)
    x = torch.randn(2, 3, 8, 8)
    small = shrink(model, x[:1])
    assert small[0].out_channels == kept and small[3].in_channels == kept
    assert_same_outputs(model, small, x)


def test_zeroed_bn_makes_a_padded_consumer_exact():
    model = bn_conv(nn.Conv2d(6, 4, 3, padding=1), False)
    masks = {"0": (model[0].weight != 0).float()}
    structured_masks_to_bn(model, masks)
    assert model[1].weight[2] == 0 and model[1].bias[2] == 0
    x = torch.randn(2, 3, 8, 8)
    small = shrink(model, x[:1])
    assert small[0].out_channels == 5
    assert_same_outputs(model, small, x)


def test_remove_unused_paths_zeroes_a_copy_and_keeps_outputs():
    model = bn_conv(nn.Conv2d(6, 4, 1), False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    zeroed, removed = remove_unused_paths(model, x[:1])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert removed["0"]["out"] == [2] and removed["1"]["out"] == [2] and removed["3"]["in"] == [2]
    assert zeroed[3].weight[:, 2].abs().sum() == 0 and zeroed[1].weight[2] == 0
    assert not torch.equal(zeroed[3].bias, model[3].bias)  # relu(0.7) * sum(W[:, 2]) went into the bias
    assert_same_outputs(model, zeroed, x)


def test_flatten_channel_owns_its_columns():
    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    with torch.no_grad():
        model.fc1.weight[:, 7 * 16:8 * 16] = 0  # every column of conv2's channel 7 (4x4 after pooling)
        model.conv1.weight[3] = 0  # conv1 filter 3 gives its bias: a constant folded into conv2 (unpadded)
    x = torch.randn(2, 1, 28, 28)
    _, removed = remove_unused_paths(model, x[:1])
    assert removed["conv2"]["out"] == [7] and removed["fc1"]["in"] == [7]
    assert removed["conv1"]["out"] == [3] and removed["conv2"]["in"] == [3]
    small = shrink(model, x[:1])
    assert (small.conv1.out_channels, small.conv2.in_channels, small.conv2.out_channels) == (19, 19, 49)
    assert small.fc1.in_features == 49 * 16
    assert_same_outputs(model, small, x)


def test_fixed_point_cascade():
    """C ignores B's channel 2; B's row 2 was the only one reading A's channel 4: A's filter 4 goes too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU(), nn.Conv2d(6, 5, 1), nn.ReLU(), nn.Conv2d(5, 3, 1)).eval()
    with torch.no_grad():
        model[4].weight[:, 2] = 0
        model[2].weight[:, 4] = 0
        model[2].weight[2, 4] = 1.0
    x = torch.randn(2, 4, 5, 5)
    _, removed = remove_unused_paths(model, x[:1])
    assert removed["0"] == {"out": [4], "in": []}
    assert removed["2"] == {"out": [2], "in": [4]}
    assert removed["4"] == {"out": [], "in": [2]}
    assert_same_outputs(model, shrink(model, x[:1]), x)


def test_keeps_one_channel_and_every_class():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    masks = {"0": torch.zeros_like(model[0].weight), "5": torch.ones_like(model[5].weight)}
    masks["5"][3] = 0  # a class's row
    reference = masked(model, masks)
    x = torch.randn(2, 3, 8, 8)
    small = shrink(reference, x[:1])
    assert small[0].out_channels == 1 and small[5].in_features == 1
    assert small[5].out_features == 10
    assert_same_outputs(reference, small, x)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.head(self.conv(self.conv(x)))


@pytest.mark.parametrize("model, layer", [(Concat(), "a"), (Twice(), "conv")])
def test_unknown_structure_pins_channels(model, layer):
    with torch.no_grad():
        model.get_submodule(layer).weight[1] = 0
    model.eval()
    x = torch.randn(2, 3, 5, 5)
    _, removed = remove_unused_paths(model, x[:1])
    assert removed[layer]["out"] == []
    assert_same_outputs(model, shrink(model, x[:1]), x)


def _resnet20_stream_masks(model, dead_in: list[str]) -> dict[str, torch.Tensor]:
    masks = {name: torch.ones_like(model.get_submodule(name).weight) for name in dead_in}
    for mask in masks.values():
        mask[5] = 0
    return masks


STAGE0_PRODUCERS = ["conv1", "layers.0.0.conv2", "layers.0.1.conv2", "layers.0.2.conv2"]


@pytest.mark.parametrize("dead_in, gone", [
    (STAGE0_PRODUCERS, True),
    (STAGE0_PRODUCERS[1:], False),  # the stem still writes channel 5 and every block reads it
    (STAGE0_PRODUCERS[:-1], False),  # the last block writes it and stage 1's first block reads it
])
def test_residual_stream_channel_goes_only_when_all_agree(dead_in, gone):
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    reference = masked(model, _resnet20_stream_masks(model, dead_in))
    x = torch.randn(2, 3, 32, 32)
    _, removed = remove_unused_paths(reference, x[:1])
    readers = ["layers.0.0.conv1", "layers.0.1.conv1", "layers.0.2.conv1", "layers.1.0.conv1", "layers.1.0.shortcut.0"]
    assert all((5 in removed[name]["out"]) == gone for name in STAGE0_PRODUCERS)
    assert all((5 in removed[name]["in"]) == gone for name in readers)
    small = shrink(reference, x[:1])
    assert small.conv1.out_channels == (15 if gone else 16)
    assert_same_outputs(reference, small, x)


def test_depthwise_channel_goes_on_both_sides():
    torch.manual_seed(0)
    model = build_model("mobilenetv2-cifar").eval()
    masks = {"blocks.3.conv2": torch.ones_like(model.blocks[3].conv2.weight)}
    masks["blocks.3.conv2"][7] = 0
    reference = masked(model, masks)
    x = torch.randn(2, 3, 32, 32)
    _, removed = remove_unused_paths(reference, x[:1])
    for name in ("blocks.3.conv1", "blocks.3.bn1", "blocks.3.conv2", "blocks.3.bn2"):
        assert removed[name]["out"] == [7]
    assert removed["blocks.3.conv3"]["in"] == [7]
    small = shrink(reference, x[:1])
    dw = small.blocks[3].conv2
    assert (dw.in_channels, dw.out_channels, dw.groups) == (143, 143, 143)
    assert_same_outputs(reference, small, x)


def test_torch_prune_reparametrization_is_baked_in():
    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    mask = torch.ones_like(model.conv2.weight)
    mask[[4, 9]] = 0
    prune.custom_from_mask(model.conv2, "weight", mask)
    x = torch.randn(2, 1, 28, 28)
    small = shrink(model, x[:1])
    assert small.conv2.out_channels == 48 and hasattr(model.conv2, "weight_orig")
    assert_same_outputs(model, small, x)
