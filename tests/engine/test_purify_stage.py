"""The purify stage from a recipe: structured ADMM -> retrain -> P-RM, a smaller network that reloads."""
import json

import pytest
import torch
import yaml

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
    # no validation in the recipe: a tenth of the training digits is held out for purify's choices, and the
    # resolved recipe says so; the test set only reports
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["validation"] == 0.1
    assert done.selected_on == "validation" and "validation_accuracy" in done.before
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


@pytest.mark.parametrize("validation, held", [(None, 400), (0.25, 1000), (300, 300), (0, 0)])
def test_a_recipe_that_chooses_holds_out_a_share_by_default(validation, held):
    """With a purify stage and no validation a 0.1 share of the training set is held out (400 of the 4,000
    sample digits that train when 1,000 test, the same draw as validation = 400); a share or a count is held out as given; an explicit 0
    keeps every digit for training (purify then chooses on the test set and says so). Without a choosing stage
    nothing is held out by default."""
    stages = [{"kind": "magnitude", "targets": {"*": 0.5}, "epochs": 0.1}, {"kind": "purify"}]
    recipe = parse_recipe({"device": "cpu", "stages": stages, **({} if validation is None else
                                                                 {"validation": validation})})
    assert recipe.validation == (0.1 if validation is None else validation)
    session = Session(recipe)
    assert (session.data.n_validation, session.data.n_train) == (held, 4000 - held)
    if held == 400:  # a share holds out the same digits as the count it comes to
        by_count = Session(parse_recipe({"device": "cpu", "validation": 400}))
        x, y = next(iter(session.data.validation_batches()))
        x2, y2 = next(iter(by_count.data.validation_batches()))
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert parse_recipe({"stages": stages[:1]}).validation == 0
    for bad in (-1, 1.0, 1.5):
        with pytest.raises(RecipeError, match=rf"validation = {bad}: give a count .* or a share"):
            parse_recipe({"validation": bad})


def test_evaluating_on_a_validation_set_that_was_not_held_out_is_refused():
    session = Session(parse_recipe({"device": "cpu"}))
    with pytest.raises(RecipeError, match="no validation set"):
        session.evaluate(split="validation")


def test_purify_refuses_a_model_that_nothing_pruned_before_any_work():
    """On an unpruned network P-RM has nothing to remove: the recipe check and the session refuse it in one
    line, before any stage starts (no StageStarted, no record, the model untouched)."""
    with pytest.raises(RecipeError, match=r"stages\[1\] \(purify\): nothing is pruned before it"):
        parse_and_check({"device": "cpu", "stages": [{"kind": "pretrain", "epochs": 0.1},
                                                       {"kind": "purify"}]})
    # a stage that prunes before it, or a pruned start checkpoint, makes it valid
    parse_and_check({"device": "cpu", "stages": [{"kind": "magnitude", "targets": {"*": 0.5}, "epochs": 0.1},
                                                   {"kind": "purify"}]})
    events = []
    session = Session(parse_recipe({"device": "cpu", "seed": 5}))
    session.subscribe(events.append)
    weights = {k: v.clone() for k, v in session.model.state_dict().items()}
    with pytest.raises(RecipeError, match="purify: nothing is pruned before it: P-RM removes"):
        session.run_stage(parse_recipe({"stages": [{"kind": "purify"}]}).stages[0])
    assert events == [] and session.records == [] and session.stage_index == 0
    assert all(torch.equal(weights[k], v) for k, v in session.model.state_dict().items())


def parse_and_check(recipe: dict) -> None:
    from admm_explorer.engine.session import check_recipe

    check_recipe(parse_recipe(recipe))


def test_a_purify_that_finds_nothing_to_remove_changes_nothing():
    """10% unstructured pruning leaves every filter and column near its layer's mean norm: no threshold of
    the sweep purifies anything and no channel is unused, so P-RM neither retrains nor shrinks; the table
    compares the network with itself (before == after) and says so."""
    from admm_explorer.engine import ModelShrunk

    events = []
    session = Session(parse_recipe({"device": "cpu", "seed": 5}))
    session.run_stage(parse_recipe({"stages": [{"kind": "magnitude", "targets": {"*": 0.1},
                                                "epochs": 0.05}]}).stages[0])
    session.subscribe(events.append)
    model, masks = session.model, dict(session.masks)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    record = session.run_stage(parse_recipe({"stages": [{"kind": "purify", "taus": [0.05], "latency": False,
                                                         "retrain_epochs": 1}]}).stages[0])
    done = next(e for e in events if isinstance(e, PurifyDone))
    assert not done.changed and done.removed == {} and done.before == done.after
    assert not any(isinstance(e, ModelShrunk) for e in events)
    assert not [e for e in events if e.kind == "batch_ended"]  # the retrain did not run
    assert session.model is model and session.arch is None and record.accuracy == done.before["accuracy"]
    assert all(torch.equal(weights[k], v) for k, v in session.model.state_dict().items())
    assert all(torch.equal(session.masks[k], masks[k]) for k in masks)


def test_after_a_shrink_the_session_describes_the_shrunk_layers(tmp_path):
    """ModelShrunk (and a later session started from the shrunk checkpoint) describe the layers as they are
    now, with the dense network's weight count beside them; the compression compares with the dense one."""
    from admm_explorer.engine import ModelShrunk, RunStarted
    from admm_explorer.engine.checkpoints import save

    events = []
    session = Session(parse_recipe({"device": "cpu", "seed": 5}))
    session.subscribe(events.append)
    for stage in parse_recipe({"stages": [
            {"kind": "magnitude", "targets": {"conv2": {"sparsity": 0.6, "structure": "filter"},
                                              "fc1": {"sparsity": 0.9, "structure": "filter"}}, "epochs": 0.05},
            {"kind": "purify", "taus": [0.05], "latency": False, "retrain_epochs": 0}]}).stages:
        session.run_stage(stage)
    shrunk = next(e for e in events if isinstance(e, ModelShrunk))
    layers = session.prunable()
    assert shrunk.dense_weights == 430_500
    assert {n: i["shape"] for n, i in shrunk.layers.items()} == {n: list(m.weight.shape) for n, m in layers.items()}
    assert shrunk.layers["conv2"]["shape"][0] <= 20 and shrunk.layers["fc1"]["shape"][0] <= 50
    nonzero = sum(i["nonzero"] for i in shrunk.layers.values())
    assert nonzero == sum(int(torch.count_nonzero(m.weight)) for m in layers.values())
    assert session.compression() == pytest.approx(430_500 / nonzero)
    path = save(session, tmp_path / "purified.pt", 2, "purify")
    again = Session(parse_recipe({"device": "cpu", "start": str(path)}))
    started = []
    again.subscribe(started.append)
    again.announce()
    assert isinstance(started[0], RunStarted) and started[0].layers == shrunk.layers
    assert started[0].dense_weights == 430_500
