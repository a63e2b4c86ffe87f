"""The ADMM API on real (tiny) training: residuals, hard prune, histograms, divergence, checkpoints."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from admm_explorer.admm import ADMM, RhoSpec
from admm_explorer.admm.masks import current_sparsity
from admm_explorer.admm.projections import keep_count
from admm_explorer.models import build_model


def mlp_and_data(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    x = torch.randn(256, 10)
    y = (x[:, :3] * torch.tensor([1.0, -2.0, 0.5])).argmax(1)  # depends on 3 of the 10 inputs
    return model, x, y


def train(model, x, y, steps: int, optimizer, admm=None):
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        (loss if admm is None else loss + admm.penalty()).backward()
        optimizer.step()


def test_a_short_admm_run_drives_w_to_z_and_hard_prunes_to_the_targets():
    model, x, y = mlp_and_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, x, y, 100, optimizer)  # the dense model
    admm = ADMM(model, {"0": 0.8, "2": {"sparsity": 0.5, "structure": "column"}},
                rho=RhoSpec(init=1e-2, factor=1.5, max=1.0))
    primal = []
    for _ in range(8):
        train(model, x, y, 25, optimizer, admm)
        residuals = admm.update()
        assert list(residuals) == ["0", "2"]
        primal.append(sum(r.primal for r in residuals.values()))
    assert all(b < a for a, b in zip(primal, primal[1:])) and primal[-1] < 0.2 * primal[0], primal
    assert residuals["0"].rho == pytest.approx(min(1e-2 * 1.5 ** 8, 1.0))
    masks = admm.hard_prune()
    stats = current_sparsity(model, ["0", "2"])
    assert stats["0"]["nonzero"] == int(masks["0"].sum()) == keep_count(320, 0.8)
    assert stats["2"]["nonzero"] == 3 * keep_count(32, 0.5)
    accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.9


def test_penalty_is_the_sum_of_layer_penalties_with_the_right_gradient():
    model = build_model("lenet5")
    admm = ADMM(model, {"conv2": 0.9, "fc1": 0.99}, rho=0.5)
    with torch.no_grad():
        model.conv2.weight.mul_(1.1)
    admm.update()
    model.zero_grad()
    admm.penalty().backward()
    for name in ("conv2", "fc1"):
        weight, layer = model.get_submodule(name).weight, admm.layers[name]
        assert torch.allclose(weight.grad, layer.rho * (weight - layer.z + layer.u).detach())
    assert model.conv1.weight.grad is None


def test_histograms_have_fixed_edges_and_exact_counts():
    model = build_model("lenet5")
    admm = ADMM(model, {"conv1": 0.8, "fc2": 0.5})
    first = admm.histograms()
    top = float(model.conv1.weight.detach().abs().max())
    assert len(first["conv1"]["edges"]) == 61 and first["conv1"]["edges"][0] == pytest.approx(-top)
    assert sum(first["conv1"]["w_counts"]) == 500 and sum(first["conv1"]["kept_counts"]) == 100
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = 10 * top  # beyond the fixed range: the last bin
        model.conv1.weight[0, 0, 0, 1] = -10 * top  # the first bin
    admm.update()
    after = admm.histograms()["conv1"]
    assert after["edges"] == first["conv1"]["edges"]
    assert sum(after["w_counts"]) == 500 and sum(after["kept_counts"]) == int(admm.layers["conv1"].kept.sum())
    assert after["w_counts"][-1] >= 1 and after["w_counts"][0] >= 1
    assert after["kept_counts"][-1] >= 1 and after["kept_counts"][0] >= 1  # both outliers are kept by Z
    # the counts are those of the edges: recount by hand
    w = model.conv1.weight.detach().flatten().double()
    edges = torch.tensor(after["edges"], dtype=torch.float64)
    inner = [int(((w >= a) & (w < b)).sum()) for a, b in zip(edges[1:-2], edges[2:-1])]
    assert after["w_counts"][1:-1] == inner


def test_nan_weights_raise_naming_the_layer_and_rho():
    model = build_model("lenet5")
    admm = ADMM(model, {"*": 0.5}, rho=RhoSpec(init=0.5))
    with torch.no_grad():
        model.fc1.weight[3, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="layer 'fc1'.*rho=0.5 is the likely cause"):
        admm.update()


def test_set_rho_and_state_dict_round_trip():
    model = build_model("lenet5")
    admm = ADMM(model, {"*": 0.9}, rho=RhoSpec(init=1e-3, schedule="balance"))
    with torch.no_grad():
        model.fc1.weight.mul_(0.5)
    admm.update()
    unscaled = {n: layer.rho * layer.u for n, layer in admm.layers.items()}
    admm.set_rho(0.02)
    assert all(layer.rho == 0.02 and torch.allclose(layer.rho * layer.u, unscaled[n])
               for n, layer in admm.layers.items())
    buffer = io.BytesIO()
    torch.save(admm.state_dict(), buffer)
    buffer.seek(0)
    with torch.no_grad():
        model.fc1.weight.mul_(2.0)
    restored = ADMM(model, {"*": 0.9}, rho=RhoSpec(init=1e-3, schedule="balance"))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.histograms() == admm.histograms()  # same edges, same W, same kept sets
    assert restored.update() == admm.update()


def test_progressive_masks_keep_earlier_pruned_weights_out():
    model, x, y = mlp_and_data()
    first = ADMM(model, {"0": 0.5}).hard_prune()
    admm = ADMM(model, {"0": 0.8}, masks=first)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, x, y, 5, optimizer, admm)
    admm.update()
    assert not admm.layers["0"].z[~first["0"]].any()
    masks = admm.hard_prune()
    assert not (masks["0"] & ~first["0"]).any() and int(masks["0"].sum()) == keep_count(320, 0.8)
    with pytest.raises(ValueError, match="masks given for layers without a target"):
        ADMM(model, {"0": 0.8}, masks={"2": torch.ones(3, 32, dtype=torch.bool)})


def test_quantization_targets_are_snapped_at_the_hard_prune():
    model = build_model("lenet5")
    admm = ADMM(model, {"fc2": {"sparsity": 0.5, "bits": 2}, "conv1": {"bits": 3}})
    masks = admm.hard_prune()
    fc2, conv1 = model.fc2.weight.detach(), model.conv1.weight.detach()
    assert int(masks["fc2"].sum()) == 2500 and not fc2[~masks["fc2"]].any()
    assert fc2[masks["fc2"]].unique().numel() <= 3 and conv1.unique().numel() <= 7
    assert masks["conv1"].all()


def test_reweighted_method_runs_and_prunes_to_the_target():
    model, x, y = mlp_and_data()
    admm = ADMM(model, {"*": 0.7}, rho=1e-2, method="reweighted", lam=3e-5, eps=1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    sparsity = []
    for _ in range(4):
        train(model, x, y, 10, optimizer, admm)
        sparsity.append(admm.update()["0"].sparsity)
    assert all(a < b for a, b in zip(sparsity, sparsity[1:])) and sparsity[-1] > 0.3, sparsity
    masks = admm.hard_prune()
    assert int(masks["0"].sum()) == keep_count(320, 0.7) and int(masks["2"].sum()) == keep_count(96, 0.7)


def test_constructor_validation():
    model = build_model("lenet5")
    with pytest.raises(ValueError, match="method='sgd'"):
        ADMM(model, {"*": 0.5}, method="sgd")
    with pytest.raises(ValueError, match="select no prunable layer"):
        ADMM(model, {})
    with pytest.raises(ValueError, match="did you mean"):
        ADMM(model, {"fc": 0.5})
