"""The purify stage from a recipe: structured ADMM -> retrain -> P-RM, a smaller network that reloads."""
import json

import pytest
import torch

from admm_explorer.engine import PurifyDone, Session, run_recipe
from admm_explorer.prm import load_shrunk
from admm_explorer.recipe import RecipeError, parse_recipe

TARGETS = {"conv1": {"sparsity": 0.5, "structure": "filter"},
           "conv2": {"sparsity": 0.6, "structure": "filter"},
           "fc1": {"sparsity": 0.8, "structure": "filter"}, "fc2": 0.5}


def test_structured_admm_then_purify(tmp_path):
    events = []
    recipe = {"device": "cpu", "seed": 5, "stages": [
        {"kind": "pretrain", "epochs": 0.5, "eval_every": 0.5},
        {"kind": "admm", "epochs": 0.5, "update_every": 0.125, "targets": TARGETS, "eval_every": 0.5},
        {"kind": "retrain", "epochs": 0.25},
        {"kind": "purify", "retrain_epochs": 0.1, "latency": False, "taus": [0.1, 0.5]}]}
    summary = run_recipe(recipe, out=tmp_path / "run", subscribers=(events.append,))
    done = next(e for e in events if isinstance(e, PurifyDone))
    # the filters ADMM removed are gone physically: conv1 keeps 10 of 20 filters at most, conv2 20 of 50
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "stage3-purify.pt", weights_only=True)
    assert ckpt["arch"]["channels"]["conv1"][1] <= 10 and ckpt["arch"]["channels"]["conv2"][1] <= 20
    assert ckpt["arch"]["channels"]["fc1"][1] <= 100  # fc1 rows that fed nothing
    session = Session(parse_recipe({"device": "cpu", "start": str(tmp_path / "run" / "checkpoints" /
                                                                      "stage3-purify.pt")}))
    params = sum(p.numel() for p in session.model.parameters())
    assert summary["params"] == params == done.after["params"] < 431_080
    assert done.before["params"] == 431_080
    assert summary["flops"] == done.after["macs"] < done.before["macs"]
    # the reloaded shrunk checkpoint gives the run's final accuracy, and so does model_shrunk.pt
    assert session.evaluate()[1] == summary["accuracy"] == done.after["accuracy"]
    shrunk = load_shrunk(tmp_path / "run" / "model_shrunk.pt").eval()
    x = torch.randn(8, 1, 28, 28)
    assert torch.allclose(shrunk(x), session.model.eval()(x), atol=1e-6)
    assert [s["tau"] for s in done.sweep] == [0.1, 0.5]
    assert done.tau in (0.0, 0.1, 0.5)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["purify"]["tau"] == done.tau
    # storage after P-RM compares with the original dense network, not with the shrunk one
    storage = summary["storage"]
    shrunk_weights = sum(layer["weights"] for layer in storage["layers"].values())
    assert shrunk_weights < 430_500 and storage["dense_bytes"] == 431_080 * 4
    assert storage["ratio"] == pytest.approx(431_080 * 4 / storage["compressed_bytes"])
    coded = sum(layer["bits"] for layer in storage["layers"].values())
    assert storage["bits_per_weight"] == pytest.approx(coded / 430_500)


def test_a_purify_that_fails_hands_back_the_masked_model(monkeypatch):
    """Any error inside a stage (here one raised by P-RM after the purified copy replaced the model for
    its retrain) leaves the session with the model and masks the stage started from."""
    import admm_explorer.engine.stages.purify as stage

    session = Session(parse_recipe({"device": "cpu", "seed": 5}))
    session.run_stage(parse_recipe({"stages": [{"kind": "magnitude", "targets": {"*": 0.5},
                                                "epochs": 0.05}]}).stages[0])
    model, masks = session.model, dict(session.masks)
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def broken_purify(model, masks, evaluate, tolerance, taus, retrain, **kw):
        import copy
        retrain(copy.deepcopy(model), {k: ~v for k, v in masks.items()})  # swaps the session's model
        raise RuntimeError("broken")

    monkeypatch.setattr(stage, "purify", broken_purify)
    with pytest.raises(RuntimeError, match="broken"):
        session.run_stage(parse_recipe({"stages": [{"kind": "purify", "retrain_epochs": 0.02}]}).stages[0])
    assert session.model is model and session.arch is None
    assert session.masks.keys() == masks.keys() and all(torch.equal(session.masks[k], masks[k]) for k in masks)
    assert all(torch.equal(weights[k], v) for k, v in session.model.state_dict().items())


def test_purify_chooses_tau_on_the_validation_set_and_reports_the_test_set():
    events = []
    session = Session(parse_recipe({"device": "cpu", "seed": 5, "validation": 500}))
    session.subscribe(events.append)
    stages = parse_recipe({"stages": [
        {"kind": "pretrain", "epochs": 0.5},
        {"kind": "magnitude", "epochs": 0.2, "targets": TARGETS},
        {"kind": "purify", "retrain_epochs": 0, "latency": False, "tolerance": 0.004,
         "taus": [0.2, 0.4, 0.6, 0.8]}]}).stages
    for spec in stages[:2]:
        session.run_stage(spec)
    masked_model = session.model
    val_before, test_before = session.evaluate(split="validation")[1], session.evaluate()[1]
    session.run_stage(stages[2])
    done = next(e for e in events if isinstance(e, PurifyDone))
    assert done.selected_on == "validation"
    assert done.before["validation_accuracy"] == val_before and done.before["accuracy"] == test_before
    # the rule, applied to the validation numbers: the last tau before the first beyond the tolerance
    beyond = [s["tau"] for s in done.sweep if val_before - s["accuracy"] > 0.004 + 1e-9] + [1.0]
    assert done.tau == max([s["tau"] for s in done.sweep if s["tau"] < min(beyond)], default=0.0)
    assert done.after["validation_accuracy"] == session.evaluate(split="validation")[1]
    assert done.after["accuracy"] == session.evaluate()[1]
    if done.tau:  # no retrain: the shrunk network is the swept candidate
        assert done.after["validation_accuracy"] == next(s["accuracy"] for s in done.sweep if s["tau"] == done.tau)
    assert session.model is not masked_model


def test_evaluating_on_a_validation_set_that_was_not_held_out_is_refused():
    session = Session(parse_recipe({"device": "cpu"}))
    with pytest.raises(RecipeError, match="no validation set"):
        session.evaluate(split="validation")
