"""The Explorer without a browser: build it, set targets, click the stage buttons, read the figures' data."""
from __future__ import annotations

import math
import re

import pytest
import torch

from admm_explorer.admm.targets import LayerTarget, kept_weights
from admm_explorer.ui.panels.purify import NOT_YET

PAPER = {"conv1": 0.80, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93}


def test_admm_figures_hold_every_round(explorer, recorder, finish):
    layers = explorer.controller.session.layer_info()
    explorer.targets.b_paper.click()
    assert "71.2× fewer weights" in explorer.targets.total.value
    finish(explorer, explorer.stages.b_pretrain)
    finish(explorer, explorer.stages.b_admm)

    rounds = recorder.of("admm_round")
    assert len(rounds) == 4  # every 0.1 of 0.4 epochs
    fig = explorer.residuals.figure
    assert len(fig.data) == 4 * len(layers)  # per layer primal, dual, then rho and mask flips
    for i, layer in enumerate(layers):
        primal, dual = fig.data[2 * i], fig.data[2 * i + 1]
        assert list(primal.x) == [1, 2, 3, 4] and list(dual.x) == [1, 2, 3, 4]
        assert list(primal.y) == pytest.approx([r.layers[layer]["primal"] for r in rounds])
        assert list(dual.y) == pytest.approx([r.layers[layer]["dual"] for r in rounds])

    hist = explorer.histogram
    assert hist.round.max == 4 and hist.round.value == 4  # follows the training
    for layer, info in layers.items():
        target = LayerTarget(sparsity=PAPER[layer])
        for r in range(1, 5):
            hist.layer.value, hist.round.value = layer, r
            kept, pruned = (list(t.y) for t in hist.figure.data)
            assert len(kept) == len(pruned) == 60
            assert sum(kept) + sum(pruned) == info["weights"]  # bin counts of all of W
            assert sum(kept) == kept_weights(tuple(info["shape"]), target)  # Z keeps exactly the target

    evaluations = recorder.of("evaluation_done")
    assert len(evaluations) == 2 + 4  # pretrain 0.2 and admm 0.4 epochs, every 0.1
    acc = explorer.accuracy.figure
    assert [len(t.x) for t in acc.data] == [6] * 4
    assert list(acc.data[1].y) == [e.test_accuracy for e in evaluations]
    assert list(acc.data[0].x) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], abs=0.02)

    bars = {t.name: list(t.y) for t in explorer.sparsity.figure.data}
    assert bars["target"] == pytest.approx(list(PAPER.values()))
    assert bars["Z at last ADMM round"] == pytest.approx(list(PAPER.values()), abs=1e-3)
    assert bars["W exact zeros (achieved)"] == pytest.approx([0.0] * 4, abs=0.01)  # ADMM only pulls W to Z

    finish(explorer, explorer.stages.b_retrain)
    achieved = {t.name: list(t.y) for t in explorer.sparsity.figure.data}["W exact zeros (achieved)"]
    assert achieved == pytest.approx(list(PAPER.values()), abs=1e-3)
    assert "71.2× fewer weights" in explorer.stages.status.value
    runs = explorer.runs
    assert [r["kind"] for r in runs.runs] == ["pretrain", "admm", "retrain"]
    assert runs.b.value == str(explorer.controller.folder.out)  # the page's own run, compared
    assert len(runs.figure.data[1].x) == 8  # its whole pipeline: 0.2 + 0.4 + 0.2 epochs, evaluated every 0.1

    finish(explorer, explorer.purify.b_purify)
    (done,) = recorder.of("purify_done")
    assert done.after["params"] < done.before["params"] and done.after["macs"] < done.before["macs"]
    table = explorer.purify.result.value
    assert f"{done.before['params']:,}" in table and f"{done.after['params']:,}" in table
    assert f"{done.after['accuracy']:.2%}" in table and "latency, batch 64" in table


def test_stop_ends_the_stage_within_one_batch(explorer, recorder, finish):
    explorer.stages.admm_epochs.value = 5
    explorer.stages.b_admm.click()
    recorder.wait_for("admm_round", 2)
    assert explorer.stages.b_stop.disabled is False
    assert explorer.setup.model.disabled and explorer.targets.rows["fc1"].sparsity.disabled  # need a reset
    assert not explorer.stages.rho.disabled and not explorer.stages.lr.disabled  # live
    explorer.stages.rho.value = 0.05
    recorder.wait_for("admm_round", 3)
    plotted = len(explorer.residuals.figure.data[0].x)
    batches = len(recorder.of("batch_ended"))
    explorer.stages.b_stop.click()
    assert explorer.controller.wait(timeout=30)
    assert len(recorder.of("batch_ended")) - batches <= 1
    ended = recorder.of("stage_ended")[-1]
    assert ended.status == "stopped" and "admm</b> stopped" in explorer.stages.status.value
    assert len(explorer.residuals.figure.data[0].x) == len(recorder.of("admm_round")) >= plotted  # final flush
    # the round after the change ran with rho 0.05; its schedule step multiplied it by the factor
    grown = 0.05 * explorer.stages.rho_factor.value
    assert any(r.layers["conv1"]["rho"] == pytest.approx(grown) for r in recorder.of("admm_round"))
    assert not explorer.setup.model.disabled and explorer.stages.b_stop.disabled
    finish(explorer, explorer.stages.b_pretrain)  # the session goes on


