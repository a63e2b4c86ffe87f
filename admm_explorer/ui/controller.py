"""The panels' only door to the engine: one Session, a worker thread for its stages, throttled flushes.

Events (the engine's, from the worker thread, and the UI's own, from whichever thread posts them) reach
every panel's `on_event` under one lock; panels only record data there. `flush` pushes the recorded data
to the widgets: for events of the worker at most once per `interval` seconds whatever the batch rate, for
events of the kernel's main thread (a user's action) at once, and always when a stage ends. So the main
thread stays free for Stop, sliders and the round slider while a stage trains.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ..admm.projections import global_keep_counts
from ..engine import checkpoints
from ..engine.events import from_dict
from ..engine.run import (RunFolder, branch_run, check_new, locked, own_checkpoint, prepare_out, read_state,
                          restore_records, truncate_metrics)
from ..engine.session import Session
from ..errors import AdmmExplorerError, RecipeError, StageFailed, UIError
from ..files import read_events, write_atomic
from ..recipe import Recipe, StageSpec, dump_recipe, load_recipe
from .events import Activity, Notice

if TYPE_CHECKING:
    from torch import nn

    from ..engine.events import Event

log = logging.getLogger(__name__)
# tracebacks go to the log only where the application configured logging: Python's last-resort handler
# would print them to the kernel's stderr, which Voila shows in the page
log.addHandler(logging.NullHandler())


def readable(error: BaseException) -> str:
    """One line for the page: our own errors as they are, anything else prefixed with its type."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (AdmmExplorerError, KeyError, FileNotFoundError, ValueError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def fresh(root: Path, stem: str) -> Path:
    """root/stem, or root/stem-2, -3 ... : the first that does not exist yet."""
    out, n = root / stem, 1
    while out.exists():
        n += 1
        out = root / f"{stem}-{n}"
    return out


