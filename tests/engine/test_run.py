"""Short real runs on the embedded sample: run folder, events, determinism, stop, resume, failures."""
import json
import threading

import pytest
import torch

from admm_explorer.engine import BatchEnded, Session, StageFailed, run_recipe
from admm_explorer.recipe import RecipeError, parse_recipe


def recipe(**overrides):
    data = {"model": "lenet5", "dataset": "mnist-sample", "device": "cpu", "seed": 1,
            "stages": [{"kind": "pretrain", "epochs": 0.5, "eval_every": 0.25},
                       {"kind": "pretrain", "epochs": 0.25, "optimizer": {"name": "sgd", "lr": 0.01}}]}
    data.update(overrides)
    return parse_recipe(data)


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def comparable(events):
    return [{k: v for k, v in e.items() if k not in ("time", "checkpoint", "seconds", "run_dir")}
            for e in events if e["kind"] in ("evaluation_done", "batch_ended", "stage_ended")]


def test_run_folder_and_events(tmp_path):
    seen = []
    summary = run_recipe(recipe(), out=tmp_path / "run", subscribers=(seen.append,))
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"recipe.yaml", "environment.json", "metrics.jsonl", "checkpoints",
                                               "state.json", "summary.json"}
    kinds = [e.kind for e in seen if e.kind != "batch_ended"]
    assert kinds == ["run_started", "stage_started", "evaluation_done", "evaluation_done", "stage_ended",
                     "stage_started", "evaluation_done", "stage_ended", "run_finished"]
    batches = [e for e in seen if isinstance(e, BatchEnded)]
    assert len(batches) == 32 + 16  # 63 batches an epoch: half and a quarter, rounded
    assert [e.step for e in batches[:32]] == list(range(1, 33))
    # metrics.jsonl holds the same events, in order
    assert [e["kind"] for e in metrics(run)] == [e.kind for e in seen]
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert 0.8 < on_disk["accuracy"] <= 1 and on_disk["compression"] == 1.0
    assert on_disk["layers"]["fc1"] == {"weights": 400000, "nonzero": 400000, "sparsity": 0.0}
    assert [s["kind"] for s in on_disk["stages"]] == ["pretrain", "pretrain"]
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    resolved = (run / "recipe.yaml").read_text()
    assert "weight_decay: 0.0" in resolved and "eval_every: 0.25" in resolved
    # checkpoints load with weights_only and reproduce the final accuracy
    ckpt = torch.load(run / "checkpoints" / "stage1-pretrain.pt", weights_only=True)
    session = Session(recipe(stages=[], start=run / "checkpoints" / "stage1-pretrain.pt"))
    assert session.evaluate()[1] == on_disk["accuracy"]
    assert ckpt["kind"] == "pretrain" and ckpt["stage"] == 1


def test_same_seed_same_metrics(tmp_path):
    run_recipe(recipe(), out=tmp_path / "a")
    run_recipe(recipe(), out=tmp_path / "b")
    run_recipe(recipe(seed=2), out=tmp_path / "c")
    a, b, c = (comparable(metrics(tmp_path / x)) for x in "abc")
    assert a == b
    assert a != c


def test_stop_from_another_thread_then_resume_matches(tmp_path):
    full = tmp_path / "full"
    run_recipe(recipe(), out=full)
    stopped = tmp_path / "stopped"
    holder = {}
    steps = []

    def stop_in_second_stage(event):
        if isinstance(event, BatchEnded):
            steps.append((event.stage, event.step))
            if event.stage == 1 and event.step == 5:
                # Stop arrives from another thread, as from the dashboard
                t = threading.Thread(target=holder["session"].stop)
                t.start()
                t.join()

    summary = run_recipe(recipe(), out=stopped, subscribers=(stop_in_second_stage,),
                         on_session=lambda s: holder.__setitem__("session", s))
    assert summary["status"] == "stopped"
    assert steps[-1] == (1, 5)  # ended at the next batch
    state = json.loads((stopped / "state.json").read_text())
    assert state["status"] == "stopped" and len(state["stages"]) == 1
    assert (stopped / "checkpoints" / "stage0-pretrain.pt").exists()
    assert not (stopped / "checkpoints" / "stage1-pretrain.pt").exists()
    resumed = run_recipe(None, resume=stopped)
    assert resumed["status"] == "finished"
    assert comparable(metrics(stopped)) == comparable(metrics(full))
    final_full = json.loads((full / "summary.json").read_text())
    assert resumed["accuracy"] == final_full["accuracy"]
    assert [s["accuracy"] for s in resumed["stages"]] == [s["accuracy"] for s in final_full["stages"]]
    with pytest.raises(RecipeError, match="already finished"):
        run_recipe(None, resume=stopped)


