"""Quantization targets in the admm/retrain/progressive/magnitude stages, the storage report, and the
reweighted stage, on the embedded sample: exact level counts, exact compression, clear errors."""
import pytest
import torch

from admm_explorer.admm import ADMM
from admm_explorer.admm.projections import fit_scale, keep_count, snap
from admm_explorer.admm.storage import model_storage
from admm_explorer.engine import AdmmRound, EvaluationDone, Session, StageEnded, StageFailed
from admm_explorer.engine.run import run_recipe
from admm_explorer.models import build_model, prunable_layers
from admm_explorer.recipe import RecipeError, parse_recipe

SIZES = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}


def session_from(start):
    return Session(parse_recipe({"device": "cpu", "seed": 5, "start": str(start)}))


def stage(session, data):
    return session.run_stage(parse_recipe({"stages": [data]}).stages[0])


def allowed_values(bits: int, pruned: bool) -> int:
    """Distinct values a layer may hold: the levels, plus 0.0 when weights are pruned (ternary and up have 0)."""
    return (2 + pruned) if bits == 1 else 2 ** bits - 1


def test_admm_then_retrain_with_bits_leaves_only_the_levels(pretrained):
    session = session_from(pretrained)
    events = []
    session.subscribe(events.append)
    targets = {"conv1": {"bits": 1}, "conv2": {"sparsity": 0.9, "bits": 1}, "fc1": {"sparsity": 0.99, "bits": 3},
               "fc2": {"bits": 2}}
    stage(session, {"kind": "admm", "epochs": 0.5, "update_every": 0.25, "targets": targets,
                    "rho": {"init": 0.01, "factor": 2}})
    rounds = [e for e in events if isinstance(e, AdmmRound)]
    assert rounds and rounds[-1].layers["fc1"]["bits"] == 3 and rounds[-1].layers["conv1"]["target"] is None
    stage(session, {"kind": "retrain", "epochs": 0.4, "eval_every": 0.1})
    layers = prunable_layers(session.model)
    for name, target in targets.items():
        w = layers[name].weight.detach()
        pruned = "sparsity" in target
        assert w.unique().numel() <= allowed_values(target["bits"], pruned), name
        if pruned:  # exactly the kept count is free; everything else is +0.0
            kept = session.masks[name]
            assert int(kept.sum()) == keep_count(SIZES[name], target["sparsity"])
            assert (w[~kept] == 0).all()
    conv2 = layers["conv2"].weight.detach()
    assert conv2[session.masks["conv2"]].abs().unique().numel() == 1  # binary nonzeros: +-alpha
    # one phase per frozen share, in order
    phases = list(dict.fromkeys(e.phase for e in events if isinstance(e, EvaluationDone) and e.stage == 1))
    assert phases == [f"retrain ({p} quantized)" for p in ("50%", "75%", "88%", "100%")]
    # the storage report goes with the stage's end
    ended = [e for e in events if isinstance(e, StageEnded)][-1]
    assert ended.storage == model_storage(session.model)
    assert ended.storage["layers"]["conv1"]["value_bits"] == 1 and ended.storage["layers"]["fc2"]["value_bits"] <= 2
    assert ended.storage["bits_per_weight"] < 0.5 and ended.storage["ratio"] > 20


def test_retrain_freezes_the_largest_magnitudes_first(pretrained):
    session = session_from(pretrained)
    w0 = prunable_layers(session.model)["fc2"].weight.detach().clone()
    seen = {}

    def spy(event):  # the first batch of round one: half of fc2 is on its levels, the largest half
        if isinstance(event, EvaluationDone) and event.phase.startswith("retrain (50%") and "w" not in seen:
            seen["w"] = prunable_layers(session.model)["fc2"].weight.detach().clone()
    session.subscribe(spy)
    stage(session, {"kind": "retrain", "epochs": 0.2, "eval_every": 0.05, "targets": {"fc2": {"bits": 2}},
                    "freeze_shares": [0.5, 1.0]})
    w = seen["w"]
    alpha = fit_scale(w0.flatten(), 2)  # the levels, fitted at the hard prune to all of fc2
    top_half = torch.zeros(w0.numel(), dtype=torch.bool)
    top_half[torch.sort(w0.abs().flatten(), descending=True, stable=True).indices[:2500]] = True
    frozen = w.flatten()[top_half]
    assert torch.equal(frozen, snap(w0.flatten()[top_half], alpha, 2))  # exactly its nearest level
    assert not torch.equal(w.flatten()[~top_half], w0.flatten()[~top_half])  # the rest still trains
    final = prunable_layers(session.model)["fc2"].weight.detach()
    assert torch.equal(final.flatten()[top_half], frozen)  # frozen weights never moved again
    assert final.unique().numel() <= 3


