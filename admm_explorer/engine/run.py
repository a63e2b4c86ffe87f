"""Run a recipe into a run folder, and resume a stopped one.

DIR/recipe.yaml       the recipe as resolved (every default filled in)
DIR/environment.json  versions and device
DIR/metrics.jsonl     one JSON object per event
DIR/checkpoints/      stage<i>-<kind>.pt after each finished stage (torch.load(weights_only=True))
DIR/state.json        finished stages (checkpoint paths relative to DIR), so --resume knows where to go on
DIR/.lock             held (an OS lock) while a process writes the run: a second writer is refused
DIR/summary.json      final accuracy, compression, per-layer counts, storage (bytes, bits per weight),
                      per-stage records (+ params/flops after purify)
DIR/model.pt          the final model: a plain state_dict, masks applied (pruned weights are 0.0)
DIR/model_prune_form.pt  the same in torch.nn.utils.prune form (weight_orig / weight_mask), when masks exist
DIR/model_shrunk.pt   after purify: the physically shrunk model (admm_explorer.prm.load_shrunk reads it)

Under torchrun (admm_explorer.parallel) rank 0 does all of the above; it checks the recipe and the folder,
then hands the resolved recipe and the finished stages to the other ranks, which run the same stages and
write nothing.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from ..files import WriteFailed, read_events, tensor_bytes, write_atomic, write_json, writing
from ..parallel import World, world as this_world
from ..recipe import Recipe, RecipeError, dump_recipe, load_recipe, parse_recipe
from .events import BatchEnded, Event, RunFailed, RunFinished
from .session import Session, StageFailed, StageRecord, check_recipe


def environment(device: torch.device, world: World | None = None) -> dict:
    import torchvision

    from .. import __version__

    env = {"admm_explorer": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(device),
           "threads": torch.get_num_threads(), "processes": world.size if world else 1}
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
    return out


def check_new(out: Path) -> None:
    """A new run goes only into an empty folder (checked under the lock: two new runs cannot both pass)."""
    if (out / "state.json").exists():
        raise RecipeError(f"--out {out} already holds a run; resume it with --resume {out}, or pick a new folder")
    if any(p.name != LOCK for p in out.iterdir()):
        raise RecipeError(f"--out {out} is not empty and holds no run: pick a new or empty folder (nothing there "
                          "was changed)")


LOCK = ".lock"


@contextmanager
def locked(out: Path):
    """Hold an exclusive OS lock on DIR/.lock while writing the run. The OS drops it when the process ends in
    any way (a kill included), so a lock file left behind never blocks: only a live writer does."""
    handle = open(out / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RecipeError(f"{out} is being written by {holder}; wait for it to end or stop it "
                          "(Ctrl-C), then resume") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"admm-explorer (pid {os.getpid()})")
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def written(out: Path) -> bool:
    """Whether a live process holds DIR's lock (this one included: flock locks belong to open files)."""
    try:
        with open(out / LOCK) as handle:  # no lock file: never written under a lock, so nobody writes it
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class MetricsWriter:
    """Subscriber: appends every event to metrics.jsonl (batch events too) as one line, written by one
    os.write to a file opened for appending; a line cut short (a kill, a full disk) is dropped by
    read_events, so no reader ever takes half an event."""

    def __init__(self, path: Path, batch_every: int = 1):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.batch_every = batch_every

    def __call__(self, event: Event) -> None:
        if isinstance(event, BatchEnded) and event.step % self.batch_every:
            return
        line = (json.dumps(event.as_dict(), default=float) + "\n").encode()
        with writing(self.path, len(line)):
            written = os.write(self.fd, line)
            if written != len(line):  # a short write on a full disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        os.close(self.fd)


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

    state = {k: v.detach().cpu() for k, v in session.model.state_dict().items()}
    with writing(out / "model.pt", tensor_bytes(state)):
        torch.save(state, out / "model.pt")
    if session.arch is not None:
        from ..prm import save_shrunk

        with writing(out / "model_shrunk.pt", tensor_bytes(state)):
            save_shrunk(copy.deepcopy(session.model).cpu(), out / "model_shrunk.pt", base=session.arch["base"])
    elif session.masks:
        model = copy.deepcopy(session.model).cpu()
        to_prune_form(model, {k: v.cpu() for k, v in session.masks.items()})
        state = {k: v.detach() for k, v in model.state_dict().items()}
        with writing(out / "model_prune_form.pt", tensor_bytes(state)):
            torch.save(state, out / "model_prune_form.pt")


