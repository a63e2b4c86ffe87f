"""Purification: a constructed network whose accuracy depends on which filters survive, known by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from admm_explorer.prm import masked, purification_masks, purify, report
from admm_explorer.prm.paths import plan
from admm_explorer.prm.purify import output_layers, purified

# filter norms of the constructed conv; mean 0.619. Filter 6 (norm 0.3) matters: losing it costs 1 point.
NORMS = [1.0, 1.0, 1.0, 1.0, 0.05, 0.1, 0.3, 0.5]
COST = {0.05: 0.0004, 0.1: 0.0004, 0.3: 0.01, 0.5: 0.0004}  # accuracy lost when the filter of that norm is gone
SHAPE = (3, 8, 8)


def constructed() -> nn.Sequential:
    """conv 3->8 3x3 whose filters are NORMS times one direction of equal-magnitude entries (so every
    GEMM column has the same norm and none is weak), BN, ReLU, global pool, linear 8->4."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    direction = (torch.randint(0, 2, (3, 3, 3), generator=gen) * 2 - 1) / 27 ** 0.5
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(NORMS)[:, None, None, None] * direction)
        model[5].weight.copy_(torch.randint(0, 2, (4, 8), generator=gen) * 2.0 - 1)
    return model.eval()


def evaluate(model: nn.Module) -> float:
    """0.9 minus the cost of every NORMS filter missing from the first conv (works shrunk or not)."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    return 0.9 - sum(cost for n, cost in COST.items() if not (norms - n).abs().lt(1e-4).any())


def ones(model: nn.Module) -> dict[str, torch.Tensor]:
    return {"0": torch.ones_like(model[0].weight), "5": torch.ones_like(model[5].weight)}


def removed_filters(before: dict, after: dict) -> list[int]:
    alive = lambda m: m.flatten(1).ne(0).any(1)  # noqa: E731
    return (alive(before["0"]) & ~alive(after["0"])).nonzero().flatten().tolist()


@pytest.mark.parametrize("tolerance, tau, gone", [
    # tau 0.4 takes 0.05 and 0.1 (< 0.4 * 0.619), which raises the mean of the rest to 0.8; the second round
    # then takes filter 6 (0.3 < 0.4 * 0.8): a 1-point loss. tau 0.3 stops at [4, 5] (0.3 >= 0.3 * 0.8)
    (0.001, 0.3, [4, 5]),
    (0.02, 0.9, [4, 5, 6, 7]),  # 0.5 < 0.9 * 0.619
    (0.0001, 0.05, []),  # 0.05 < 0.05 * 0.619 is false: nothing goes, and 0.0 never enters the sweep
])
def test_purification_keeps_filters_that_matter(tolerance, tau, gone):
    model = constructed()
    masks = ones(model)
    result = purify(model, masks, evaluate, tolerance, input_shape=SHAPE, latency=False)
    assert result.tau == pytest.approx(tau)
    assert result.accuracy_before == pytest.approx(0.9)
    assert removed_filters(masks, result.masks) == gone
    # the oracle: no removed filter costs, on its own, more than the tolerance
    for f in gone:
        alone = {name: mask.clone() for name, mask in masks.items()}
        alone["0"][f] = 0
        assert 0.9 - evaluate(masked(model, alone)) <= tolerance + 1e-9
    assert result.accuracy_before - result.accuracy_after <= tolerance + 1e-9
    assert result.model[0].out_channels == 8 - len(gone) and result.model[5].out_features == 4
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert (masked(model, result.masks)(x) - result.model(x)).abs().max() < 1e-5
    kept = 8 - len(gone)
    assert result.after["macs"] == kept * 27 * 64 + 4 * kept
    assert result.after["params"] == kept * 27 + 2 * kept + 4 * kept + 4
    assert result.before["params"] == sum(p.numel() for p in model.parameters())


def test_sweep_evaluates_every_tau_and_picks_the_largest_within_tolerance():
    model = constructed()
    result = purify(model, ones(model), evaluate, 0.001, taus=(0.9, 0.1, 0.4, 0.2), input_shape=SHAPE, latency=False)
    assert list(result.accuracies) == [0.1, 0.2, 0.4, 0.9]
    assert result.accuracies[0.1] == pytest.approx(0.9 - 0.0004)  # 0.05 only; then 0.1 >= 0.1 * 0.657
    assert result.accuracies[0.4] == pytest.approx(0.9 - 0.0108)  # 0.05, 0.1, then 0.3 (see above)
    assert result.accuracies[0.9] == pytest.approx(0.9 - 0.0112)
    assert result.tau == 0.2


def test_the_sweep_stops_at_the_first_tau_beyond_the_tolerance():
    """A noisy evaluation that scores tau 0.9 within the tolerance after 0.4 fell beyond it: 0.2 is kept."""
    model = constructed()

    def noisy(m: nn.Module) -> float:
        alive = next(c for c in m.modules() if isinstance(c, nn.Conv2d)).weight.flatten(1).ne(0).any(1).sum()
        return {8: 0.9, 7: 0.9, 6: 0.9, 5: 0.88, 4: 0.9}[int(alive)]  # tau 0.1: 7 alive, 0.2: 6, 0.4: 5, 0.9: 4

    result = purify(model, ones(model), noisy, 0.001, taus=(0.1, 0.2, 0.4, 0.9), input_shape=SHAPE, latency=False)
    assert [result.accuracies[t] for t in (0.1, 0.2, 0.4, 0.9)] == [0.9, 0.9, 0.88, 0.9]
    assert result.tau == 0.2 and removed_filters(ones(model), result.masks) == [4, 5]


def chain() -> tuple[nn.Sequential, dict[str, torch.Tensor]]:
    """linear 4->3, ReLU, linear 3->3, ReLU, linear 3->2, zero biases; the first two masked.

    At tau 0.5: round 1 finds only row 2 of the first layer weak (0.1 < 0.5 * 1.37). Path removal then
    drops that channel, hence column 2 of the second layer, whose row 2 read only it: that row goes too.
    The second layer's remaining rows and columns are 4 and 1.3 (mean 2.65), so round 2 finds row 1 and
    column 1 weak (1.3 < 1.325), which were not before (mean 2.2); the first layer's row 1 is then unused.
    """
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [0.1, 0, 0, 0]]))
        model[2].weight.copy_(torch.diag(torch.tensor([4.0, 1.3, 1.3])))
        model[4].weight.copy_(torch.tensor([[1.0, -1, 0.5], [0.5, 1, -1]]))
        for layer in (model[0], model[2], model[4]):
            layer.bias.zero_()
    return model.eval(), {"0": torch.ones(3, 4), "2": torch.ones(3, 3)}


def test_purification_alternates_with_path_removal_to_a_fixed_point():
    model, masks = chain()
    x = torch.zeros(1, 4)
    protected = output_layers(model, x)
    network, fixed = purified(model, masks, 0.5, x, protected)
    rows = lambda m: m.ne(0).any(1).nonzero().flatten().tolist()  # noqa: E731
    # purified: the first layer's row 2, then the second layer's row 1 and column 1
    expected = torch.ones(3, 3)
    expected[1], expected[:, 1] = 0, 0
    assert rows(fixed["0"]) == [0, 1] and torch.equal(fixed["2"], expected)
    final = plan(network, x).masks(fixed)
    # path removal: the second layer's row 2 reads only the removed channel 2, and the first layer's
    # channel 1 is unused once column 1 is gone
    assert rows(final["0"]) == [0] and rows(final["2"]) == [0]
    # one round of purification and path removal stops short: rows 0 and 1 of both layers survive
    once = purification_masks(model, masks, 0.5)
    assert rows(plan(masked(model, once), x).masks(once)["2"]) == [0, 1]
    # a fixed point: purification finds nothing more on the path-removed network
    removed = plan(network, x).graph.model
    after = purification_masks(removed, fixed, 0.5, protected)
    assert all(torch.equal(after[n], fixed[n]) for n in fixed)
    xs = torch.randn(16, 4)
    with torch.no_grad():
        assert torch.allclose(network(xs), masked(model, fixed)(xs))
        assert torch.allclose(removed(xs), network(xs), atol=1e-6)


def careless_retrain(calls: list):
    def retrain(m: nn.Module, masks: dict) -> None:  # moves every weight, pruned ones and their BN too
        calls.append({k: v.clone() for k, v in masks.items()})
        m.retrained = True
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01)
    return retrain


@pytest.mark.parametrize("retrained_accuracy, kept", [(1.0, True), (0.5, False)])
def test_retrain_is_kept_only_when_it_does_not_lower_the_accuracy_and_masks_hold(retrained_accuracy, kept):
    model = constructed()
    calls = []

    def judge(m: nn.Module) -> float:  # the retrained copy scores retrained_accuracy
        return retrained_accuracy if getattr(m, "retrained", False) else evaluate(m)

    result = purify(model, ones(model), judge, 0.001, retrain=careless_retrain(calls), input_shape=SHAPE,
                    latency=False)
    assert len(calls) == 1 and torch.equal(calls[0]["0"], result.masks["0"])
    assert result.retrain_kept is kept
    assert result.model[0].out_channels == 6  # pruned filters and their BN were re-zeroed after the retrain
    x = torch.randn(4, *SHAPE)
    untrained = masked(model, result.masks)  # the purified network as it was before the retrain
    with torch.no_grad():
        same = bool((untrained(x) - result.model(x)).abs().max() < 1e-5)
    assert same is (not kept)


def test_lenet5_end_to_end(zoo, gen):
    model = zoo.calibrated("lenet5", gen)
    x = torch.randn(128, 1, 28, 28, generator=gen)
    with torch.no_grad():
        labels = model(x).argmax(1)

    def agreement(m: nn.Module) -> float:
        with torch.no_grad():
            return (m.eval()(x).argmax(1) == labels).float().mean().item()

    masks = zoo.random_masks(model, gen, "fc2", {"fc1": 16})
    result = purify(model, masks, agreement, 0.01, input_shape=(1, 28, 28), latency=False)
    assert result.accuracy_before - result.accuracies[result.tau] <= 0.01 + 1e-9
    assert result.accuracy_after == pytest.approx(result.accuracies[result.tau])
    with torch.no_grad():
        assert (masked(model, result.masks)(x) - result.model(x)).abs().max() < 1e-4
    for key in ("params", "macs", "size_bytes"):
        assert result.after[key] < result.before[key]
    assert result.after["params"] == sum(p.numel() for p in result.model.parameters())


def test_report_measures_size_and_latency(tmp_path):
    model = constructed()
    figures = report(model, SHAPE, runs_b1=3, runs_b64=2)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    assert figures["size_bytes"] == (tmp_path / "model.pt").stat().st_size
    assert figures["latency_ms_b1"] > 0 and figures["latency_ms_b64"] > 0
    assert figures["macs"] == 8 * 27 * 64 + 4 * 8
    assert figures["filter_sparsity"] == 0 and figures["column_sparsity"] == 0
