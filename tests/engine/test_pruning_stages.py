"""ADMM, retrain, progressive and magnitude stages on the embedded sample: exact sparsity, zeros that stay
zero, one ADMM round per period with residuals and histograms, clear failures."""
import math

import pytest
import torch

from admm_explorer.admm import LayerTarget
from admm_explorer.admm.projections import keep_count
from admm_explorer.engine import AdmmRound, EvaluationDone, Session, StageFailed
from admm_explorer.recipe import RecipeError, parse_recipe

PAPER = {"conv1": 0.8, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93}
SHAPES = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}


def session_from(start, stages=()):
    return Session(parse_recipe({"device": "cpu", "seed": 3, "start": str(start), "stages": list(stages)}))


def stage(session, data):
    return session.run_stage(parse_recipe({"stages": [data]}).stages[0])


def test_admm_rounds_then_retrain_meets_the_targets_exactly(pretrained):
    session = session_from(pretrained)
    events = []
    session.subscribe(events.append)
    stage(session, {"kind": "admm", "epochs": 1, "update_every": 0.25, "eval_every": 1,
                    "rho": {"init": 0.01, "schedule": "geometric", "factor": 2, "max": 1}, "targets": PAPER})
    rounds = [e for e in events if isinstance(e, AdmmRound)]
    assert [r.round for r in rounds] == [1, 2, 3, 4]
    assert [r.step for r in rounds] == [16, 32, 47, 63]  # 63 batches: the batches nearest 15.75 * k
    for r in rounds:
        assert set(r.layers) == set(PAPER)
        for name, layer in r.layers.items():
            assert sum(layer["w_counts"]) == SHAPES[name]
            assert sum(layer["kept_counts"]) == keep_count(SHAPES[name], PAPER[name])
            assert layer["sparsity"] == pytest.approx(1 - keep_count(SHAPES[name], PAPER[name]) / SHAPES[name])
            assert len(layer["edges"]) == len(layer["w_counts"]) + 1
    assert [r.layers["fc1"]["rho"] for r in rounds] == pytest.approx([0.02, 0.04, 0.08, 0.16])
    # W is pulled towards Z: the primal residual of fc1 falls over the rounds
    primal = [r.layers["fc1"]["primal"] for r in rounds]
    assert primal[-1] < primal[0]
    # ADMM alone prunes nothing yet
    assert session.compression() == 1.0

    stage(session, {"kind": "retrain", "epochs": 0.5})
    layers = session.layer_stats()
    for name, s in PAPER.items():
        assert layers[name]["nonzero"] == keep_count(SHAPES[name], s)
    kept = sum(keep_count(SHAPES[n], s) for n, s in PAPER.items())
    assert kept == 6_050
    assert session.compression() == pytest.approx(430_500 / 6_050)  # 71.2x, paper 1's rates
    assert session.records[-1].accuracy > 0.6  # far above chance after a half-epoch retrain at 71x


def test_progressive_carries_zeros_forward(pretrained):
    session = session_from(pretrained)
    phases = []
    session.subscribe(lambda e: phases.append(e.phase) if isinstance(e, EvaluationDone) else None)
    masks_after_step = []
    session.subscribe(lambda e: masks_after_step.append({k: v.clone() for k, v in session.masks.items()})
                      if isinstance(e, EvaluationDone) and e.phase.startswith("retrain") else None)
    stage(session, {"kind": "progressive", "targets": {"*": 0.99}, "steps": 2, "admm_epochs": 0.25,
                    "retrain_epochs": 0.25, "update_every": 0.125, "eval_every": 0.25})
    assert phases == ["admm 1/2", "retrain 1/2", "admm 2/2", "retrain 2/2"]
    first, second = masks_after_step
    for name in SHAPES:
        assert not bool((second[name] & ~first[name]).any())  # nothing pruned in step 1 came back
        # geometric plan: keep sqrt(0.01) = 10% after step 1, 1% after step 2
        assert int(first[name].sum()) == keep_count(SHAPES[name], 1 - math.sqrt(0.01))
        assert int(second[name].sum()) == keep_count(SHAPES[name], 0.99)
    assert session.targets["fc1"] == LayerTarget(sparsity=0.99)