def stage_rows(records: list[StageRecord], out: Path) -> list[dict]:
    """state.json's stages: checkpoint paths relative to the run folder, so a moved or copied run resumes
    from its own files."""
    rows = []
    for record in records:
        row = record.as_dict()
        if row["checkpoint"]:
            row["checkpoint"] = Path(os.path.relpath(row["checkpoint"], out)).as_posix()
        rows.append(row)
    return rows


def own_checkpoint(out: Path, stored: str) -> Path:
    """A checkpoint named in state.json, inside this run folder (older runs stored it as the path it had when
    written: then the file of that name in this folder's checkpoints/ is the one)."""
    path = Path(stored)
    return out / path if not path.is_absolute() else out / "checkpoints" / path.name


def run_recipe(recipe: Recipe | dict | str | Path | None, out: Path | None = None, resume: Path | None = None,
               subscribers: tuple[Callable[[Event], None], ...] = (),
               on_session: Callable[[Session], None] | None = None) -> dict:
    """Run every stage of a recipe (or the rest of a stopped run); returns the summary.

    Raises RecipeError before any work for a bad recipe, data or folder; StageFailed when a stage fails
    (everything written so far is kept and the run can be resumed after a fix). Under torchrun every rank
    calls it with the same arguments; only rank 0 reads the recipe and the folder.
    """
    world = this_world()
    if not world.main:
        given = world.share(None)
        if "error" in given:
            raise RecipeError(given["error"])
        return _run(parse_recipe(given["recipe"]), Path(given["out"]), given["done"], subscribers, on_session, world)
    handed: list[bool] = []  # set once the other ranks have the recipe

    def hand_on(recipe: Recipe, out: Path, done: list[dict]) -> None:
        world.share({"recipe": recipe.resolved(), "out": str(out), "done": done})
        handed.append(True)

    try:
        return _lead(recipe, out, resume, subscribers, on_session, world, hand_on)
    except BaseException as e:
        if world.size > 1 and not handed:  # the other ranks wait for the recipe: end them with the error
            world.share({"error": str(e) or type(e).__name__})
        raise


def _lead(recipe, out, resume, subscribers, on_session, world: World, hand_on) -> dict:
    if resume is not None:
        out = Path(resume)
        if not (out / "state.json").exists():
            raise RecipeError(f"--resume {out}: no state.json there; it is not a run folder")
        with locked(out):
            return _resume(out, subscribers, on_session, world, hand_on)
    if out is None:
        raise RecipeError("--out is required for a new run")
    if isinstance(recipe, dict):
        recipe = parse_recipe(recipe)
    elif not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    check_recipe(recipe)
    if not recipe.stages:
        raise RecipeError("the recipe has no stages, so the run would train nothing: add at least one, e.g. "
                          "stages: [{kind: pretrain, epochs: 20}] (docs/recipes.md)")
    out = prepare_out(out)
    check_new(out)  # before the lock file exists in someone's folder
    with locked(out):
        check_new(out)  # again under the lock: of two new runs on one folder, the second is refused
        (out / "recipe.yaml").write_text(dump_recipe(recipe))
        return _run(recipe, out, [], subscribers, on_session, world, hand_on)


def _resume(out: Path, subscribers, on_session, world: World, hand_on) -> dict:
    state = json.loads((out / "state.json").read_text())
    if state.get("status") == "finished":
        raise RecipeError(f"--resume {out}: that run already finished")
    recipe = load_recipe(out / "recipe.yaml")
    done = state["stages"]
    if done:
        start = own_checkpoint(out, done[-1]["checkpoint"])
        if not start.exists():
            raise RecipeError(f"--resume {out}: its last checkpoint {start} is missing")
        recipe = recipe.model_copy(update={"start": start})
    truncate_metrics(out / "metrics.jsonl", len(done))
    return _run(recipe, out, done, subscribers, on_session, world, hand_on)


