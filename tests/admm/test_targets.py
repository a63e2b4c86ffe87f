"""LayerTarget validation, target resolution against a model, and the live compression figure."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from admm_explorer.admm import LayerTarget, resolve_targets
from admm_explorer.admm.projections import project
from admm_explorer.admm.targets import compression, kept_weights
from admm_explorer.models import build_model

PAPER_RATES = {"conv1": 0.8, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93}  # docs/algorithms.md section 1 (paper 1's LeNet-5 rates)


@pytest.fixture(scope="module")
def lenet():
    return build_model("lenet5")


def test_sparsity_one_is_refused_naming_field_value_and_range():
    with pytest.raises(ValidationError) as err:
        LayerTarget(sparsity=1.0)
    assert "sparsity=1.0" in str(err.value) and "0 <= sparsity < 1" in str(err.value)


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_sparsity_out_of_range_is_refused(value):
    with pytest.raises(ValidationError, match="sparsity"):
        LayerTarget(sparsity=value)


def test_bits_nine_is_refused_naming_field_value_and_range():
    with pytest.raises(ValidationError) as err:
        LayerTarget(bits=9)
    assert "bits=9" in str(err.value) and "1 to 8" in str(err.value)


def test_target_needs_sparsity_or_bits_and_structure_needs_sparsity():
    with pytest.raises(ValidationError, match="neither"):
        LayerTarget()
    with pytest.raises(ValidationError, match="structure='filter' needs a sparsity"):
        LayerTarget(bits=2, structure="filter")
    with pytest.raises(ValidationError, match="unstructured"):  # pydantic lists the allowed literals
        LayerTarget(sparsity=0.5, structure="rows")
    with pytest.raises(ValidationError, match="extra"):
        LayerTarget(sparsity=0.5, sparse=True)
    target = LayerTarget(sparsity=0.5, bits=2)
    with pytest.raises(ValidationError):
        target.sparsity = 0.6  # frozen


def test_resolve_floats_dicts_star_and_model_order(lenet):
    resolved = resolve_targets(lenet, {"fc1": {"sparsity": 0.991}, "*": 0.5, "conv1": LayerTarget(bits=2)})
    assert list(resolved) == ["conv1", "conv2", "fc1", "fc2"]
    assert resolved["conv1"] == LayerTarget(bits=2)
    assert resolved["conv2"] == resolved["fc2"] == LayerTarget(sparsity=0.5)
    assert resolved["fc1"] == LayerTarget(sparsity=0.991)
    assert list(resolve_targets(lenet, {"fc2": 0.1, "conv2": 0.2})) == ["conv2", "fc2"]


def test_unknown_layer_names_close_matches_and_prunable_layers(lenet):
    with pytest.raises(ValueError) as err:
        resolve_targets(lenet, {"fc3": 0.5})
    message = str(err.value)
    assert "'fc3'" in message and "did you mean fc2, fc1?" in message
    assert "prunable layers: conv1, conv2, fc1, fc2" in message


def test_non_prunable_module_is_refused_with_its_own_message(lenet):
    with pytest.raises(ValueError) as err:
        resolve_targets(lenet, {"pool1": 0.5})
    assert "'pool1' is a MaxPool2d, which cannot be pruned" in str(err.value)
    assert "Conv2d and Linear" in str(err.value)


def test_invalid_target_errors_name_the_layer(lenet):
    with pytest.raises(ValueError, match="layer 'fc1'.*sparsity=1.0"):
        resolve_targets(lenet, {"fc1": 1.0})
    with pytest.raises(ValueError, match="layer 'conv2'.*bits=9"):
        resolve_targets(lenet, {"conv2": {"bits": 9}})
    with pytest.raises(TypeError, match="layer 'fc2' is a str"):
        resolve_targets(lenet, {"fc2": "0.5"})


def test_structured_targets_on_a_depthwise_conv_are_accepted():
    model = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, groups=8))
    resolved = resolve_targets(model, {"1": {"sparsity": 0.5, "structure": "filter"}, "0": {"sparsity": 0.5, "structure": "column"}})
    z = project(model[1].weight.detach(), resolved["1"])  # (8, 1, 3, 3): a row per depthwise filter
    assert int((z.reshape(8, -1) != 0).all(1).sum()) == 4


def test_compression_of_the_paper_lenet5_rates(lenet):
    # kept: conv1 100 of 500, conv2 2,000 of 25,000, fc1 3,600 of 400,000, fc2 350 of 5,000
    assert compression(lenet, PAPER_RATES) == pytest.approx(430_500 / 6_050)
    assert compression(lenet, {"fc1": 0.991}) == pytest.approx(430_500 / (430_500 - 400_000 + 3_600))
    assert compression(lenet, {"*": LayerTarget(bits=1)}) == 1.0  # quantization alone removes no weight
    assert compression(lenet, {}) == 1.0


@pytest.mark.parametrize("structure", ["unstructured", "filter", "column", "filter+column"])
def test_kept_weights_matches_the_projection(structure):
    w = torch.randn(20, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    target = LayerTarget(sparsity=0.7, structure=structure)
    assert kept_weights(tuple(w.shape), target) == int((project(w, target) != 0).sum())
