"""The BatchNorm of a pruned filter is decided at the hard prune (gamma = beta = 0) and held there, so the
retrained network, the network purify starts from and the shrunk network are one function (ResNet-20)."""
import copy

import pytest
import torch

from admm_explorer.engine import PurifyDone, Session, StageEnded
from admm_explorer.engine.checkpoints import save
from admm_explorer.prm import masked, shrink
from admm_explorer.prm.paths import pruned_bn_channels
from admm_explorer.recipe import parse_recipe

FILTERS = {name: {"sparsity": 0.3, "structure": "filter"}
           for name in ("layers.0.0.conv1", "layers.0.1.conv2", "layers.1.0.conv1", "layers.2.1.conv1")}
RECIPE = {"model": "resnet20", "dataset": "fake", "fake_size": 160, "batch_size": 32, "test_batch_size": 32,
          "device": "cpu", "seed": 1}
STAGES = [{"kind": "pretrain", "epochs": 0.4},
          {"kind": "admm", "epochs": 0.4, "update_every": 0.2, "targets": FILTERS},
          {"kind": "retrain", "epochs": 0.4}]


def stage(session, data):
    return session.run_stage(parse_recipe({"stages": [data]}).stages[0])


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """(session after pretrain -> admm -> retrain, its events, a copy of the retrained model, its masks,
    its checkpoint)."""
    session = Session(parse_recipe(RECIPE))
    events = []
    session.subscribe(events.append)
    for data in STAGES:
        stage(session, data)
    path = save(session, tmp_path_factory.mktemp("retrained") / "retrained.pt", 2, "retrain")
    return session, events, copy.deepcopy(session.model).eval(), dict(session.masks), path


def bn_entries_zero(model, masks) -> bool:
    held = pruned_bn_channels(model, masks)
    assert len(held) == len(FILTERS)  # every pruned conv has a BN right after it
    return all(bool(model.get_submodule(bn).weight[c].eq(0).all() and model.get_submodule(bn).bias[c].eq(0).all())
               for bn, c in held.items())


def test_purify_starts_from_the_network_the_retrain_ended_with(retrained):
    session, events, *_ = retrained
    retrain_accuracy = next(e.accuracy for e in events if isinstance(e, StageEnded) and e.stage_kind == "retrain")
    stage(session, {"kind": "purify", "retrain_epochs": 0, "latency": False, "taus": [0.05]})
    done = next(e for e in events if isinstance(e, PurifyDone))
    assert done.selected_on == "test" and done.before["accuracy"] == retrain_accuracy


def test_retrained_masked_and_shrunk_networks_give_the_same_logits(retrained):
    _, _, model, masks, _ = retrained
    x = torch.randn(8, 3, 32, 32)
    before = masked(model, masks).eval()  # what purify measures
    small = shrink(before, x[:1]).eval()  # what it hands on (nothing purified)
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(before(x), logits)
        assert (small(x) - logits).abs().max() <= 1e-5
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert bn_entries_zero(model, masks)


def test_a_resumed_run_holds_the_bn_of_pruned_filters_from_the_saved_masks(retrained):
    *_, model, _, path = retrained
    resumed = Session(parse_recipe({**RECIPE, "start": str(path)}))
    stage(resumed, {"kind": "pretrain", "epochs": 0.2, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}})
    assert bn_entries_zero(resumed.model, resumed.masks)
    assert not torch.equal(resumed.model.layers[0][0].bn1.weight, model.layers[0][0].bn1.weight)  # it trained
