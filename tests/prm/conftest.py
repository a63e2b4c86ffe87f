"""Shared fixtures for the P-RM tests: zoo models with realistic BN statistics and random structured masks."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from admm_explorer.models import MODELS, build_model, prunable_layers

SMALL_INPUT = {"resnet18": (3, 64, 64), "resnet50": (3, 64, 64)}  # ImageNet nets at 64x64 for speed


def input_shape(name: str) -> tuple[int, int, int]:
    return SMALL_INPUT.get(name, MODELS[name].input_shape)


def calibrated(name: str, gen: torch.Generator) -> nn.Module:
    """Zoo model in eval mode whose BN running stats are one random batch's statistics and whose gamma/beta
    are random: activations stay O(1) through deep nets, and BN is far from the identity."""
    model = build_model(name)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(4, *input_shape(name), generator=gen))
        for bn in bns:
            bn.momentum = 0.1
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.rand(bn.num_features, generator=gen) - 0.5)
    return model.eval()


def random_masks(model: nn.Module, gen: torch.Generator, classifier: str,
                 columns_per_channel: dict[str, int] | None = None,
                 aligned: list[list[str]] = ()) -> dict[str, torch.Tensor]:
    """Structured masks: each layer loses 30-60% of its filters (rows; never the classifier's), half of the
    non-depthwise layers also lose 1/8 of their input channels (all kh, kw; for a linear behind a flatten,
    the channel's block of columns), and each group in `aligned` (producers of one residual stream) loses
    the same quarter of channels in every member, so that some stream channels die everywhere."""
    columns_per_channel = columns_per_channel or {}
    masks = {}
    for name, layer in prunable_layers(model).items():
        mask = torch.ones_like(layer.weight)
        n_out, n_in = mask.shape[:2]
        if name != classifier:
            frac = 0.3 + 0.3 * torch.rand((), generator=gen).item()
            mask[torch.randperm(n_out, generator=gen)[: int(frac * n_out)]] = 0
        depthwise = isinstance(layer, nn.Conv2d) and layer.groups > 1
        if not depthwise and torch.rand((), generator=gen).item() < 0.5:
            r = columns_per_channel.get(name, 1)
            channels = n_in // r
            for c in torch.randperm(channels, generator=gen)[: channels // 8].tolist():
                mask[:, c * r:(c + 1) * r] = 0
        masks[name] = mask
    for group in aligned:
        n = masks[group[0]].shape[0]
        dead = torch.randperm(n, generator=gen)[: n // 4]
        for name in group:
            masks[name][dead] = 0
    return masks


@pytest.fixture(autouse=True)
def one_thread():
    """Small convs on a shared 2-core box: intra-op threads oversubscribe and cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def zoo() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable under --import-mode=importlib)."""
    return SimpleNamespace(input_shape=input_shape, calibrated=calibrated, random_masks=random_masks)
