"""The ADMM API on real (tiny) training: residuals, hard prune, histograms, divergence, checkpoints."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from admm_explorer.admm import ADMM, RhoSpec
from admm_explorer.admm.masks import current_sparsity
from admm_explorer.admm.projections import fit_scale, keep_count
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


def by_hand(w, edges) -> list[int]:
    """Weights per bin [a, b), the last bin [a, b]: counted with float64 comparisons."""
    w, e = w.flatten().double(), torch.tensor(edges, dtype=torch.float64)
    return [int(((w >= a) & ((w < b) if i < len(e) - 2 else (w <= b))).sum())
            for i, (a, b) in enumerate(zip(e[:-1], e[1:]))]


def test_histogram_bins_hold_every_weight_and_widen_when_one_leaves_them():
    model = build_model("lenet5")
    admm = ADMM(model, {"conv1": 0.8, "fc2": 0.5})
    first = admm.histograms()
    top = float(model.conv1.weight.detach().abs().max())
    edges = first["conv1"]["edges"]
    assert len(edges) == 61 and (edges[0], edges[-1]) == (-top, top)
    assert sum(first["conv1"]["w_counts"]) == 500 and sum(first["conv1"]["kept_counts"]) == 100
    assert first["conv1"]["w_counts"] == by_hand(model.conv1.weight.detach(), first["conv1"]["edges"])
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = 10 * top  # beyond the first range: the edges widen to 1.3 * 10 * top
        model.conv1.weight[0, 0, 0, 1] = -4 * top
    admm.update()
    after = admm.histograms()
    edges = after["conv1"]["edges"]
    assert (edges[0], edges[-1]) == pytest.approx((-13 * top, 13 * top), rel=1e-6)
    assert after["conv1"]["w_counts"] == by_hand(model.conv1.weight.detach(), edges)
    assert sum(after["conv1"]["w_counts"]) == 500 and sum(after["conv1"]["kept_counts"]) == 100
    for value in (10 * top, -4 * top):  # each outlier in the bin whose edges hold it, kept by Z
        i = max(j for j, a in enumerate(edges[:-1]) if a <= value)
        assert edges[i] <= value < edges[i + 1]
        assert after["conv1"]["w_counts"][i] == after["conv1"]["kept_counts"][i] == 1
    assert after["fc2"]["edges"] == first["fc2"]["edges"]  # fc2's weights stayed inside
    with torch.no_grad():  # back inside: the widened bins stay, later rounds share them
        model.conv1.weight[0, 0, 0, :2] = 0.0
    admm.update()
    assert admm.histograms()["conv1"]["edges"] == edges
    assert admm.state_dict()["edges"]["conv1"].tolist() == edges


def test_levels_are_the_values_alpha_q_of_z_for_bits_targets_only():
    model = build_model("lenet5")
    admm = ADMM(model, {"fc2": {"sparsity": 0.5, "bits": 2}, "conv1": {"bits": 3}, "fc1": 0.9})
    levels = admm.levels()
    assert set(levels) == {"fc2", "conv1"}
    # Z starts as the projection of W: fc2 its 2,500 largest magnitudes on the ternary levels +-alpha
    fc2, conv1 = model.fc2.weight.detach(), model.conv1.weight.detach()
    alpha2 = float(fit_scale(fc2[admm.layers["fc2"].kept], 2))
    assert levels["fc2"] == pytest.approx([-alpha2, alpha2])
    # conv1 keeps every weight on alpha * {-3..3}: its nonzero levels are some of alpha * (+-1, +-2, +-3)
    alpha = float(fit_scale(conv1.flatten(), 3))
    q = [v / alpha for v in levels["conv1"]]
    assert q == sorted(q) and 2 <= len(q) <= 6 and q == pytest.approx([round(x) for x in q])
    assert {round(x) for x in q} <= {-3, -2, -1, 1, 2, 3}
    with torch.no_grad():
        model.fc2.weight.mul_(3.0)
    admm.update()  # U = 0: Z = the projection of 3 W, the same kept set on levels three times as far out
    assert admm.levels()["fc2"] == pytest.approx([-3 * alpha2, 3 * alpha2], rel=1e-5)


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
    # Z is sparse from lam alone (no rate): the first Z-step on the trained W cuts 0.2 of the weights, and
    # the support moves both ways afterwards (weights leave and enter)
    assert all(s > 0.1 for s in sparsity) and len(set(sparsity)) > 1, sparsity
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