def test_progressive_and_magnitude_with_bits_end_on_levels(pretrained):
    for spec in ({"kind": "progressive", "targets": {"fc1": {"sparsity": 0.95, "bits": 2}}, "steps": 2,
                  "admm_epochs": 0.2, "retrain_epochs": 0.2, "update_every": 0.1, "freeze_shares": [1.0]},
                 {"kind": "magnitude", "targets": {"fc1": {"sparsity": 0.95, "bits": 4}}, "epochs": 0.2}):
        session = session_from(pretrained)
        stage(session, spec)
        bits = spec["targets"]["fc1"]["bits"]
        w = prunable_layers(session.model)["fc1"].weight.detach()
        assert w.unique().numel() <= allowed_values(bits, True)
        assert int(session.masks["fc1"].sum()) == keep_count(400_000, 0.95)


def test_summary_json_reports_storage(pretrained, tmp_path):
    summary = run_recipe({"device": "cpu", "seed": 5, "start": str(pretrained), "stages": [
        {"kind": "magnitude", "targets": {"*": {"sparsity": 0.9, "bits": 2}}, "epochs": 0.2,
         "freeze_shares": [1.0]}]}, out=tmp_path / "run")
    storage = summary["storage"]
    assert storage["dense_bytes"] == 4 * sum(p.numel() for p in build_model("lenet5").parameters())
    assert storage["compressed_bytes"] < storage["dense_bytes"] / 20
    for layer in storage["layers"].values():  # ternary nonzeros: +-alpha, 1-bit codes (2 with filler zeros)
        assert layer["distinct"] == 2
        assert layer["value_bits"] == 1 if layer["positions"] == "bitmap" else layer["value_bits"] in (1, 2)


@pytest.mark.parametrize("data, match", [
    ({"kind": "admm", "targets": {"fc1": {"bits": 9}}}, "bits=9 is not allowed"),
    ({"kind": "admm", "targets": {"fc1": {"bits": 0}}}, "bits=0 is not allowed"),
    ({"kind": "retrain", "targets": {"fc1": {"bits": 2}}, "freeze_shares": [0.5, 0.4, 1.0]}, "increasing shares"),
    ({"kind": "retrain", "targets": {"fc1": {"bits": 2}}, "freeze_shares": [0.5]}, "ending with 1.0"),
    ({"kind": "reweighted", "lam": 0}, "lam"),
    ({"kind": "reweighted", "eps": -1e-3}, "eps"),
    ({"kind": "reweighted", "compression": 0.5}, "compression"),
    ({"kind": "reweighted", "layers": ["fc3"]}, "unknown layer 'fc3'.*did you mean"),
])
def test_bad_quantization_and_reweighted_fields_are_refused_before_any_work(data, match):
    from admm_explorer.engine.session import check_recipe

    with pytest.raises(RecipeError, match=match):
        check_recipe(parse_recipe({"device": "cpu", "stages": [data]}))


def test_reweighted_then_retrain_meets_a_global_compression_exactly(pretrained):
    session = session_from(pretrained)
    events = []
    session.subscribe(events.append)
    stage(session, {"kind": "reweighted", "epochs": 0.5, "update_every": 0.25, "lam": 1e-6, "eps": 1e-3,
                    "rho": {"init": 1e-3, "factor": 1.5}, "compression": 150})
    rounds = [e for e in events if isinstance(e, AdmmRound)]
    assert [r.phase for r in rounds] == ["reweighted admm"] * 2
    for name, layer in rounds[-1].layers.items():
        assert layer["target"] is None and layer["primal"] >= 0 and layer["dual"] >= 0
        assert sum(layer["w_counts"]) == SIZES[name]
    kept = {name: keep_count(SIZES[name], t.sparsity) for name, t in session.targets.items()}
    assert sum(kept.values()) == round(sum(SIZES.values()) / 150)  # a trained LeNet: no layer at the floor
    stage(session, {"kind": "retrain", "epochs": 0.2})
    assert session.compression() == pytest.approx(sum(SIZES.values()) / sum(kept.values()))


def test_reweighted_without_a_target_keeps_the_support_of_z(pretrained):
    session = session_from(pretrained)
    rounds = []
    session.subscribe(lambda e: rounds.append(e) if isinstance(e, AdmmRound) else None)
    stage(session, {"kind": "reweighted", "epochs": 0.5, "update_every": 0.25, "lam": 3e-6,
                    "rho": {"init": 1e-3, "factor": 1.5}, "layers": ["fc1", "fc2"]})
    last = rounds[-1].layers
    assert set(session.targets) == set(session.masks) == {"fc1", "fc2"}
    for name, target in session.targets.items():
        assert target.sparsity == pytest.approx(last[name]["sparsity"], abs=1 / SIZES[name])
    assert 0.5 < session.targets["fc1"].sparsity < 1  # lam drove most of fc1's Z to exactly zero
    support = {name: m.clone() for name, m in session.masks.items()}
    stage(session, {"kind": "retrain", "epochs": 0.1})
    for name, mask in support.items():  # the retrain keeps exactly Z's support, not the largest |W|
        assert torch.equal(session.masks[name], mask)
        assert torch.equal(prunable_layers(session.model)[name].weight.detach() != 0, mask)