class RunFolder:
    """Writes a session's run folder as its stages end (the layout above): environment.json and every event
    from open(), state.json and summary.json after each stage, the model files at the end of a finished
    run. The recipe runner and the dashboard both write runs through it; whoever opens it holds DIR's lock.
    Under torchrun only rank 0's writes; the others compute the same summaries (they may evaluate, which
    every rank must do together) and write nothing."""

    def __init__(self, session: Session, out: Path):
        self.session, self.out = session, out
        self.writes = session.world.main
        self.checkpoints = out / "checkpoints"
        # "writer": who last took the run on; a dashboard that finds another writer there stops writing it
        self.state = {"status": "running", "writer": uuid.uuid4().hex, "stages": stage_rows(session.records, out)}
        self.writer: MetricsWriter | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def open(self) -> None:
        if not self.writes:
            return
        write_json(self.out / "environment.json", environment(self.session.device, self.session.world))
        self.writer = MetricsWriter(self.out / "metrics.jsonl")
        self._unsubscribe = self.session.subscribe(self.writer)
        write_json(self.out / "state.json", self.state)

    @contextmanager
    def claim(self):
        """Hold DIR's lock while a stage writes; refused (RecipeError) if another writer took the run on since
        this one last wrote it (the page was reloaded and the run opened there)."""
        with locked(self.out):
            try:
                writer = json.loads((self.out / "state.json").read_text()).get("writer")
            except (OSError, ValueError):
                writer = None
            if writer != self.state["writer"]:
                raise RecipeError(f"{self.out} was continued by another page or process since this one last wrote "
                                  "it: open it again from Runs to go on with it")
            yield

    def stage_ended(self) -> None:
        result = summary(self.session, "running")
        if not self.writes:
            return
        self.state["stages"] = stage_rows(self.session.records, self.out)
        write_json(self.out / "state.json", self.state)
        write_json(self.out / "summary.json", result)

    def end(self, status: str) -> dict:
        """The run's summary as it ends: finished (with the model files), stopped or failed."""
        result = summary(self.session, status)
        if not self.writes:
            return result
        if status == "finished":
            export_model(self.session, self.out)
        self.state["status"] = status
        write_json(self.out / "state.json", self.state)
        write_json(self.out / "summary.json", result)
        return result

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self.writer.close()
            self._unsubscribe = None


def restore_records(session: Session, out: Path, done: list[dict]) -> None:
    """The session goes on after the finished stages state.json lists (its model is their last checkpoint)."""
    session.records = [StageRecord(**{**r, "checkpoint": str(own_checkpoint(out, r["checkpoint"]))
                                      if r["checkpoint"] else None}) for r in done]
    session.stage_index = len(done)


def _run(recipe: Recipe, out: Path, done: list[dict], subscribers, on_session, world: World,
         hand_on: Callable[[Recipe, Path, list[dict]], None] | None = None) -> dict:
    """hand_on (rank 0 of a torchrun launch): gives the other ranks the recipe they run and the stages done."""
    if hand_on is not None:
        hand_on(recipe, out, done)
    session = Session(recipe, run_dir=out, world=world)
    restore_records(session, out, done)
    if on_session is not None:
        on_session(session)
    folder = RunFolder(session, out)
    unsubscribe = []
    status = "finished"
    try:
        folder.open()  # the metrics writer subscribes first: an event is on disk before anyone shows it
        unsubscribe = [session.subscribe(fn) for fn in subscribers]
        if not done:
            session.announce()
        for spec in recipe.stages[len(done):]:
            try:
                record = session.run_stage(spec, checkpoint_dir=folder.checkpoints if folder.writes else None)
            except StageFailed as e:
                session.emit(RunFailed(stage=session.stage_index, message=str(e)))
                folder.end("failed")
                raise
            if record.status == "stopped":
                status = "stopped"
                break
            folder.stage_ended()
        result = folder.end(status)
        session.emit(RunFinished(status=status, summary=result))
        return result
    except WriteFailed:
        # what was written stays; the run is resumable once there is space again
        folder.state["status"] = "stopped"
        try:
            write_json(out / "state.json", folder.state)
        except WriteFailed:
            pass  # state.json keeps its last complete version ("running"), which --resume accepts as well
        raise
    finally:
        for fn in unsubscribe:
            fn()
        folder.close()