def test_errors_are_readable_and_the_session_goes_on(explorer, recorder, finish):
    finish(explorer, explorer.stages.b_pretrain)
    points = len(explorer.accuracy.figure.data[1].x)
    explorer.stages.optimizer.value, explorer.stages.lr.value = "sgd", 1.0
    explorer.stages.b_pretrain.click()
    explorer.controller.wait(timeout=60)
    (message,) = [m.text for m in explorer.notices.messages]
    assert "loss became nan" in message and "Lower the learning rate" in message
    assert "Traceback" not in explorer.notices.text.value
    assert len(explorer.accuracy.figure.data[1].x) >= points  # what was plotted stays
    assert explorer.runs.runs[-1]["status"] == "failed"

    for row in explorer.targets.rows.values():  # no target at all: refused before any work
        row.sparsity.value = 0.0
    explorer.stages.b_admm.click()
    assert "no layer has a target" in explorer.notices.messages[-1].text

    explorer.setup.start.value = "checkpoint"
    explorer.setup.checkpoint.value = "no/such/file.pt"
    explorer.setup.b_apply.click()
    assert "does not exist" in explorer.notices.messages[-1].text
    assert explorer.targets.rows  # the old session is still there

    explorer.setup.start.value = "random"
    explorer.setup.b_apply.click()
    explorer.stages.optimizer.value, explorer.stages.lr.value = "adam", 1e-3
    finish(explorer, explorer.stages.b_pretrain)
    assert recorder.of("stage_ended")[-1].accuracy > 0.5


def test_purify_before_any_pruning_is_refused_and_changes_nothing(explorer, recorder):
    """On a fresh network P-RM has nothing to remove: one line says so, no stage runs or is recorded."""
    weights = {k: v.clone() for k, v in explorer.controller.session.model.state_dict().items()}
    explorer.purify.b_purify.click()
    explorer.controller.wait(timeout=60)
    assert "purify: nothing is pruned before it" in explorer.notices.messages[-1].text
    assert not recorder.of("stage_started") and explorer.runs.runs == []
    assert explorer.purify.result.value == NOT_YET
    assert "purify" not in explorer.controller.recipe_yaml()
    state = explorer.controller.session.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in state.items())


def test_a_new_setup_starts_every_panel_clean(explorer, recorder, finish):
    """Apply setup: the figures, the stage status and the P-RM table start empty, the targets stay and are
    drawn again; the Runs panel keeps the earlier stages, labelled by their run folder."""
    from admm_explorer.engine import PurifyDone

    finish(explorer, explorer.stages.b_pretrain)
    figures = {"params": 100, "macs": 1000, "size_bytes": 4096, "accuracy": 0.9}
    explorer.controller.post(PurifyDone(stage=1, tau=0.4, tolerance=0.001, sweep=[], before=figures,
                                        after={**figures, "params": 50}, removed={}))
    assert "parameters" in explorer.purify.result.value
    explorer.setup.seed.value = 1
    explorer.setup.b_apply.click()
    assert explorer.purify.result.value == NOT_YET
    assert "idle" in explorer.stages.status.value and explorer.stages.progress.value == 0
    assert all(len(trace.x) == 0 for trace in explorer.accuracy.figure.data)
    targets = {d.name: list(d.y) for d in explorer.sparsity.figure.data}["target"]
    assert targets == pytest.approx(list(PAPER.values()))
    (first,) = explorer.runs.runs
    assert first["kind"] == "pretrain" and first["run"].endswith("-lenet5-mnist-sample")
    on_disk = {r["name"]: r for r in explorer.runs.on_disk}  # its run folder, closed by the new setup
    assert (on_disk[first["run"]]["status"], on_disk[first["run"]]["stages"]) == ("stopped", ["pretrain"])


def test_presets_move_the_total_live(explorer):
    t = explorer.targets
    t.uniform.value = 0.9
    t.b_uniform.click()
    assert t.compression == pytest.approx(10.0, rel=0.01)
    t.global_x.value = 50
    t.b_global.click()
    assert t.compression == pytest.approx(50.0, rel=0.02)
    assert t.rows["fc1"].sparsity.value > t.rows["conv1"].sparsity.value  # small fan-in init: larger weights
    t.b_paper.click()
    t.rows["conv2"].structure.value = "filter"
    t.rows["conv2"].sparsity.value = 0.9  # 5 of 50 filters kept
    assert t.rows["conv2"].kept.value == "2,500"
    bars = {d.name: list(d.y) for d in explorer.sparsity.figure.data}
    assert bars["target"][1] == pytest.approx(0.9)
    weights = sum(layer["weights"] for layer in explorer.controller.session.layer_info().values())
    assert t.compression == pytest.approx(weights / (100 + 2500 + 3600 + 350))


def test_precision_and_memory_format_from_setup_reach_the_session(explorer):
    explorer.setup.precision.value = "bf16"
    explorer.setup.channels_last.value = True
    explorer.setup.b_apply.click()
    recipe = explorer.controller.session.recipe
    assert (recipe.precision, recipe.channels_last) == ("bf16", True)
    explorer.setup.precision.value = "fp32"
    explorer.setup.channels_last.value = False
    explorer.setup.b_apply.click()
    recipe = explorer.controller.session.recipe
    assert (recipe.precision, recipe.channels_last) == ("fp32", False)