def test_reweighted_compression_out_of_reach_fails_before_any_work(pretrained):
    session = session_from(pretrained)
    stage(session, {"kind": "magnitude", "targets": {"conv2": 0.9, "fc1": 0.99}, "epochs": 0.05})
    events = []
    session.subscribe(events.append)
    # conv2 and fc1 keep 6,500 weights: more than 430,500 / 100 = 4,305, whatever conv1 and fc2 keep
    with pytest.raises(StageFailed, match="compression=100 cannot be reached: .* keep 6500 nonzero"):
        stage(session, {"kind": "reweighted", "layers": ["conv1", "fc2"], "compression": 100})
    assert not [e for e in events if isinstance(e, AdmmRound)]
    stage(session, {"kind": "reweighted", "epochs": 0.1, "update_every": 0.1, "layers": ["conv1", "fc2"], "compression": 50})
    stage(session, {"kind": "retrain", "epochs": 0.05})
    assert session.compression() == pytest.approx(50, rel=1e-3)  # the pruned layers counted as they are


def test_bits_in_steps_quantize_only_at_the_last_step(pretrained):
    session = session_from(pretrained)
    events = []
    session.subscribe(events.append)
    stage(session, {"kind": "magnitude", "targets": {"fc1": {"sparsity": 0.99, "bits": 2}}, "epochs": 0.3,
                    "steps": 3, "freeze_shares": [1.0]})
    phases = list(dict.fromkeys(e.phase for e in events if isinstance(e, EvaluationDone)))
    assert phases[:2] == ["retrain 1/3", "retrain 2/3"] and phases[2] == "retrain 3/3 (100% quantized)"
    kept = session.masks["fc1"].view(500, 800)
    # the steps pruned by magnitude, not by index among tied levels: kept weights spread over the rows
    assert int(kept.any(1).sum()) > 400
    assert prunable_layers(session.model)["fc1"].weight.unique().numel() <= 3


def test_later_stages_keep_quantized_layers_on_their_levels(pretrained, tmp_path):
    from admm_explorer.engine.checkpoints import save

    session = session_from(pretrained)
    stage(session, {"kind": "retrain", "targets": {"fc2": {"bits": 1}}, "epochs": 0.1, "freeze_shares": [1.0]})
    assert session.quantized == {"fc2"}
    fc2 = prunable_layers(session.model)["fc2"].weight.detach().clone()
    stage(session, {"kind": "pretrain", "epochs": 0.1})
    stage(session, {"kind": "admm", "epochs": 0.1, "update_every": 0.1, "targets": {"fc1": 0.9}})
    stage(session, {"kind": "retrain", "epochs": 0.1})
    assert torch.equal(prunable_layers(session.model)["fc2"].weight.detach(), fc2)  # never moved
    save(session, tmp_path / "q.pt", 0, "retrain")
    assert session_from(tmp_path / "q.pt").quantized == {"fc2"}
    # a stage that targets the layer again may move it; pruning it without bits un-quantizes it
    stage(session, {"kind": "magnitude", "targets": {"fc2": 0.5}, "epochs": 0.1})
    assert session.quantized == set()
    assert prunable_layers(session.model)["fc2"].weight.detach().abs().unique().numel() > 2


def test_python_api_reweighted_hard_prune_to_a_global_compression():
    torch.manual_seed(0)
    model = build_model("lenet5")
    admm = ADMM(model, {"*": 0.0}, method="reweighted", lam=1e-6, rho=1e-3)
    admm.update()
    before = {n: m.weight.detach().abs().clone() for n, m in prunable_layers(model).items()}
    masks = admm.hard_prune(compression=100)
    # oracle: one threshold over all layers' |W| keeping 4305 weights, and at least one weight per layer
    threshold = torch.sort(torch.cat([b.flatten() for b in before.values()]), descending=True).values[4304]
    expected = {n: max(1, int((b >= threshold).sum())) for n, b in before.items()}
    assert {n: int(m.sum()) for n, m in masks.items()} == expected
    for n, m in masks.items():
        if expected[n] > 1:
            assert (before[n][m] >= threshold).all()
        assert (prunable_layers(model)[n].weight[~m] == 0).all()
    with pytest.raises(ValueError, match="cannot be reached"):
        ADMM(build_model("lenet5"), {"conv1": 0.0}, method="reweighted").hard_prune(compression=10)