def truncate_metrics(path: Path, finished_stages: int) -> None:
    """Drop the events of the stage that was interrupted, so a resumed run's metrics match an uninterrupted one;
    a torn last line (the process was killed while writing it) is dropped, and said so."""
    if not path.exists():
        return
    events, torn = read_events(path)
    if torn:
        print(f"note: the last line of {path} was cut off when the run was interrupted; it was dropped",
              file=sys.stderr)
    write_atomic(path, lines(first_stages(events, finished_stages)))


def first_stages(events: list[dict], stages: int) -> list[dict]:
    """The events of a run's first `stages` stages, and the run's own (run_started; not its end)."""
    return [event for event in events
            if (event.get("stage") is None and event["kind"] not in ("run_finished", "run_failed"))
            or (event.get("stage") is not None and event["stage"] < stages)]


def lines(events: list[dict]) -> str:
    return "".join(json.dumps(event, default=float) + "\n" for event in events)


def read_state(out: Path) -> dict:
    """A run folder's state.json; RecipeError in one line when there is none or it cannot be read."""
    try:
        return json.loads((Path(out) / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"{out} is not a readable run folder (state.json: {e})") from None


def branch_run(src: Path, stages: int, out: Path) -> Path:
    """A new run folder `out` holding the first `stages` finished stages of the run in `src`: their recipe
    entries, checkpoints and events. A pipeline that goes on differently from there (pretrain -> magnitude
    beside pretrain -> admm -> retrain) is then a whole run of its own: resumable, listed, comparable."""
    src = Path(src)
    done = read_state(src).get("stages", [])
    if not 1 <= stages <= len(done):
        raise RecipeError(f"{src} has {len(done)} finished stages: branch after 1 to {len(done)} of them")
    recipe = load_recipe(src / "recipe.yaml")
    events, _ = read_events(src / "metrics.jsonl")
    out = prepare_out(out)
    with locked(out):
        check_new(out)
        (out / "checkpoints").mkdir()
        rows = []
        for row in done[:stages]:
            checkpoint = own_checkpoint(src, row["checkpoint"])
            shutil.copy2(checkpoint, out / "checkpoints" / checkpoint.name)
            rows.append({**row, "checkpoint": f"checkpoints/{checkpoint.name}"})
        write_atomic(out / "recipe.yaml", dump_recipe(recipe.model_copy(update={"stages": recipe.stages[:stages]})))
        write_atomic(out / "metrics.jsonl", lines(first_stages(events, stages)))
        write_json(out / "state.json", {"status": "stopped", "branched_from": {"run": str(src), "stages": stages},
                                        "stages": rows})
    return out


def list_runs(root: Path) -> list[dict]:
    """The run folders directly under `root` (CLI and dashboard runs alike), newest first: folder, model,
    dataset, test set, finished stage kinds, status (finished, stopped, failed, running: a stage is being
    written, open: resumable, nothing writes it now), and the last stage's accuracy and compression. A
    folder whose files cannot be read is listed with its status saying so."""
    root = Path(root)
    runs = []
    for state_path in root.glob("*/state.json") if root.is_dir() else ():
        out = state_path.parent
        row = {"folder": out, "name": out.name, "time": state_path.stat().st_mtime, "model": "", "dataset": "",
               "test_set": "", "stages": [], "status": "", "accuracy": None, "compression": None}
        try:
            state = json.loads(state_path.read_text())
            recipe = load_recipe(out / "recipe.yaml")
            summary_path = out / "summary.json"
            done = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        except (OSError, ValueError, RecipeError) as e:
            row["status"] = f"unreadable ({type(e).__name__})"
            runs.append(row)
            continue
        stages = state.get("stages", [])
        status = state.get("status", "")
        if status == "running" and not written(out):
            status = "open"  # nothing writes it now: a page between stages, or a writer that ended without closing
        row.update(model=recipe.model, dataset=recipe.dataset, test_set=done.get("test_set", ""),
                   stages=[s["kind"] for s in stages], status=status)
        if stages:
            row.update(accuracy=stages[-1]["accuracy"], compression=stages[-1]["compression"])
        runs.append(row)
    return sorted(runs, key=lambda r: r["time"], reverse=True)
