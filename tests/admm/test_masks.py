"""Hard prune, MaskGuard under real optimizers, torch.nn.utils.prune form round trip, magnitude masks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from admm_explorer.admm import LayerTarget, MaskGuard, hard_prune, magnitude_masks, support, to_prune_form
from admm_explorer.admm.masks import current_sparsity, from_prune_form, masks_from_prune_form
from admm_explorer.admm.projections import keep_count
from admm_explorer.models import UnknownName, build_model


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def tiny_and_masks(seed: int = 0):
    torch.manual_seed(seed)
    model = Tiny()
    masks = magnitude_masks(model, {"conv": 0.6, "fc": {"sparsity": 0.5, "structure": "column"}})
    return model, masks


def pruned_weights_are_zero(model, masks) -> bool:
    return all(bool((model.get_submodule(n).weight[~m] == 0).all()) for n, m in masks.items())


def test_magnitude_masks_are_the_supports_at_the_targets():
    model, masks = tiny_and_masks()
    assert torch.equal(masks["conv"], support(model.conv.weight.detach(), LayerTarget(sparsity=0.6)))
    assert int(masks["conv"].sum()) == keep_count(72, 0.6)
    assert int(masks["fc"].any(0).sum()) == keep_count(144, 0.5) and masks["fc"].all(0).sum() == 72


def test_hard_prune_writes_positive_zeros_and_current_sparsity_counts_them():
    model, masks = tiny_and_masks()
    kept = model.conv.weight.detach()[masks["conv"]].clone()
    hard_prune(model, masks)
    assert torch.equal(model.conv.weight.detach()[masks["conv"]], kept)
    pruned = model.conv.weight.detach()[~masks["conv"]]
    assert (pruned == 0).all() and not pruned.signbit().any()
    stats = current_sparsity(model)
    assert stats["conv"] == {"weights": 72, "nonzero": 29, "sparsity": pytest.approx(1 - 29 / 72)}
    assert stats["fc"]["nonzero"] == 3 * 72
    with pytest.raises(UnknownName, match="did you mean conv"):
        current_sparsity(model, ["conv1"])


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-1),
], ids=["sgd-momentum-wd", "adam-wd", "adamw"])
def test_mask_guard_keeps_pruned_weights_exactly_zero_after_every_step(make_optimizer):
    model, masks = tiny_and_masks()
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,))
    # stale optimizer state from before the prune: momentum/moments are nonzero at the pruned weights
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    hard_prune(model, masks)
    before = model.conv.weight.detach().clone()
    stale_state_moved_them = False
    with MaskGuard(model, masks) as guard:
        for _ in range(30):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            assert all(bool((model.get_submodule(n).weight.grad[~m] == 0).all()) for n, m in masks.items())
            optimizer.step()
            stale_state_moved_them |= not pruned_weights_are_zero(model, masks)
            guard.after_step()
            assert pruned_weights_are_zero(model, masks)
    assert stale_state_moved_them  # so after_step was needed
    assert not torch.equal(model.conv.weight.detach(), before)  # the kept weights did train
    # detached: gradients flow everywhere again
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    assert model.conv.weight.grad[~masks["conv"]].abs().sum() > 0


def test_mask_guard_with_a_fresh_optimizer_needs_no_after_step():
    model, masks = tiny_and_masks()
    hard_prune(model, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,))
    guard = MaskGuard(model, masks).attach()
    for _ in range(20):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()  # zero gradient + zero decay of a zero weight + zero momentum: stays exactly 0
        assert pruned_weights_are_zero(model, masks)
    guard.detach()


def test_prune_form_round_trip():
    model, masks = tiny_and_masks()
    x = torch.randn(4, 2, 6, 6)
    reference = Tiny()
    reference.load_state_dict(model.state_dict())
    hard_prune(reference, masks)
    to_prune_form(model, masks)
    assert hasattr(model.conv, "weight_orig") and hasattr(model.conv, "weight_mask")
    found = masks_from_prune_form(model)
    assert found.keys() == masks.keys() and all(torch.equal(found[n], masks[n]) for n in masks)
    assert torch.equal(model(x), reference(x))
    from_prune_form(model)
    assert not hasattr(model.conv, "weight_orig") and isinstance(model.conv.weight, nn.Parameter)
    assert masks_from_prune_form(model) == {}
    for name in masks:
        weight = model.get_submodule(name).weight.detach()
        assert torch.equal(weight, reference.get_submodule(name).weight.detach())
        assert not weight[~masks[name]].signbit().any()  # +0.0, not prune.remove's -0.0


def test_mask_guard_refuses_a_layer_in_prune_form():
    model, masks = tiny_and_masks()
    to_prune_form(model, masks)
    with pytest.raises(TypeError, match="from_prune_form"):
        MaskGuard(model, masks)


def test_magnitude_masks_on_lenet5_hit_the_paper_counts():
    model = build_model("lenet5")
    masks = magnitude_masks(model, {"conv1": 0.8, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93})
    assert {n: int(m.sum()) for n, m in masks.items()} == {"conv1": 100, "conv2": 2000, "fc1": 3600, "fc2": 350}


def test_mask_guard_holds_frozen_weights_at_their_values_and_pruned_ones_at_zero():
    model, masks = tiny_and_masks()
    hard_prune(model, masks)
    w = model.conv.weight.detach()
    frozen = masks["conv"] & (torch.arange(w.numel()).view(w.shape) % 2 == 0)  # half of the kept weights
    values = torch.full_like(w, 0.25)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-2)
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,))
    free = masks["conv"] & ~frozen
    start = w[free].clone()
    with MaskGuard(model, masks, {"conv": (frozen, values)}) as guard:
        assert (model.conv.weight[frozen] == 0.25).all()  # attach writes the frozen values
        for _ in range(10):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            assert (model.conv.weight.grad[frozen] == 0).all() and (model.conv.weight.grad[~masks["conv"]] == 0).all()
            optimizer.step()
            guard.after_step()
            assert (model.conv.weight[frozen] == 0.25).all()
            assert pruned_weights_are_zero(model, masks)
    assert not torch.equal(model.conv.weight.detach()[free], start)  # the free kept weights trained
    # a frozen entry outside the mask stays pruned: zero wins
    outside = ~masks["conv"]
    with MaskGuard(model, masks, {"conv": (outside, values)}):
        assert pruned_weights_are_zero(model, masks)


class TinyBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
], ids=["sgd-momentum-wd", "adam-wd"])
def test_the_bn_of_a_pruned_filter_is_zeroed_at_the_hard_prune_and_held_there(make_optimizer):
    torch.manual_seed(0)
    model = TinyBN()
    masks = magnitude_masks(model, {"conv": {"sparsity": 0.5, "structure": "filter"}})
    pruned = ~masks["conv"].flatten(1).any(1)  # (4,): two whole filters
    assert int(pruned.sum()) == 2
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,))
    for _ in range(3):  # stale optimizer state at the BN entries of the filters about to go
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    hard_prune(model, masks)
    bn_zero = lambda: bool((model.bn.weight[pruned] == 0).all() and (model.bn.bias[pruned] == 0).all())  # noqa: E731
    assert bn_zero() and model.bn.weight[~pruned].ne(0).all()
    stale_state_moved_them = False
    with MaskGuard(model, masks) as guard:
        for _ in range(10):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            assert (model.bn.weight.grad[pruned] == 0).all() and (model.bn.bias.grad[pruned] == 0).all()
            optimizer.step()
            stale_state_moved_them |= not bn_zero()
            guard.after_step()
            assert bn_zero() and pruned_weights_are_zero(model, masks)
    assert stale_state_moved_them
    # the pruned channels are exactly 0 after BN in both modes, whatever the running statistics
    for train in (True, False):
        model.train(train)
        assert (model.bn(model.conv(x))[:, pruned] == 0).all()