def test_exports_reproduce_the_session(explorer, finish, tmp_path):
    import torch
    import yaml

    from admm_explorer.prm import load_shrunk
    from admm_explorer.recipe import parse_recipe

    import onnx

    for button in (explorer.stages.b_pretrain, explorer.stages.b_admm, explorer.stages.b_retrain,
                   explorer.purify.b_purify):
        finish(explorer, button)
    describes_the_loaded_network(explorer)
    explorer.export.folder.value = str(tmp_path)
    for button in (explorer.export.b_checkpoint, explorer.export.b_shrunk, explorer.export.b_onnx,
                   explorer.export.b_recipe):
        button.click()
    errors = [m.text for m in explorer.notices.messages]
    assert not errors, errors
    files = {p.name.split("-", 2)[-1]: p for p in tmp_path.iterdir()}
    assert set(files) == {"checkpoint.pt", "shrunk.pt", "model.onnx", "recipe.yaml"}
    onnx.checker.check_model(str(files["model.onnx"]))
    assert str(files["model.onnx"]) in explorer.export.files.value

    recipe = parse_recipe(yaml.safe_load(files["recipe.yaml"].read_text()))
    assert [s.kind for s in recipe.stages] == ["pretrain", "admm", "retrain", "purify"]
    assert recipe.stages[1].targets["fc1"].sparsity == pytest.approx(0.991)
    assert recipe.batch_size == 64 and recipe.test_root is None

    state = torch.load(files["checkpoint.pt"], weights_only=True)
    assert set(state["masks"]) == set(PAPER)
    session = explorer.controller.session
    model = session.model.eval()
    shrunk = load_shrunk(files["shrunk.pt"]).eval()
    x = next(iter(session.data.test_batches()))[0][:16]
    with torch.no_grad():
        assert torch.allclose(shrunk(x), model(x), atol=1e-4)
    assert sum(p.numel() for p in shrunk.parameters()) < session.dense_weights  # P-RM removed channels

    accuracy = session.evaluate()[1]
    explorer.setup.start.value = "checkpoint"
    explorer.setup.checkpoint.value = str(files["checkpoint.pt"])
    explorer.setup.b_apply.click()
    assert explorer.controller.session is not session
    assert explorer.controller.session.evaluate()[1] == accuracy
    assert math.isclose(explorer.controller.session.compression(), session.compression())
    describes_the_loaded_network(explorer)  # a session started from a checkpoint saved after P-RM
    assert explorer.purify.result.value == NOT_YET  # the new setup's P-RM table starts clean
    assert [d.y for d in explorer.sparsity.figure.data][0] == (None,) * 4  # the untargeted shrunk layers


def describes_the_loaded_network(explorer):
    """After P-RM every panel shows the shrunk layers: Targets' shapes and Kept, the total against the dense
    network (equal to the session's compression while no target is set), Setup's weights."""
    session = explorer.controller.session
    explorer.controller.flush()
    layers = session.prunable()
    rows = explorer.targets.rows
    assert {n: r.shape for n, r in rows.items()} == {n: tuple(m.weight.shape) for n, m in layers.items()}
    assert all(int(rows[n].kept.value.replace(",", "")) == int(torch.count_nonzero(m.weight))
               for n, m in layers.items())
    assert explorer.targets.targets() == {}
    assert explorer.targets.compression == pytest.approx(session.compression())
    assert f"{session.compression():.1f}× fewer weights" in explorer.targets.total.value
    weights = sum(m.weight.numel() for m in layers.values())
    assert f"{weights:,} weights, shrunk by P-RM from 430,500" in explorer.setup.status.value
    # a target is a fraction of the shrunk layer: fc1 at 0.5 keeps half of what it has now, at most
    fc1 = rows["fc1"]
    fc1.sparsity.value = 0.5
    assert int(fc1.kept.value.replace(",", "")) == min(fc1.nonzero, round(fc1.shape[0] * fc1.shape[1] * 0.5))
    fc1.sparsity.value = 0.0


def widgets(root):
    yield root
    for child in getattr(root, "children", ()):
        yield from widgets(child)


def test_every_control_is_described_and_every_axis_titled(explorer):
    import ipywidgets as w
    import plotly.graph_objects as go

    tree = list(widgets(explorer.widget))
    controls = [x for x in tree if isinstance(x, (w.Button, w.ValueWidget)) and not isinstance(x, (w.HTML, w.HTMLMath, w.Label))]
    assert len(controls) > 40
    assert all((c.description or "").strip() or (c.tooltip or "").strip() for c in controls)
    buttons = {c.description for c in controls if isinstance(c, w.Button)}
    assert {"Pretrain", "Run ADMM", "Retrain", "Progressive", "Reweighted", "Stop", "Purify (P-RM)"} <= buttons
    figures = [x for x in tree if isinstance(x, go.FigureWidget)]
    assert len(figures) == 5
    for fig in figures:
        for axis in [k for k in fig.layout if k.startswith(("xaxis", "yaxis"))]:
            assert fig.layout[axis].title.text, f"{fig.layout.title.text}: {axis} has no title"


def test_progressive_steps_share_the_figures(explorer, recorder, finish):
    explorer.stages.steps.value = 2  # each step: ADMM 0.2 epochs (2 rounds), retrain 0.1 epochs
    finish(explorer, explorer.stages.b_progressive)
    rounds = recorder.of("admm_round")
    assert [r.phase for r in rounds] == ["admm 1/2", "admm 1/2", "admm 2/2", "admm 2/2"]
    assert all(len(t.x) == 4 for t in explorer.residuals.figure.data)  # rounds counted across the steps
    x = list(explorer.accuracy.figure.data[1].x)
    assert x == sorted(x) and len(x) == len(recorder.of("evaluation_done"))  # phases follow each other
    assert "71.2× fewer weights" in explorer.stages.status.value