def test_magnitude_in_steps(pretrained):
    session = session_from(pretrained)
    stage(session, {"kind": "magnitude", "targets": PAPER, "epochs": 0.5, "steps": 2})
    stats = session.layer_stats()
    assert all(stats[n]["nonzero"] == keep_count(SHAPES[n], s) for n, s in PAPER.items())
    # magnitude keeps the largest weights of the start model where it prunes one-shot
    one_shot = session_from(pretrained)
    w = one_shot.model.fc2.weight.detach().abs().flatten()
    stage(one_shot, {"kind": "magnitude", "targets": {"fc2": 0.5}, "epochs": 0.02})
    kept = one_shot.masks["fc2"].flatten()
    assert float(w[kept].min()) >= float(w[~kept].max())


def test_rho_too_large_fails_naming_rho(pretrained):
    session = session_from(pretrained)
    with pytest.raises(StageFailed, match="rho"):
        stage(session, {"kind": "admm", "epochs": 0.5, "update_every": 0.05, "targets": {"*": 0.9},
                        "rho": {"init": 1e4, "schedule": "geometric", "factor": 10, "max": 1e30},
                        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}})
    assert all(torch.isfinite(p).all() for p in session.model.parameters())


def test_targets_are_checked_before_any_work(tmp_path):
    with pytest.raises(RecipeError, match=r"stages\[1\] \(admm\): unknown layer 'fc3'.*did you mean fc2, fc1"):
        from admm_explorer.engine import run_recipe
        run_recipe(parse_recipe({"stages": [{"kind": "pretrain", "epochs": 1},
                                            {"kind": "admm", "targets": {"fc3": 0.9}}]}), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(RecipeError, match=r"targets.fc1.sparsity.*less than 1|0 <= sparsity < 1"):
        parse_recipe({"stages": [{"kind": "admm", "targets": {"fc1": {"sparsity": 1.0}}}]})
    with pytest.raises(RecipeError, match="cannot be pruned"):
        check = parse_recipe({"stages": [{"kind": "retrain", "targets": {"relu": 0.5}}]})
        from admm_explorer.engine.session import check_recipe
        check_recipe(check)
    with pytest.raises(RecipeError, match="at least one layer"):
        parse_recipe({"stages": [{"kind": "admm", "targets": {}}]})


def test_retrain_without_targets_says_what_to_do():
    session = Session(parse_recipe({"device": "cpu"}))
    with pytest.raises(StageFailed, match="run an admm, progressive or reweighted stage first"):
        stage(session, {"kind": "retrain", "epochs": 0.1})


def test_run_exports_the_pruned_model_in_both_forms(tmp_path, pretrained):
    from admm_explorer.admm.masks import from_prune_form, to_prune_form
    from admm_explorer.engine import run_recipe
    from admm_explorer.models import build_model

    run_recipe(parse_recipe({"device": "cpu", "start": str(pretrained), "stages": [
        {"kind": "admm", "epochs": 0.2, "update_every": 0.1, "targets": {"*": 0.9}},
        {"kind": "retrain", "epochs": 0.1}]}), out=tmp_path / "run")
    plain = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    model = build_model("lenet5")
    model.load_state_dict(plain)  # a plain state_dict: no prune reparametrisation needed
    assert int((model.fc1.weight == 0).sum()) == 400_000 - keep_count(400_000, 0.9)
    pruned_form = torch.load(tmp_path / "run" / "model_prune_form.pt", weights_only=True)
    assert {"fc1.weight_orig", "fc1.weight_mask"} <= set(pruned_form) and "fc1.weight" not in pruned_form
    other = build_model("lenet5")
    to_prune_form(other, {n: torch.ones_like(p, dtype=torch.bool) for n, p in
                          (("conv1", other.conv1.weight), ("conv2", other.conv2.weight),
                           ("fc1", other.fc1.weight), ("fc2", other.fc2.weight))})
    other.load_state_dict(pruned_form)
    from_prune_form(other)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model.eval()(x), other.eval()(x))