class Controller:
    """`runs`: the folder each session writes its run folder into (as `admm-explorer run` does) from its first
    stage on; None: nothing is written."""

    def __init__(self, interval: float = 0.1, runs: Path | None = None):
        self.interval = interval
        self.runs = Path(runs) if runs is not None else None
        self.folder: RunFolder | None = None  # the session's run folder, once a stage ran
        self._claim = ExitStack()  # the run folder's lock, held while a stage runs
        self.session: Session | None = None
        self.recipe: Recipe | None = None  # the setup of the session (its stages come from `history`)
        self.history: list[StageSpec] = []  # the finished stages of this session, in order
        self.stopped: list[str] = []  # stages that were stopped early (their partial effect is not reproducible)
        self._panels: list = []
        self._lock = threading.RLock()
        self._queue: deque = deque()  # events posted by a panel while others still handle an earlier one
        self._delivering = False
        self._worker: threading.Thread | None = None
        self._running = False
        self._last_flush = 0.0
        self._unsubscribe: Callable[[], None] | None = None

    # events -----------------------------------------------------------------------------------------
    def subscribe(self, panel) -> None:
        """`panel` gets on_event(event) for every event and flush() when it is time to draw."""
        self._panels.append(panel)

    def post(self, event: Event) -> None:
        """Deliver an event to every panel (any thread); draw now unless a worker event came too soon."""
        with self._lock:
            if not self._deliver([event]):
                return
            from_worker = threading.current_thread() is self._worker
            if not from_worker or time.monotonic() - self._last_flush >= self.interval:
                self.flush()

    def replay(self, events: list[Event]) -> None:
        """Deliver the events of a run on disk to every panel, then draw once."""
        with self._lock:
            self._deliver(events)
            self.flush()

    def _deliver(self, events: list[Event]) -> bool:
        """Every panel sees each event, in order (False: posted from inside a handler, queued behind the
        event being delivered, which every panel sees first)."""
        self._queue.extend(events)
        if self._delivering:
            return False
        self._delivering = True
        try:
            while self._queue:
                queued = self._queue.popleft()
                for panel in self._panels:
                    self._call(panel.on_event, queued)
        finally:
            self._delivering = False
        return True

    def flush(self) -> None:
        with self._lock:
            self._last_flush = time.monotonic()
            for panel in self._panels:
                self._call(panel.flush)

    def _call(self, fn, *args) -> None:
        # a failing panel must neither kill the stage (the engine calls us) nor hide the other panels
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported in the page, traceback in the log
            log.exception("panel callback failed")
            if not (args and isinstance(args[0], Notice)):
                self.post(Notice(f"display error ({readable(e)}); the run goes on"))

    def report(self, error: BaseException) -> None:
        if not isinstance(error, AdmmExplorerError):
            log.error("dashboard action failed", exc_info=error)
        self.post(Notice(readable(error)))

    def guard(self, fn: Callable) -> Callable:
        """Wrap a widget callback: an exception becomes a readable message in the page, not a lost traceback."""
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                self.report(e)
        return guarded

    # session ----------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._running

    def configure(self, recipe: Recipe) -> None:
        """Start a new session (loads data and model; no training). On error the old session stays."""
        if self._running:
            raise UIError("a stage is running: press Stop before changing the setup")
        session = Session(recipe)
        self._take(session, recipe, [])
        session.announce()

    def _take(self, session: Session, recipe: Recipe, history: list[StageSpec]) -> None:
        """The panels follow `session` from now on; the previous session's run folder is closed."""
        self.close_run()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.session, self.recipe, self.history, self.stopped = session, recipe, history, []
        self._unsubscribe = session.subscribe(self.post)

    def open_run(self, out: Path) -> None:
        """Go on from the last finished stage of the run in `out` (a dashboard's or `admm-explorer run`'s): its
        events are replayed into the panels (curves, histograms, tables), its last checkpoint is the model, and
        the stages run from now on are appended to the same folder (stages it planned but never ran are
        dropped from its recipe.yaml). On error the current session stays."""
        if self._running:
            raise UIError("a stage is running: press Stop before opening another run")
        out = Path(out)
        done = read_state(out).get("stages", [])
        recipe = load_recipe(out / "recipe.yaml")
        start = own_checkpoint(out, done[-1]["checkpoint"]) if done else recipe.start
        with locked(out):  # a run another process is writing now is refused, before anything changes
            session = Session(recipe.model_copy(update={"start": start, "stages": []}), run_dir=out)
            restore_records(session, out, done)
            truncate_metrics(out / "metrics.jsonl", len(done))  # a stage that did not finish is not continued
            events, _ = read_events(out / "metrics.jsonl")
            self._take(session, recipe.model_copy(update={"stages": []}), list(recipe.stages[:len(done)]))
            self.folder = RunFolder(session, out)
            self.folder.open()  # state.json names this page as the run's writer from now on
        self.replay([e for e in map(from_dict, events) if e is not None])

    def branch(self, src: Path, stages: int) -> None:
        """A new run folder under `runs` with the first `stages` stages of the run in `src`, opened to go on
        from there another way (the same pretrained network: magnitude pruning beside ADMM)."""
        if self.runs is None:
            raise UIError("no runs folder: give one in Runs to branch a run into")
        src = Path(src)
        self.open_run(branch_run(src, stages, fresh(self.runs, f"{src.name}-after{stages}")))

    def _open_folder(self) -> RunFolder | None:
        """The session's run folder under `runs`, created at its first stage (a page that only looks writes
        nothing)."""
        if self.folder is not None or self.runs is None:
            return self.folder
        session = self.session
        out = prepare_out(fresh(self.runs, f"{time.strftime('%Y%m%d-%H%M%S')}-{session.recipe.model}-"
                                            f"{session.recipe.dataset}"))
        with locked(out):
            check_new(out)
            session.run_dir = out
            self.folder = RunFolder(session, out)
            self.folder.open()
            self.folder.writer(session.run_started())  # the session announced itself before its folder existed
            write_atomic(out / "recipe.yaml", self.recipe_yaml())
        return self.folder

    def close_run(self) -> None:
        """The run folder stops growing (state "stopped": `admm-explorer run --resume` or Open go on from it),
        unless another page took it on since."""
        if self.folder is not None:
            folder, self.folder = self.folder, None
            try:
                with folder.claim():
                    folder.end("stopped")
            except RecipeError:
                pass  # continued elsewhere: that writer's state stands
            finally:
                folder.close()

    def _require(self) -> Session:
        if self.session is None:
            raise UIError("no session yet: fix the setup and press Apply setup")
        return self.session

    # stages -----------------------------------------------------------------------------------------
    def run(self, spec: StageSpec) -> None:
        """Run a stage in a worker thread; its events stream to the panels; errors end up in the page."""
        session = self._require()
        with self._lock:
            if self._running:
                raise UIError("a stage is already running: wait for it or press Stop")
            folder = self._open_folder()
            self._claim = ExitStack()
            if folder is not None:
                self._claim.enter_context(folder.claim())  # released when the stage's files are written
            self._running = True
        self.post(Activity(busy=True, what=spec.kind))
        self._worker = threading.Thread(target=self._work, args=(session, spec), name=f"stage-{spec.kind}",
                                        daemon=True)
        self._worker.start()

    def _work(self, session: Session, spec: StageSpec) -> None:
        try:
            folder = self.folder
            record = session.run_stage(spec, checkpoint_dir=folder.checkpoints if folder else None)
            if record.status == "finished":
                self.history.append(spec)
            else:
                self.stopped.append(f"{spec.kind} (stage {record.stage})")
            if folder is not None:
                folder.stage_ended()
                write_atomic(folder.out / "recipe.yaml", self.recipe_yaml())
        except Exception as e:  # noqa: BLE001 - the model keeps its last good state; show why and go on
            self.report(e)
        finally:
            self._claim.close()
            with self._lock:
                self._running = False
                self.post(Activity(busy=False, what=spec.kind))
                self.flush()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running stage ends (tests, scripts); True if nothing is running any more."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return not self._running

    def stop(self) -> None:
        if self.session is not None and self._running:
            self.session.stop()

    def set_rho(self, rho: float) -> None:
        """Live: the running ADMM stage switches to `rho` at its next Z/U round (no effect when idle)."""
        if self._running:
            self._require().set_rho(rho)

    def set_lr(self, lr: float) -> None:
        """Live: the running stage's optimiser takes `lr` from its next batch (no effect when idle)."""
        if self._running:
            self._require().set_lr(lr)

    # reading the model ------------------------------------------------------------------------------
    def global_sparsity(self, compression: float) -> dict[str, float]:
        """Per-layer sparsity of one magnitude threshold over all prunable weights that keeps 1/compression
        of them (torch.nn.utils.prune.global_unstructured's rule), on the current weights."""
        if not compression >= 1:  # nan included
            raise ValueError(f"Global target (×) = {compression:g}: a compression is at least 1 (1 keeps every weight)")
        layers = {name: m.weight.detach().abs() for name, m in self._require().prunable().items()}
        keep = global_keep_counts(layers, max(1, round(sum(w.numel() for w in layers.values()) / compression)))
        return {name: 1 - keep[name] / w.numel() for name, w in layers.items()}

    # exports ----------------------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> Path:
        """A stage checkpoint of the model as it is now: a valid `start` of a recipe or of the Setup panel."""
        session = self._require()
        kind = session.records[-1].kind if session.records else "start"
        return checkpoints.save(session, Path(path), session.stage_index, kind)

    def shrunk_model(self) -> nn.Module:
        """The purified model (after P-RM), else the current one with all-zero filters and channels removed."""
        from ..prm import shrink

        session = self._require()
        if session.arch is not None:
            return session.model
        example = torch.zeros(1, *session.spec.input_shape, device=session.device)
        return shrink(session.model, example)

    def save_shrunk(self, path: Path) -> Path:
        from ..prm import save_shrunk

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_shrunk(self.shrunk_model(), path, base=self._require().recipe.model)
        return path

    def export_onnx(self, path: Path) -> Path:
        """The shrunk model as ONNX (torch.export based exporter, weights inside the file, batch size free)."""
        session = self._require()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        model = copy.deepcopy(self.shrunk_model()).cpu().eval()  # the session's model stays as it is
        example = torch.zeros(2, *session.spec.input_shape)
        try:
            torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
        except ImportError as e:
            raise UIError(f"ONNX export needs the onnx extra (pip install 'admm-explorer[onnx]'): {e}") from None
        return path

    def recipe_yaml(self) -> str:
        """The recipe `admm-explorer run` reproduces this session with: its setup and finished stages."""
        if self.recipe is None:
            raise UIError("no session yet: fix the setup and press Apply setup")
        text = dump_recipe(self.recipe.model_copy(update={"stages": list(self.history)}))
        if self.stopped:
            text = (f"# stopped early and left out (their partial training is not reproduced): "
                    f"{', '.join(self.stopped)}\n" + text)
        return text