def test_progressive_candidates_rank_on_the_validation_digits_and_say_so(explorer, recorder, finish):
    """Candidates 2, one step: two runs of the step from the same start, the better on the held-out digits
    stays; the status lists both with their validation accuracy."""
    explorer.stages.steps.value, explorer.stages.candidates.value = 1, 2
    finish(explorer, explorer.stages.b_progressive)
    (ranked,) = recorder.of("candidates_ranked")
    assert ranked.selected_on == "validation" and [c["candidate"] for c in ranked.ranked] in (["1", "2"], ["2", "1"])
    assert [r.phase for r in recorder.of("admm_round")] == ["admm 1/1, candidate 1"] * 4 + ["admm 1/1, candidate 2"] * 4
    best = ranked.ranked[0]
    assert explorer.controller.session.evaluate(split="validation")[1] == best["accuracy"]
    assert f"candidates on the validation set: {best['candidate']} {best['accuracy']:.2%} (kept)" in \
        explorer.stages.status.value


def test_drawing_is_throttled_and_a_failing_panel_is_reported(explorer, recorder, monkeypatch):
    import time

    draws = []
    render = explorer.stages.render
    monkeypatch.setattr(explorer.stages, "render", lambda: (draws.append(time.monotonic()), render()))
    monkeypatch.setattr(explorer.sparsity, "render", lambda: 1 / 0)
    explorer.stages.pretrain_epochs.value = 1.0
    start = time.monotonic()
    explorer.stages.b_pretrain.click()
    assert explorer.controller.wait(timeout=60)
    seconds = time.monotonic() - start
    assert len(recorder.of("batch_ended")) == 55
    assert len(draws) <= 10 * seconds + 4  # at most ~10 draws a second, whatever the batch rate
    gaps = [b - a for a, b in zip(draws, draws[1:-1])]  # the last draw is the stage's final flush
    assert min(gaps) >= 0.09
    assert recorder.of("stage_ended")[-1].status == "finished"  # the broken panel did not stop training
    assert "display error (ZeroDivisionError: division by zero); the run goes on" in explorer.notices.text.value


def test_reweighted_then_retrain_reaches_the_global_compression(explorer, recorder, finish):
    explorer.targets.b_paper.click()  # targets every layer; reweighted ignores the rates
    explorer.stages.reweighted_x.value = 100.0
    finish(explorer, explorer.stages.b_pretrain)
    finish(explorer, explorer.stages.b_reweighted)
    rounds = recorder.of("admm_round")
    assert len(rounds) == 4 and {r.phase for r in rounds} == {"reweighted admm"}
    assert all(len(t.x) == 4 for t in explorer.residuals.figure.data)  # the same residual plots as ADMM
    finish(explorer, explorer.stages.b_retrain)  # prunes to the rates the global top-k chose
    ended = recorder.of("stage_ended")[-1]
    assert ended.compression == pytest.approx(100, rel=1e-3)
    assert f"{ended.storage['compressed_bytes']:,} bytes" in explorer.stages.status.value


def test_a_validation_set_from_setup_reaches_the_session_and_the_purify_table(explorer):
    from admm_explorer.engine import PurifyDone

    data = explorer.controller.session.data
    assert (data.n_train, data.n_validation) == (3500, 500)  # P-RM chooses on held-out digits by default
    explorer.setup.validation.value = 300
    explorer.setup.b_apply.click()
    data = explorer.controller.session.data
    assert (data.n_train, data.n_validation) == (3700, 300)
    session = explorer.controller.session
    explorer.setup.validation.value = 4000  # all of the training digits: refused, the session stays
    explorer.setup.b_apply.click()
    assert "validation = 4000: the training set has only 4000 examples" in explorer.notices.messages[-1].text
    assert explorer.controller.session is session

    figures = {"params": 100, "macs": 1000, "size_bytes": 4096}
    explorer.purify.on_purify_done(PurifyDone(
        stage=3, tau=0.4, tolerance=0.001, selected_on="validation", sweep=[{"tau": 0.4, "accuracy": 0.97}],
        before={**figures, "accuracy": 0.96, "validation_accuracy": 0.971},
        after={**figures, "params": 50, "accuracy": 0.958, "validation_accuracy": 0.97}, removed={}))
    explorer.purify.render()
    table = explorer.purify.result.value
    assert "validation accuracy" in table and "97.10%" in table and "-0.10 pts" in table
    assert "on the validation set" in table and "95.80%" in table and "No validation set" not in table
    explorer.purify.on_purify_done(PurifyDone(stage=3, tau=0.4, tolerance=0.001, selected_on="test", sweep=[],
                                              before={**figures, "accuracy": 0.96}, after={**figures, "accuracy": 0.95},
                                              removed={}))
    explorer.purify.render()
    assert "No validation set (Setup: Validation 0): τ and the retrain were chosen on the test set" in (
        explorer.purify.result.value)


def test_paths_typed_in_the_dashboard_stay_inside_its_root(explorer, tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)  # a link inside that leads out
    monkeypatch.setenv("ADMM_EXPLORER_CWD", str(root))
    monkeypatch.setenv("ADMM_EXPLORER_ROOT", str(root))
    for folder in ("../escaped", str(tmp_path / "escaped"), "link/escaped", "~"):
        explorer.notices.messages.clear()
        explorer.export.folder.value = folder
        explorer.export.b_recipe.click()
        (message,) = [m.text for m in explorer.notices.messages]
        assert message == (f"{folder} is outside the dashboard's folder {root}; use a path inside it, or start "
                           "the dashboard with --root DIR")
    assert not (tmp_path / "escaped").exists() and explorer.export.written == []

    explorer.setup.start.value = "checkpoint"
    explorer.setup.checkpoint.value = "../stage.pt"
    explorer.notices.messages.clear()
    explorer.setup.b_apply.click()
    assert "../stage.pt is outside the dashboard's folder" in explorer.notices.messages[-1].text

    explorer.export.folder.value = "inside/exports"
    explorer.export.b_recipe.click()
    (written,) = list((root / "inside" / "exports").iterdir())
    assert written.name.endswith("-recipe.yaml") and "model: lenet5" in written.read_text()