def test_non_finite_loss_stops_with_a_message(tmp_path):
    bad = recipe(stages=[{"kind": "pretrain", "epochs": 1,
                          "optimizer": {"name": "sgd", "lr": 1e12, "momentum": 0.9}}])
    with pytest.raises(StageFailed, match="the loss became (nan|inf).*Lower the learning rate"):
        run_recipe(bad, out=tmp_path / "nan")
    state = json.loads((tmp_path / "nan" / "state.json").read_text())
    assert state["status"] == "failed"
    assert metrics(tmp_path / "nan")[-1]["kind"] == "run_failed"
    assert json.loads((tmp_path / "nan" / "summary.json").read_text())["status"] == "failed"


def test_a_failed_stage_gives_back_the_model_it_started_with():
    session = Session(recipe(stages=[]))
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    bad = parse_recipe({"stages": [{"kind": "pretrain", "epochs": 1,
                                    "optimizer": {"name": "sgd", "lr": 1e12, "momentum": 0.9}}]}).stages[0]
    with pytest.raises(StageFailed):
        session.run_stage(bad)
    after = session.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert session.evaluate()[1] > 0.05  # finite, usable: the user can fix the setting and go on


def test_bad_folders_and_checkpoints(tmp_path):
    run_recipe(recipe(stages=[{"kind": "pretrain", "epochs": 0.05}]), out=tmp_path / "done")
    with pytest.raises(RecipeError, match="already holds a run"):
        run_recipe(recipe(), out=tmp_path / "done")
    (tmp_path / "file").write_text("")
    with pytest.raises(RecipeError, match="not writable"):
        run_recipe(recipe(), out=tmp_path / "file" / "sub")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage")
    with pytest.raises(RecipeError, match="corrupt or not a checkpoint"):
        run_recipe(recipe(start=corrupt), out=tmp_path / "x")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3, 3)}}, foreign)
    with pytest.raises(RecipeError, match="does not fit this model"):
        run_recipe(recipe(start=foreign), out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing started


def test_a_validation_set_is_never_one_the_start_checkpoint_trained_on(tmp_path):
    # too large for the 4,000 training digits: refused by the recipe check, before any folder exists
    with pytest.raises(RecipeError, match="validation = 4000: the training set has only 4000 examples"):
        run_recipe(recipe(validation=4000), out=tmp_path / "big")
    assert not (tmp_path / "big").exists()

    short = [{"kind": "pretrain", "epochs": 0.05}]
    run_recipe(recipe(stages=short), out=tmp_path / "all")  # trained on all 4,000
    run_recipe(recipe(stages=short, validation=300), out=tmp_path / "held")
    trained_on_all = tmp_path / "all" / "checkpoints" / "stage0-pretrain.pt"
    held = tmp_path / "held" / "checkpoints" / "stage0-pretrain.pt"
    assert torch.load(held, weights_only=True)["held_out"] == {"dataset": "mnist-sample", "pool": 4000,
                                                               "validation": 300}
    with pytest.raises(RecipeError, match="trained with validation = 0 of 4000 .* may have trained on the "
                                          "validation = 300 examples"):
        Session(recipe(start=trained_on_all, validation=300))
    with pytest.raises(RecipeError, match="trained with validation = 300 of 4000 .* validation = 200"):
        Session(recipe(start=held, validation=200))  # another count draws other examples
    assert Session(recipe(start=held, validation=300)).data.n_validation == 300
    assert Session(recipe(start=trained_on_all)).data.validation_batches is None  # no validation: no constraint


def test_divergence_without_nan_fails_the_stage_and_names_the_cause(tmp_path):
    runaway = recipe(stages=[{"kind": "pretrain", "epochs": 1, "optimizer": {"name": "adam", "lr": 10.0}}])
    with pytest.raises(StageFailed, match=r"training diverged: the loss rose from 2\.\d+ to .* the learning rate "
                                          r"\(10\) is likely too high"):
        run_recipe(runaway, out=tmp_path / "lr")
    assert json.loads((tmp_path / "lr" / "state.json").read_text())["status"] == "failed"
    frozen = recipe(stages=[{"kind": "pretrain", "epochs": 1, "optimizer": {"name": "sgd", "lr": 1e-9}}])
    with pytest.raises(StageFailed, match=r"after 1 epochs the test accuracy is .*chance level"):
        run_recipe(frozen, out=tmp_path / "chance")


def test_an_admm_stage_that_wrecks_the_network_is_undone(pretrained):
    from admm_explorer.engine.stages.pruning import AdmmSpec

    session = Session(recipe(stages=[], start=pretrained))
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    huge_rho = AdmmSpec(epochs=0.5, update_every=0.1, rho={"init": 1000, "max": 1000, "schedule": "constant"},
                        targets={"conv1": 0.8, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93})
    with pytest.raises(StageFailed, match=r"ADMM lowered the test accuracy from 9\d\.\d+% to .* rho is likely too "
                                          r"large \(max 1000\)"):
        session.run_stage(huge_rho)
    assert all(torch.equal(before[k], v) for k, v in session.model.state_dict().items())