def test_admm_stops_at_the_first_round_whose_residuals_are_within_stop(pretrained):
    """stop: {primal, dual}: the stage ends at the first round where every layer has ||W - Z|| <= primal ||W||
    and rho ||Z - Z'|| <= dual ||rho U|| (checked here from the events' own figures), evaluated and finished;
    a tolerance no round meets runs the whole budget."""
    rounds = {}
    for name, tolerance in (("loose", {"primal": 0.99, "dual": 0.99}), ("tight", {"primal": 1e-9})):
        session = session_from(pretrained)
        events = []
        session.subscribe(events.append)
        record = stage(session, {"kind": "admm", "epochs": 1, "update_every": 0.125, "eval_every": 1,
                                 "rho": {"init": 0.01, "schedule": "geometric", "factor": 2, "max": 1},
                                 "targets": PAPER, "stop": tolerance})
        assert record.status == "finished"
        rounds[name] = [e for e in events if isinstance(e, AdmmRound)]
        met = [all(v["primal"] <= tolerance["primal"] * v["w_norm"] and
                   ("dual" not in tolerance or v["dual"] <= tolerance["dual"] * v["rho_u_norm"])
                   for v in e.layers.values()) for e in rounds[name]]
        assert [e.converged for e in rounds[name]] == met
        evaluations = [e for e in events if isinstance(e, EvaluationDone)]
        assert evaluations[-1].step == rounds[name][-1].step if any(met) else evaluations[-1].epoch == 1
    assert rounds["loose"][-1].converged and not any(e.converged for e in rounds["loose"][:-1])
    assert len(rounds["loose"]) < 8 == len(rounds["tight"]) and not any(e.converged for e in rounds["tight"])
    with pytest.raises(RecipeError, match="stop.primal"):
        parse_recipe({"stages": [{"kind": "admm", "targets": PAPER, "stop": {"primal": 0}}]})


def test_filter_column_admm_keeps_each_rate_and_progressive_steps_both(pretrained):
    """P-RM's combined ADMM from a recipe: one Z/U pair per constraint set; the retrain keeps exactly the
    filter rate's rows and the column rate's columns. A progressive step shrinks both keep fractions by the
    same power."""
    targets = {"conv2": {"filter": 0.5, "column": 0.7}, "fc1": {"filter": 0.6, "column": 0.9}}
    rows = {"conv2": (50, 500), "fc1": (500, 800)}  # GEMM view: filters x columns

    def kept_rows_cols(session, name):
        w = session.prunable()[name].weight.detach().reshape(rows[name][0], -1) != 0
        return int(w.any(1).sum()), int(w.any(0).sum()), int(w.sum())

    session = session_from(pretrained)
    events = []
    session.subscribe(events.append)
    stage(session, {"kind": "admm", "epochs": 0.5, "update_every": 0.25, "targets": targets})
    rounds = [e for e in events if isinstance(e, AdmmRound)]
    for name, t in targets.items():
        r, c = keep_count(rows[name][0], t["filter"]), keep_count(rows[name][1], t["column"])
        assert sum(rounds[-1].layers[name]["kept_counts"]) == r * c  # the two Z's supports intersected
        assert rounds[-1].layers[name]["sparsity"] == pytest.approx(1 - r * c / math.prod(rows[name]))
    stage(session, {"kind": "retrain", "epochs": 0.25})
    for name, t in targets.items():
        r, c = keep_count(rows[name][0], t["filter"]), keep_count(rows[name][1], t["column"])
        assert kept_rows_cols(session, name) == (r, c, r * c)

    session = session_from(pretrained)
    after_first = {}
    session.subscribe(lambda e: after_first.setdefault("conv2", kept_rows_cols(session, "conv2"))
                      if isinstance(e, EvaluationDone) and e.phase == "retrain 1/2" else None)
    stage(session, {"kind": "progressive", "targets": targets, "steps": 2, "admm_epochs": 0.25,
                    "retrain_epochs": 0.125, "update_every": 0.125, "eval_every": 0.125})
    for name, t in targets.items():
        r, c = keep_count(rows[name][0], t["filter"]), keep_count(rows[name][1], t["column"])
        assert kept_rows_cols(session, name) == (r, c, r * c)
    # step 1 of 2 keeps sqrt of each keep fraction: filters sqrt(0.5) of 50, columns sqrt(0.3) of 500
    r, c = keep_count(50, 1 - math.sqrt(0.5)), keep_count(500, 1 - math.sqrt(0.3))
    assert after_first["conv2"] == (r, c, r * c) == (35, 274, 35 * 274)