def test_text_a_user_typed_is_shown_escaped(explorer, tmp_path, monkeypatch):
    monkeypatch.setenv("ADMM_EXPLORER_CWD", str(tmp_path))
    monkeypatch.setenv("ADMM_EXPLORER_ROOT", str(tmp_path))
    attack = "<img src=x onerror=alert(document.domain)>"
    explorer.export.folder.value = attack
    explorer.export.b_recipe.click()
    assert (tmp_path / attack).is_dir()  # a legal folder name, written where the user asked
    shown = explorer.export.files.value
    assert "<img" not in shown and "&lt;img src=x onerror=alert(document.domain)&gt;" in shown

    explorer.setup.test_root.value = attack
    explorer.setup.b_apply.click()  # refused (no MNIST files there): the message is escaped too
    assert attack in explorer.notices.messages[-1].text and "<img" not in explorer.notices.text.value


def test_every_panel_explains_itself_with_math_and_its_lesson(explorer):
    from admm_explorer.ui.explain import EXPLAIN
    from admm_explorer.ui.serve import package_notebooks

    panels = [explorer.setup, explorer.targets, explorer.stages, explorer.residuals, explorer.histogram,
              explorer.accuracy, explorer.sparsity, explorer.purify, explorer.export, explorer.runs]
    assert sorted(p.title for p in panels) == sorted(EXPLAIN)  # none missing, none stale
    lessons = {p.name for p in package_notebooks().glob("0*.ipynb")}
    for panel in panels:
        (title_row, text, _body) = panel.widget.children
        toggle = title_row.children[1]
        assert toggle.description == "Explain" and text.layout.display == "none"
        toggle.value = True
        assert text.layout.display == "block"
        toggle.value = False
        assert text.layout.display == "none"
        html = text.value
        assert "Look for:" in html and "$" in html and html.count("$") % 2 == 0, panel.title  # closed math
        (link,) = re.findall(r"href='([^']+)'", html)
        assert link in lessons, f"{panel.title} links {link}, which is not a lesson"


@pytest.mark.parametrize("panel, label, value, button, message", [
    ("setup", "batch_size", 0, "b_apply", "setup: batch_size = 0: Input should be greater than or equal to 1"),
    ("stages", "pretrain_epochs", 0.0, "b_pretrain", "Pretrain.epochs = 0.0: Input should be greater than 0"),
    ("stages", "update_every", 0.0, "b_admm", "Run ADMM.update_every = 0.0: Input should be greater than 0"),
    ("stages", "admm_epochs", 0.05, "b_admm",  # Z/U every 0.1 in the fixture
     "Run ADMM: update_every = 0.1 is longer than the 0.05 ADMM epochs"),
    ("stages", "steps", 0, "b_progressive", "Progressive.steps = 0: Input should be greater than or equal to 1"),
    ("stages", "candidates", 9, "b_progressive", "Progressive.candidates = 9: Input should be less than or equal to 8"),
    ("purify", "retrain_epochs", -1.0, "b_purify", "Purify.retrain_epochs = -1.0: Input should be greater than or equal to 0"),
    ("targets", "global_x", 0.5, "b_global", "Global target (×) = 0.5: a compression is at least 1"),
])
def test_a_bad_number_is_refused_with_the_recipe_message_not_clamped(explorer, recorder, panel, label, value, button,
                                                                     message):
    field = getattr(getattr(explorer, panel), label)
    field.value = value
    getattr(getattr(explorer, panel), button).click()
    explorer.controller.wait(timeout=60)
    assert field.value == value  # as typed: nothing clamps it to something that would run
    assert [m.text for m in explorer.notices.messages] and message in explorer.notices.messages[-1].text
    assert not recorder.of("stage_started")
    # the same line right under the field, which is framed red until the next try
    box, note, flagged = getattr(explorer, panel).flagged
    assert message in note.value and "ae-invalid" in flagged._dom_classes
    if label != "admm_epochs":  # that message names update_every, the other field of the clash
        assert flagged is field
    assert list(box.children).index(note) == list(box.children).index(flagged) + 1
    field.value = {"batch_size": 64, "pretrain_epochs": 0.2, "update_every": 0.1, "admm_epochs": 0.4, "steps": 1,
                   "candidates": 1, "retrain_epochs": 0.1, "global_x": 50.0}[label]  # a valid value: the field's error goes
    getattr(getattr(explorer, panel), button).click()
    explorer.controller.wait(timeout=120)
    assert getattr(explorer, panel).flagged is None and note not in box.children, explorer.notices.messages
    assert "ae-invalid" not in flagged._dom_classes


def test_the_device_list_names_each_device_and_a_missing_one_is_a_clear_error(monkeypatch):
    from types import SimpleNamespace

    import torch

    from admm_explorer.recipe import RecipeError
    from admm_explorer.ui import Explorer
    from admm_explorer.ui.panels.setup import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RecipeError, match=r"^device = 'cuda': CUDA is not available on this machine \(use auto or cpu\)$"):
        Explorer(device="cuda", test_root=None)
    assert devices()[:2] == [("auto (cpu)", "auto"), ("cpu", "cpu")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(name=f"GPU {i}", total_memory=(80 + i) * 2**30))
    assert devices()[:4] == [("auto (cuda)", "auto"), ("cpu", "cpu"), ("cuda:0 GPU 0, 80 GiB", "cuda:0"),
                             ("cuda:1 GPU 1, 81 GiB", "cuda:1")]


