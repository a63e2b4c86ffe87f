"""Our unused path removal and shrink against Torch-Pruning's dependency graph, on every conv net of the zoo.

Torch-Pruning (PyPI torch-pruning) traces layer dependencies its own way (autograd graph, not torch.fx)
and removes channels physically. Given the channels our plan removes, each space's indices are handed to
Torch-Pruning through one producer of that space; it must then remove them from the same layers. The
two networks must agree in every module's shape and in their outputs, both equal to the masked network.
Torch-Pruning does not fold constants, so it prunes the plan's network, where every removed channel
already contributes nothing (its constant, if any, is in the readers' biases).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

from admm_explorer.prm import masked
from admm_explorer.prm.graph import is_depthwise
from admm_explorer.prm.paths import plan
from admm_explorer.prm.shrink import shrink_plan

MODELS = ["lenet5", "resnet20", "resnet56", "resnet18-cifar", "vgg16-cifar", "mobilenetv2-cifar",
          "resnet18", "resnet50"]
CLASSIFIER = {"lenet5": "fc2", "vgg16-cifar": "classifier"}


def torch_pruning_removal(model: nn.Module, x: torch.Tensor, removed: dict[str, list[int]]) -> nn.Module:
    """Prunes `model` in place: for each producer layer name, its rows `removed[name]` and all that
    Torch-Pruning's dependency graph couples to them."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    for name, idxs in removed.items():
        layer = model.get_submodule(name)
        fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
        graph.get_pruning_group(layer, fn, idxs=idxs).prune()
    return model


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()} | \
           {name: tuple(b.shape) for name, b in model.named_buffers() if b.dim()}


@pytest.mark.parametrize("name", MODELS)
def test_shrink_agrees_with_torch_pruning(name, zoo, gen):
    model = zoo.calibrated(name, gen)
    reference = masked(model, zoo.random_masks(model, gen, CLASSIFIER.get(name, "fc")))
    x = torch.randn(4, *zoo.input_shape(name), generator=gen)
    p = plan(reference, x[:1])
    g = p.graph
    unshrunk = copy.deepcopy(g.model)  # shrink_plan consumes the plan's network
    ours = shrink_plan(p).eval()

    producers = {}  # space -> one channel-mixing layer writing it (a stream has several: any one will do)
    for layer, space in g.rows.items():
        module = unshrunk.get_submodule(layer)
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and not is_depthwise(module)):
            producers.setdefault(space, layer)
    removed = {layer: p.removed[space].nonzero().flatten().tolist() for space, layer in producers.items()
               if p.removed[space].any()}
    assert removed  # the masks do free some channels
    theirs = torch_pruning_removal(unshrunk, x[:1], removed).eval()

    assert shapes(theirs) == shapes(ours)
    with torch.no_grad():
        want = reference(x)
        assert (ours(x) - want).abs().max().item() < 1e-4
        assert (theirs(x) - want).abs().max().item() < 1e-4