def test_progressive_candidates_keep_the_best_partial_solutions_by_validation_accuracy():
    """candidates 2, 2 steps: 2 runs from the start, 2 from each of them; the ranking is by the held-out
    digits' accuracy, each run descends from the run it names, and the stage ends on the best one's weights."""
    from admm_explorer.engine.stages.dense import PretrainSpec

    recipe = parse_recipe({"device": "cpu", "seed": 3, "validation": 400})
    session = Session(recipe)
    session.run_stage(PretrainSpec(epochs=1, eval_every=1))
    events, finals, masks = [], {}, {}
    session.subscribe(events.append)

    def capture(e):  # the last evaluation of a retrain phase is at its end: that run's result
        if isinstance(e, EvaluationDone) and e.phase.startswith("retrain"):
            name = e.phase.rsplit("candidate ", 1)[1]
            finals[name] = {k: v.clone() for k, v in session.model.state_dict().items()}
            masks[name] = {k: v.clone() for k, v in session.masks.items()}
    session.subscribe(capture)
    spec = parse_recipe({"stages": [{"kind": "progressive", "targets": {"*": 0.9}, "steps": 2, "candidates": 2,
                                     "admm_epochs": 0.125, "retrain_epochs": 0.125, "update_every": 0.0625,
                                     "eval_every": 0.125}]}).stages[0]
    assert spec.step_runs() == 2 + 4 and spec.chooses()
    session.run_stage(spec)

    ranked = [e for e in events if e.kind == "candidates_ranked"]
    assert [(e.step, e.steps, e.selected_on) for e in ranked] == [(1, 2, "validation"), (2, 2, "validation")]
    assert sorted(c["candidate"] for c in ranked[0].ranked) == ["1", "2"]
    assert sorted(c["candidate"] for c in ranked[1].ranked) == ["1.1", "1.2", "2.1", "2.2"]
    assert [c["kept"] for c in ranked[0].ranked] == [True, True]
    assert [c["kept"] for c in ranked[1].ranked] == [True, False, False, False]
    probe = Session(recipe)
    for e in ranked:  # each reported accuracy is that run's weights on the held-out digits, best first
        accuracies = [c["accuracy"] for c in e.ranked]
        assert accuracies == sorted(accuracies, reverse=True)
        for c in e.ranked:
            probe.model.load_state_dict(finals[c["candidate"]])
            assert probe.evaluate(split="validation")[1] == c["accuracy"]
    for child in ("1.1", "1.2", "2.1", "2.2"):  # a run prunes on from its parent: nothing pruned comes back
        parent = child.split(".")[0]
        assert all(not bool((masks[child][k] & ~masks[parent][k]).any()) for k in SHAPES)
    assert len({tuple(finals[c]["fc1.weight"].flatten()[:50].tolist()) for c in finals}) == 6  # own data orders
    best = ranked[1].ranked[0]["candidate"]
    assert all(torch.equal(session.model.state_dict()[k], finals[best][k]) for k in finals[best])
    assert all(torch.equal(session.masks[k], masks[best][k]) for k in SHAPES)
    assert session.evaluate(split="validation")[1] == ranked[1].ranked[0]["accuracy"]
    assert {k: int(m.sum()) for k, m in session.masks.items()} == {k: keep_count(n, 0.9) for k, n in SHAPES.items()}
    started = [e for e in events if e.kind == "stage_started"][-1]
    per_phase = round(0.125 * len(session.data.train_batches(0)))
    assert [e for e in events if e.kind == "batch_ended"][-1].step == 6 * 2 * per_phase  # 6 runs, 2 phases each
    assert started.epochs == 6 * 0.25  # the stated cost, what progress and ETA count on


@pytest.mark.parametrize("candidates, validation", [(1, 0), (3, 0.1)])
def test_progressive_candidates_hold_out_a_validation_share_by_default(candidates, validation):
    stages = [{"kind": "progressive", "targets": {"*": 0.9}, "candidates": candidates}]
    assert parse_recipe({"stages": stages}).validation == validation
    with pytest.raises(RecipeError, match="candidates"):
        parse_recipe({"stages": [{**stages[0], "candidates": 0}]})


def test_progressive_candidates_without_a_validation_set_choose_on_the_test_set_and_say_so(pretrained):
    session = Session(parse_recipe({"device": "cpu", "seed": 3, "start": str(pretrained), "validation": 0}))
    ranked = []
    session.subscribe(lambda e: ranked.append(e) if e.kind == "candidates_ranked" else None)
    stage(session, {"kind": "progressive", "targets": {"fc1": 0.9}, "steps": 1, "candidates": 2,
                    "admm_epochs": 0.0625, "retrain_epochs": 0.0625, "update_every": 0.0625})
    (only,) = ranked
    assert only.selected_on == "test" and [c["kept"] for c in only.ranked] == [True, False]
    assert session.evaluate()[1] == only.ranked[0]["accuracy"] >= only.ranked[1]["accuracy"]