def test_a_reload_loses_nothing_runs_are_folders_that_reopen_and_continue(tmp_path):
    """Every stage goes to a run folder (the files `admm-explorer run` writes); a second page (a reload) lists
    the runs on disk, CLI runs too, and opens one with its curves and histograms, continuing from its last
    stage in the same folder; the first page may then no longer write it; the CLI resumes what a page wrote."""
    import json

    from admm_explorer.engine import run_recipe
    from admm_explorer.ui import Explorer

    from conftest import TINY, run_stage

    runs = tmp_path / "runs"
    first = Explorer(test_root=None, batch_size=64, stages=TINY, runs=runs)
    for button in (first.stages.b_pretrain, first.stages.b_admm, first.stages.b_retrain):
        run_stage(first, button)
    out = first.controller.folder.out
    state = json.loads((out / "state.json").read_text())
    assert [s["kind"] for s in state["stages"]] == ["pretrain", "admm", "retrain"]
    assert all((out / s["checkpoint"]).exists() for s in state["stages"])
    recipe = (out / "recipe.yaml").read_text()
    assert "kind: retrain" in recipe and "validation: 500" in recipe
    run_recipe({"device": "cpu", "stages": [{"kind": "pretrain", "epochs": 0.05}]}, out=runs / "from-the-cli")

    second = Explorer(test_root=None, batch_size=64, stages=TINY, purify_retrain_epochs=0.1, runs=runs)  # reloaded
    listed = {r["name"]: r for r in second.runs.on_disk}
    assert listed[out.name]["stages"] == ["pretrain", "admm", "retrain"] and listed[out.name]["status"] == "open"
    assert listed["from-the-cli"]["status"] == "finished" and "held-out" in listed["from-the-cli"]["test_set"]
    second.runs.pick.value = str(out)
    second.runs.b_open.click()
    assert not second.notices.messages, second.notices.messages
    for name in ("accuracy", "residuals"):
        a, b = getattr(first, name).figure.data, getattr(second, name).figure.data
        assert [(list(t.x), list(t.y)) for t in a] == [(list(t.x), list(t.y)) for t in b], name
    assert second.histogram.records == first.histogram.records
    assert [r["kind"] for r in second.runs.runs] == ["pretrain", "admm", "retrain"]
    assert second.stages.status.value == first.stages.status.value  # "stage 2 retrain finished ..."
    assert second.controller.session.evaluate()[1] == first.controller.session.evaluate()[1]
    assert second.controller.session.compression() == first.controller.session.compression()

    run_stage(second, second.purify.b_purify)  # continues in the same folder, as stage 3
    state = json.loads((out / "state.json").read_text())
    assert [s["kind"] for s in state["stages"]] == ["pretrain", "admm", "retrain", "purify"]
    first.stages.b_pretrain.click()
    assert "was continued by another page or process" in first.notices.messages[-1].text
    assert not first.controller.busy

    second.controller.close_run()
    summary = run_recipe(None, resume=out)  # the CLI finishes what the pages wrote: nothing left to train
    assert [s["kind"] for s in summary["stages"]] == ["pretrain", "admm", "retrain", "purify"]
    assert summary["accuracy"] == state["stages"][-1]["accuracy"] and (out / "model_shrunk.pt").exists()


def test_magnitude_in_a_branch_compares_whole_pipelines(explorer, finish):
    """Pretrain -> ADMM -> Retrain, then a branch after the pretrain and Magnitude with ADMM's budget: the
    comparison overlays the two pipelines (sharing the pretrain's curve) and shows their final weights of
    one layer side by side, the counts those of the runs' last checkpoints."""
    from admm_explorer.files import load_weights_only

    for button in (explorer.stages.b_pretrain, explorer.stages.b_admm, explorer.stages.b_retrain):
        finish(explorer, button)
    admm_run = explorer.controller.folder.out
    pretrained = explorer.controller.session.records[0].accuracy
    runs = explorer.runs
    runs.pick.value = str(admm_run)
    assert [label for label, _ in runs.after.options] == ["0 pretrain", "1 admm", "2 retrain"]
    runs.after.value = 1
    runs.b_branch.click()
    assert not explorer.notices.messages, explorer.notices.messages
    branch = explorer.controller.folder.out
    assert branch != admm_run and explorer.controller.session.evaluate()[1] == pretrained
    finish(explorer, explorer.stages.b_magnitude)
    (magnitude,) = [r for r in explorer.controller.history if r.kind == "magnitude"]
    assert magnitude.epochs == pytest.approx(0.4 + 0.2) and magnitude.steps == 1  # ADMM's budget, one-shot
    assert explorer.controller.session.compression() == pytest.approx(71.2, rel=0.01)

    runs.a.value, runs.b.value, runs.layer.value = str(admm_run), str(branch), "fc1"
    accuracy_a, accuracy_b, bars_a, bars_b = explorer.runs.figure.data
    pretrain_points = 2  # evaluations every 0.1 of 0.2 epochs
    assert list(accuracy_a.x)[:pretrain_points] == list(accuracy_b.x)[:pretrain_points]
    assert list(accuracy_a.y)[:pretrain_points] == list(accuracy_b.y)[:pretrain_points]
    assert accuracy_a.x[-1] == pytest.approx(accuracy_b.x[-1]) == 0.8  # the same budget: 0.2 + 0.4 + 0.2 epochs
    assert list(accuracy_a.y)[pretrain_points:] != list(accuracy_b.y)[pretrain_points:]
    for bars, out in ((bars_a, admm_run), (bars_b, branch)):
        state = load_weights_only(sorted((out / "checkpoints").glob("stage2-*.pt"))[0] if out == admm_run else
                                  sorted((out / "checkpoints").glob("stage1-*.pt"))[0])["state_dict"]
        assert sum(c or 0 for c in bars.y) == int(torch.count_nonzero(state["fc1.weight"])) == 3600
    titles = [a.text for a in explorer.runs.figure.layout.annotations]
    assert "fc1 keeps 3,600 of 400,000" in titles[1] and "fc1 keeps 3,600 of 400,000" in titles[2]


