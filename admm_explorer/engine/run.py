"""Run a recipe into a run folder, and resume a stopped one.

DIR/recipe.yaml       the recipe as resolved (every default filled in)
DIR/environment.json  versions and device
DIR/metrics.jsonl     one JSON object per event
DIR/checkpoints/      stage<i>-<kind>.pt after each finished stage (torch.load(weights_only=True))
DIR/state.json        finished stages, so --resume knows where to go on
DIR/summary.json      final accuracy, compression, per-layer counts, storage (bytes, bits per weight),
                      per-stage records (+ params/flops after purify)
DIR/model.pt          the final model: a plain state_dict, masks applied (pruned weights are 0.0)
DIR/model_prune_form.pt  the same in torch.nn.utils.prune form (weight_orig / weight_mask), when masks exist
DIR/model_shrunk.pt   after purify: the physically shrunk model (admm_explorer.prm.load_shrunk reads it)
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Callable

import torch

from ..recipe import Recipe, RecipeError, dump_recipe, load_recipe, parse_recipe
from .events import BatchEnded, Event, RunFailed, RunFinished
from .session import Session, StageFailed, StageRecord, check_recipe


def environment(device: torch.device) -> dict:
    import torchvision

    from .. import __version__

    env = {"admm_explorer": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(device),
           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def prepare_out(out: Path) -> Path:
    """Create the run folder, or say clearly why it cannot be written (before any work)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RecipeError(f"--out {out} is not writable: {e.strerror or e}") from None
    if (out / "state.json").exists():
        raise RecipeError(f"--out {out} already holds a run; resume it with --resume {out}, or pick a new folder")
    return out


class MetricsWriter:
    """Subscriber: appends every event to metrics.jsonl (batch events too), flushing each line."""

    def __init__(self, path: Path, batch_every: int = 1):
        self.file = open(path, "a", buffering=1)
        self.batch_every = batch_every

    def __call__(self, event: Event) -> None:
        if isinstance(event, BatchEnded) and event.step % self.batch_every:
            return
        self.file.write(json.dumps(event.as_dict(), default=float) + "\n")

    def close(self) -> None:
        self.file.close()


def summary(session: Session, status: str) -> dict:
    out = {
        "status": status,
        "model": session.recipe.model,
        "dataset": session.recipe.dataset,
        "test_set": session.data.test_description,
        "device": str(session.device),
        "accuracy": session.records[-1].accuracy if session.records else session.evaluate()[1],
        "compression": session.compression(),
        "layers": session.layer_stats(),
        "storage": session.storage(),
        "stages": [{"stage": r.stage, "kind": r.kind, "seconds": r.seconds, "accuracy": r.accuracy,
                    "compression": r.compression} for r in session.records],
    }
    if session.purify_report is not None:
        out["params"] = session.purify_report["after"]["params"]
        out["flops"] = session.purify_report["after"]["macs"]
        out["purify"] = session.purify_report
    return out


def export_model(session: Session, out: Path) -> None:
    """model.pt (plain state_dict); model_prune_form.pt (weight_orig / weight_mask) for a masked model;
    model_shrunk.pt (state_dict + architecture) for a physically shrunk one."""
    import copy

    from ..admm import to_prune_form

    torch.save({k: v.detach().cpu() for k, v in session.model.state_dict().items()}, out / "model.pt")
    if session.arch is not None:
        from ..prm import save_shrunk

        save_shrunk(copy.deepcopy(session.model).cpu(), out / "model_shrunk.pt", base=session.arch["base"])
    elif session.masks:
        model = copy.deepcopy(session.model).cpu()
        to_prune_form(model, {k: v.cpu() for k, v in session.masks.items()})
        torch.save({k: v.detach() for k, v in model.state_dict().items()}, out / "model_prune_form.pt")


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def run_recipe(recipe: Recipe | dict | str | Path | None, out: Path | None = None, resume: Path | None = None,
               subscribers: tuple[Callable[[Event], None], ...] = (),
               on_session: Callable[[Session], None] | None = None) -> dict:
    """Run every stage of a recipe (or the rest of a stopped run); returns the summary.

    Raises RecipeError before any work for a bad recipe, data or folder; StageFailed when a stage fails
    (everything written so far is kept and the run can be resumed after a fix).
    """
    done: list[dict] = []
    if resume is not None:
        out = Path(resume)
        if not (out / "state.json").exists():
            raise RecipeError(f"--resume {out}: no state.json there; it is not a run folder")
        state = json.loads((out / "state.json").read_text())
        if state.get("status") == "finished":
            raise RecipeError(f"--resume {out}: that run already finished")
        recipe = load_recipe(out / "recipe.yaml")
        done = state["stages"]
        if done:
            recipe = recipe.model_copy(update={"start": Path(done[-1]["checkpoint"])})
        truncate_metrics(out / "metrics.jsonl", len(done))
    else:
        if out is None:
            raise RecipeError("--out is required for a new run")
        if isinstance(recipe, dict):
            recipe = parse_recipe(recipe)
        elif not isinstance(recipe, Recipe):
            recipe = load_recipe(recipe)
        check_recipe(recipe)
        out = prepare_out(out)
        (out / "recipe.yaml").write_text(dump_recipe(recipe))
    session = Session(recipe, run_dir=out)
    session.records = [StageRecord(**r) for r in done]
    session.stage_index = len(done)
    if on_session is not None:
        on_session(session)
    write_json(out / "environment.json", environment(session.device))
    writer = MetricsWriter(out / "metrics.jsonl")
    unsubscribe = [session.subscribe(writer)] + [session.subscribe(fn) for fn in subscribers]
    state = {"status": "running", "stages": [r.as_dict() for r in session.records]}
    status = "finished"
    try:
        write_json(out / "state.json", state)
        if not done:
            session.announce()
        for spec in recipe.stages[len(done):]:
            try:
                record = session.run_stage(spec, checkpoint_dir=out / "checkpoints")
            except StageFailed as e:
                session.emit(RunFailed(stage=session.stage_index, message=str(e)))
                state["status"] = "failed"
                write_json(out / "state.json", state)
                write_json(out / "summary.json", summary(session, "failed"))
                raise
            if record.status == "stopped":
                status = "stopped"
                break
            state["stages"].append(record.as_dict())
            write_json(out / "state.json", state)
            write_json(out / "summary.json", summary(session, "running"))
        result = summary(session, status)
        if status == "finished":
            export_model(session, out)
        state["status"] = status
        write_json(out / "state.json", state)
        write_json(out / "summary.json", result)
        session.emit(RunFinished(status=status, summary=result))
        return result
    finally:
        for fn in unsubscribe:
            fn()
        writer.close()


def truncate_metrics(path: Path, finished_stages: int) -> None:
    """Drop the events of the stage that was interrupted, so a resumed run's metrics match an uninterrupted one."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        stage = event.get("stage")
        if stage is None and event["kind"] not in ("run_finished", "run_failed"):
            kept.append(line)
        elif stage is not None and stage < finished_stages:
            kept.append(line)
    path.write_text("".join(k + "\n" for k in kept))
