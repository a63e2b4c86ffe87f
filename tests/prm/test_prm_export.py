"""A shrunk model is an ordinary module: state_dict save/load into a rebuilt architecture, ONNX export."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

from admm_explorer.prm import load_shrunk, masked, save_shrunk, shrink


def shrunk_zoo_model(name: str, zoo, gen) -> tuple[nn.Module, torch.Tensor]:
    model = zoo.calibrated(name, gen)
    classifier = {"lenet5": "fc2"}.get(name, "fc")
    x = torch.randn(2, *zoo.input_shape(name), generator=gen)
    return shrink(masked(model, zoo.random_masks(model, gen, classifier)), x[:1]).eval(), x


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2-cifar", "resnet18"])
def test_save_load_round_trip(name, zoo, gen, tmp_path):
    small, x = shrunk_zoo_model(name, zoo, gen)
    path = tmp_path / "shrunk.pt"
    save_shrunk(small, path)
    payload = torch.load(path, weights_only=True)
    assert payload["base"] == name
    loaded = load_shrunk(path).eval()
    assert type(loaded) is type(small)
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in small.state_dict().items()}
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))


def test_save_needs_a_zoo_base_for_other_models(tmp_path):
    with pytest.raises(ValueError, match="base="):
        save_shrunk(nn.Sequential(nn.Conv2d(3, 4, 1)), tmp_path / "x.pt")


@pytest.mark.parametrize("name, run", [("lenet5", True), ("resnet20", False)])
def test_onnx_export(name, run, zoo, gen, tmp_path):
    """Exports with the dynamo exporter; the file passes onnx.checker, and for LeNet-5 the ONNX reference
    interpreter gives the shrunk model's outputs."""
    small, x = shrunk_zoo_model(name, zoo, gen)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(small, (x,), str(path), dynamo=True, verbose=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    if run:
        (got,) = ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, small(x).numpy(), atol=1e-4)


def test_load_shrunk_refuses_a_corrupt_file_in_one_line(tmp_path):
    from admm_explorer.errors import CheckpointError

    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match=r"^shrunk model .*bad.pt is corrupt or not a shrunk model \(") as e:
        load_shrunk(tmp_path / "bad.pt")
    assert "\n" not in str(e.value)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a shrunk model saved by save_shrunk"):
        load_shrunk(tmp_path / "other.pt")