def spy_on_rounds(monkeypatch, then=None) -> list[dict]:
    """Per Z/U round, per layer, clones of W, Z, rho U and Z's kept set as round_payload saw them (the W the
    round's histogram counted); `then(admm, rounds_so_far)` runs after each round's payload."""
    from admm_explorer.engine.stages import pruning

    seen, payload = [], pruning.round_payload

    def spy(admm, residuals):
        out = payload(admm, residuals)
        seen.append({name: {"w": admm.model.get_submodule(name).weight.detach().clone(), "z": layer.z.clone(),
                            "rho_u": layer.rho * layer.u, "kept": layer.kept.clone()}
                     for name, layer in admm.layers.items()})
        if then is not None:
            then(admm, len(seen))
        return out

    monkeypatch.setattr(pruning, "round_payload", spy)
    return seen


def test_residuals_normalised_with_rho_and_mask_flips_on_one_round_axis(explorer, recorder, finish, monkeypatch):
    """The toggle divides primal by ||W|| and dual by ||rho U|| (from the layer's tensors at that round); rho
    and the mask flips of every round are plotted under them on the same x axis; one legend entry per layer."""
    seen = spy_on_rounds(monkeypatch)
    explorer.targets.b_paper.click()
    finish(explorer, explorer.stages.b_admm)
    rounds = recorder.of("admm_round")
    assert len(rounds) == len(seen) == 4
    panel, layers = explorer.residuals, list(PAPER)
    fig, n = panel.figure, len(layers)
    assert panel.scale.description and panel.scale.tooltip and panel.scale.value is False  # absolute first
    assert {t.xaxis or "x" for t in fig.data} == {"x"}  # one x axis: the subplots zoom together
    assert [t.name for t in fig.data if t.showlegend is not False] == layers
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"  # under the plot
    for i, layer in enumerate(layers):
        rho, flips = fig.data[2 * n + i], fig.data[3 * n + i]
        assert (rho.yaxis, flips.yaxis, rho.legendgroup, flips.legendgroup) == ("y2", "y3", layer, layer)
        assert list(rho.x) == list(flips.x) == [1, 2, 3, 4]
        assert list(rho.y) == [r.layers[layer]["rho"] for r in rounds]
        assert list(flips.y) == [r.layers[layer]["mask_flips"] for r in rounds]
        for k in (1, 2, 3):  # by hand: new kept weights over kept weights
            now, before = seen[k][layer]["kept"], seen[k - 1][layer]["kept"]
            assert flips.y[k] == pytest.approx(int((now & ~before).sum()) / int(now.sum()))
    assert fig.layout.yaxis2.type == "log" and fig.layout.yaxis2.tickvals  # rho: 1-2-5 ticks, labelled
    assert list(fig.layout.yaxis2.ticktext) == [f"{v:.3g}" for v in fig.layout.yaxis2.tickvals]

    panel.scale.value = True
    assert "‖W‖" in fig.layout.title.text and "relative" in fig.layout.yaxis.title.text
    for i, layer in enumerate(layers):
        primal, dual = fig.data[2 * i], fig.data[2 * i + 1]
        by_hand = [(float((s[layer]["w"] - s[layer]["z"]).norm()), float(s[layer]["w"].norm()),
                    float(s[layer]["rho_u"].norm())) for s in seen]
        assert list(primal.y) == pytest.approx([d / w_norm for d, w_norm, _ in by_hand], rel=1e-5)
        assert list(dual.y) == pytest.approx([r.layers[layer]["dual"] / y for r, (_, _, y) in zip(rounds, by_hand)],
                                             rel=1e-5)
        assert [r.layers[layer]["w_norm"] for r in rounds] == pytest.approx([w for _, w, _ in by_hand], rel=1e-6)
    panel.scale.value = False
    assert list(fig.data[0].y) == [r.layers["conv1"]["primal"] for r in rounds]


def test_histogram_bins_hold_every_weight_show_single_ones_and_the_levels(explorer, recorder, finish, monkeypatch):
    """A conv1 weight pushed to 10x the first round's range is counted in the bin whose edges hold it (the
    bins widen, the info line says so); every bar sums to the layer's weights; the log axis starts at 0.5 so a
    bin of one weight is a bar; fc2 with 2 bits shows Z's two levels."""
    def push(admm, k):
        if k == 1:
            with torch.no_grad():
                weight = admm.model.conv1.weight
                weight[0, 0, 0, 0] = 10 * weight.abs().max()

    seen = spy_on_rounds(monkeypatch, push)
    explorer.targets.b_paper.click()
    explorer.targets.rows["fc2"].bits.value = 2
    finish(explorer, explorer.stages.b_admm)
    rounds = recorder.of("admm_round")
    hist = explorer.histogram
    hist.layer.value, hist.round.value = "conv1", 2
    first, second = (r.layers["conv1"]["edges"] for r in rounds[:2])
    outlier = float(seen[1]["conv1"]["w"][0, 0, 0, 0])
    assert outlier > 5 * first[-1] and second[-1] == pytest.approx(1.3 * outlier)  # widened at round 2
    kept, pruned = hist.figure.data
    counts = [a + b for a, b in zip(kept.y, pruned.y)]
    assert sum(counts) == 500 and sum(kept.y) == 100
    w = seen[1]["conv1"]["w"].flatten().double()
    e = torch.tensor(second, dtype=torch.float64)
    assert counts == [int(((w >= a) & ((w < b) if i < 59 else (w <= b))).sum())
                      for i, (a, b) in enumerate(zip(e[:-1], e[1:]))]
    half = kept.width / 2
    (i,) = [i for i, x in enumerate(kept.x) if x - half <= outlier < x + half]
    assert counts[i] >= 1 and kept.y[i] >= 1  # in the figure's own bin around it, and kept by Z
    assert f"widened at round 2 from ±{first[-1]:.3g}" in hist.info.value

    hist.layer.value, hist.round.value = "fc1", 4
    kept, pruned = hist.figure.data
    assert sum(kept.y) + sum(pruned.y) == 400_000 and 1 in [a + b for a, b in zip(kept.y, pruned.y)]
    y = hist.figure.layout.yaxis
    assert y.type == "log" and y.range[0] == pytest.approx(math.log10(0.5))
    assert y.range[1] >= math.log10(max(a + b for a, b in zip(kept.y, pruned.y)))  # the tallest bar fits
    one = (0 - y.range[0]) / (y.range[1] - y.range[0])  # a bar of 1 weight: log10(1) above the floor
    assert one > 0.05, f"a bin of one weight is {one:.1%} of the axis"
    assert hist.figure.layout.shapes == ()  # fc1 has no bits: no levels

    hist.layer.value = "fc2"
    z = seen[3]["fc2"]["z"]
    levels = sorted(set(z[z != 0].tolist()))
    assert len(levels) == 2 and levels[0] == -levels[1]  # ternary: +-alpha
    assert [s.x0 for s in hist.figure.layout.shapes] == levels == rounds[3].layers["fc2"]["levels"]
    assert all(s.x0 == s.x1 and (s.yref, s.y0, s.y1) == ("paper", 0, 1) for s in hist.figure.layout.shapes)
    assert [s.showlegend for s in hist.figure.layout.shapes] == [True, False]  # one legend entry
    assert "Z's 2 levels" in hist.info.value


def test_labels_say_what_a_class_would_otherwise_misread(explorer, finish):
    """Status names the stage; an ADMM stage says it has not pruned W yet; rho is shown only in ADMM phases;
    the rho slider says which rho it sets; Reweighted runs the benchmarks' settings toward the Targets' total;
    a FakeData session says its accuracy means nothing; the exported recipe holds rounded numbers."""
    import yaml

    from admm_explorer.engine import AdmmRound, BatchEnded, StageStarted

    stages = explorer.stages
    assert stages.rho.description == "ρ (next ADMM)"
    explorer.targets.uniform.value = 0.92
    explorer.targets.b_uniform.click()
    finish(explorer, stages.b_pretrain)
    assert stages.status.value.startswith("<b>pretrain</b> finished (stage 0)")
    finish(explorer, stages.b_admm)
    assert "ADMM has not pruned yet: Z is sparse, W is not" in stages.status.value
    recipe = yaml.safe_load(explorer.controller.recipe_yaml())
    assert recipe["stages"][1]["targets"]["conv1"]["sparsity"] == 0.92  # not 0.9200000000000002
    assert recipe["stages"][1]["rho"]["init"] == 0.001

    spec = stages.reweighted_spec()
    assert (spec.rho.init, spec.rho.schedule, spec.lam) == (0.01, "constant", 1e-5)
    assert spec.compression == pytest.approx(explorer.targets.compression, abs=0.01)

    # a progressive stage's retrain phase shows no rho; its ADMM phase does, and the slider is live then
    stages.on_stage_started(StageStarted(stage=5, stage_kind="progressive", epochs=1, total_batches=10))
    stages.on_batch_ended(BatchEnded(stage=5, phase="admm 1/2", epoch=1, step=1, total_batches=10, loss=1.0,
                                     penalty=0.1, accuracy=0.5, lr=1e-3))
    stages.on_admm_round(AdmmRound(stage=5, phase="admm 1/2", round=1, epoch=0.1, step=1, layers={"fc1": {"rho": 2e-3}}))
    stages.busy = True
    stages.render()
    assert "<b>progressive · admm 1/2</b> (stage 5)" in stages.status.value and "ρ 2.0e-03" in stages.status.value
    assert stages.rho.description == "ρ (live)"
    stages.on_batch_ended(BatchEnded(stage=5, phase="retrain 1/2", epoch=1, step=2, total_batches=10, loss=1.0,
                                     penalty=0.0, accuracy=0.5, lr=1e-3))
    stages.render()
    assert "retrain 1/2" in stages.status.value and "ρ" not in stages.status.value
    stages.busy = False

    explorer.setup.dataset.value = "fake"
    explorer.setup.b_apply.click()
    assert not explorer.notices.messages, explorer.notices.messages
    assert "FakeData's labels are random: its accuracy means nothing" in " ".join(stages.notes({"kind": "pretrain"}))


def test_run_admm_can_stop_on_its_residuals(explorer, recorder, finish):
    """Stop at residual ends Run ADMM at the first round where every layer is within it, and says so."""
    finish(explorer, explorer.stages.b_pretrain)
    explorer.stages.stop_at.value = 0.99
    assert explorer.stages.admm_spec().stop.primal == explorer.stages.admm_spec().stop.dual == 0.99
    finish(explorer, explorer.stages.b_admm)
    rounds = recorder.of("admm_round")
    assert rounds[-1].converged and len(rounds) < 4  # 0.4 epochs, a round every 0.1
    assert f"ADMM ended early, at round {len(rounds)}" in explorer.stages.status.value
    explorer.stages.stop_at.value = -1
    explorer.stages.b_admm.click()
    assert "stop.primal = -1.0: Input should be greater than 0" in explorer.notices.messages[-1].text
    assert explorer.stages.flagged[2] is explorer.stages.stop_at
