"""A Session holds one model on a device with its data and pruning state, and runs stages one at a time.

The recipe runner and the dashboard both drive a Session; subscribers receive every event it emits.
Stop (from any thread) ends the running stage after the current batch.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..data import DataBundle, DataSpec, check_holdout, get_dataset, load_data, seed_for
from ..models import build_model, get_model_spec, layer_macs, prunable_layers
from ..errors import RecipeError, StageFailed
from ..parallel import SINGLE, World, data_parallel
from ..recipe import OptimizerSpec, Recipe, StageSpec
from . import checkpoints
from .events import BatchEnded, EvaluationDone, Event, RunStarted, StageEnded, StageStarted


def resolve_device(name: str, world: World = SINGLE) -> torch.device:
    """auto picks cuda, then mps, then cpu; asking for a device that is not there is a RecipeError. Under
    torchrun (world.size > 1) each process takes its own GPU, cuda:LOCAL_RANK, or the CPU."""
    if world.size > 1:
        if name == "mps":
            raise RecipeError("device = 'mps': a torchrun launch runs on CUDA GPUs or on the CPU (gloo)")
        if name == "cpu" or not torch.cuda.is_available():
            if name.startswith("cuda"):
                raise RecipeError(f"device = {name!r}: CUDA is not available on this machine (use auto or cpu)")
            return torch.device("cpu")
        if world.local_rank >= torch.cuda.device_count():
            raise RecipeError(f"torchrun started {world.local_rank + 1}+ processes on this machine but it has only "
                              f"{torch.cuda.device_count()} CUDA device(s): --nproc_per_node at most that")
        return torch.device("cuda", world.local_rank)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RecipeError(f"device = {name!r}: CUDA is not available on this machine (use auto or cpu)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise RecipeError(f"device = {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RecipeError("device = 'mps': Apple's MPS backend is not available on this machine")
    return torch.device(name)


def data_spec(recipe: Recipe, device: torch.device | None = None, world: World = SINGLE) -> DataSpec:
    return DataSpec(name=recipe.dataset, data_root=recipe.data_root, test_root=recipe.test_root,
                    download=recipe.download, batch_size=recipe.batch_size, test_batch_size=recipe.test_batch_size,
                    validation=recipe.validation,
                    fake_size=recipe.fake_size, fake_shape=recipe.fake_shape, fake_classes=recipe.fake_classes,
                    device=str(device or "cpu"), workers=recipe.workers, rank=world.rank, world=world.size)


def check_recipe(recipe: Recipe) -> None:
    """Everything that can be checked before loading data or training: names, fit, device, stage targets."""
    from .stages import get_stage

    try:
        spec = get_model_spec(recipe.model)
        entry = get_dataset(recipe.dataset)
    except KeyError as e:
        raise RecipeError(str(e)) from None
    shape, classes = entry.shape_for(recipe, spec.input_shape, spec.num_classes)
    if shape is not None and tuple(shape) != tuple(spec.input_shape):
        raise RecipeError(f"model {recipe.model!r} takes inputs of shape {tuple(spec.input_shape)} but dataset "
                          f"{recipe.dataset!r} gives {tuple(shape)}")
    if classes is not None and classes != spec.num_classes:
        raise RecipeError(f"model {recipe.model!r} has {spec.num_classes} outputs but dataset {recipe.dataset!r} "
                          f"has {classes} classes")
    resolve_device(recipe.device)
    if recipe.validation and entry.train_pool is not None:
        check_holdout(entry.train_pool(recipe), recipe.validation)
    if recipe.pretrained and not spec.pretrained_available:
        raise RecipeError(f"pretrained = true: model {recipe.model!r} has no pretrained weights")
    model = spec.build(pretrained=False)
    pruned = recipe.start is not None and checkpoints.check_start(recipe.start, model)
    for i, stage in enumerate(recipe.stages):
        entry = get_stage(stage.kind)
        try:
            entry.check(stage, model)
            check_output_filters(stage, model, spec.input_shape)
            if entry.needs_pruning and not pruned:
                raise ValueError(nothing_pruned(entry))
        except (ValueError, KeyError) as e:
            raise RecipeError(f"stages[{i}] ({stage.kind}): {e}") from None
        pruned = pruned or entry.prunes


def nothing_pruned(entry) -> str:
    return (f"nothing is pruned before it: {entry.needs_pruning}; prune first (admm then retrain, progressive, "
            "magnitude, or reweighted then retrain)")


def check_output_filters(stage: StageSpec, model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Filter pruning removes rows; the rows of a layer that produces the network's outputs are its classes.
    Refused (ValueError) unless the layer's target says prune_outputs: true."""
    from ..admm import resolve_targets

    targets = getattr(stage, "targets", None)
    if not targets:
        return
    filtered = {name: t.structure for name, t in resolve_targets(model, targets).items()
                if "filter" in t.structure and not t.prune_outputs}
    if not filtered:
        return
    from ..prm.purify import output_layers

    outputs = output_layers(model, torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    for name, structure in filtered.items():
        if name in outputs:
            raise ValueError(f"targets.{name}: structure {structure!r} would "
                             f"remove rows of {name}, whose outputs are the network's outputs (its classes): use "
                             "structure 'column' there, leave it out of '*' by naming it, or add prune_outputs: "
                             "true to mean it")


@dataclass
class StageRecord:
    stage: int
    kind: str
    seconds: float
    accuracy: float
    compression: float
    status: str
    checkpoint: str | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Snapshot(NamedTuple):
    model: nn.Module
    state: dict[str, torch.Tensor]  # its state_dict, on the CPU
    masks: dict[str, torch.Tensor]
    targets: dict
    arch: dict | None
    quantized: set[str]


class Session:
    """`world`: this process's place in a torchrun launch (parallel.world()); every rank runs the same
    stages on its shard of each batch, with the same model, masks and ADMM state."""

    def __init__(self, recipe: Recipe, run_dir: Path | None = None, world: World = SINGLE):
        check_recipe(recipe)
        self.recipe = recipe
        self.world = world
        self.spec = get_model_spec(recipe.model)
        self.device = resolve_device(recipe.device, world)
        if self.device.index is not None and self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL and the default stream of this process's GPU
        if world.size > 1 and min(recipe.batch_size, recipe.test_batch_size) < world.size:
            raise RecipeError(f"batch_size = {recipe.batch_size}, test_batch_size = {recipe.test_batch_size}: each "
                              f"of the {world.size} processes needs at least one example of a batch; give at "
                              f"least {world.size}")
        # per-batch figures are read from the device every log_every batches (a read waits for the device)
        self.log_every = recipe.log_every or (1 if self.device.type == "cpu" else 25)
        with world.rank_zero_first():  # a download (download: true, pretrained: true) happens once
            self.data: DataBundle = load_data(data_spec(recipe, self.device, world), self.spec.input_shape,
                                              self.spec.num_classes)
            torch.manual_seed(recipe.seed)
            self.model: nn.Module = build_model(recipe.model, pretrained=recipe.pretrained).to(self.device)
        if self.data.num_classes != self.spec.num_classes:
            raise RecipeError(f"model {recipe.model!r} has {self.spec.num_classes} outputs but the data has "
                              f"{self.data.num_classes} classes")
        self.dense_weights = sum(m.weight.numel() for m in prunable_layers(self.model).values())
        self.dense_params = sum(p.numel() for p in self.model.parameters())
        self.masks: dict[str, torch.Tensor] = {}  # hard masks in force: pruned weights stay exactly zero
        self.targets: dict = {}  # LayerTarget per layer of the last pruning stage (retrain prunes to these)
        self.quantized: set[str] = set()  # layers whose kept weights sit on their levels and stay there
        self.arch: dict | None = None  # architecture of a physically shrunk model (after purify)
        self.pending_rho: float | None = None  # set live by the dashboard; applied at the next Z/U round
        self.pending_lr: float | None = None
        self.records: list[StageRecord] = []
        self.run_dir = run_dir
        self.purify_report: dict | None = None
        self.start_accuracy: float | None = None  # of a start checkpoint, measured before its first stage
        self.weights_version = 0  # counts stages run: the weights may have changed since storage() was cached
        self._storage: tuple[int, dict] | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one stage at a time
        self.stage_index = 0
        if recipe.start is not None:
            checkpoints.load_into(self, recipe.start)

    # events -----------------------------------------------------------------------------------------
    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def emit(self, event: Event) -> None:
        for fn in list(self._subscribers):
            fn(event)

    def run_started(self) -> RunStarted:
        return RunStarted(run_dir=str(self.run_dir) if self.run_dir else None, model=self.recipe.model,
                          dataset=self.recipe.dataset, device=str(self.device), test_set=self.data.test_description,
                          layers=self.layer_info(), dense_weights=self.dense_weights)

    def announce(self) -> None:
        self.emit(self.run_started())

    # control ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the running stage to end after its current batch (safe from any thread)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def stopped(self) -> bool:
        """Whether a stop was asked for during the stage: on this process, or under torchrun on any (all ranks
        then agree, even when the request reached one of them after the last batch)."""
        if self.world.size == 1:
            return self.stop_requested
        return bool(self.world.sum(torch.tensor([float(self.stop_requested)], device=self.device)).item())

    def set_rho(self, rho: float) -> None:
        """Change rho of every ADMM layer at the next Z/U round (U is rescaled with it)."""
        if not (rho > 0 and math.isfinite(rho)):
            raise RecipeError(f"rho = {rho!r}: must be a positive number")
        self.pending_rho = float(rho)

    def set_lr(self, lr: float) -> None:
        """Change the learning rate of the running stage from its next batch on."""
        if not (lr > 0 and math.isfinite(lr)):
            raise RecipeError(f"lr = {lr!r}: must be a positive number")
        self.pending_lr = float(lr)

    @contextmanager
    def enforce_masks(self, frozen: dict | None = None, release=()):
        """While open, the masks in force hold: gradients outside them are zeroed and pruned weights are
        re-zeroed after every step. So do `frozen` weights ({name: (bool, values)}, see MaskGuard) at their
        values, and the weights of quantized layers (not in `frozen` or `release`) at their current values.
        Yields the after-step callable for StageContext.train (None: nothing to hold)."""
        frozen = dict(frozen or {})
        layers = self.prunable()
        for name in self.quantized - set(release) - set(frozen):
            w = layers[name].weight.detach()
            frozen[name] = (torch.ones_like(w, dtype=torch.bool), w.clone())
        if not self.masks and not frozen:
            yield None
            return
        from ..admm import MaskGuard

        guard = MaskGuard(self.model, self.masks, frozen)
        guard.attach()
        try:
            yield guard.after_step
        finally:
            guard.detach()

    # measurements -----------------------------------------------------------------------------------
    def prunable(self) -> dict[str, nn.Module]:
        return prunable_layers(self.model)

    def layer_info(self) -> dict[str, dict]:
        """Prunable layer -> shape, weights, nonzero weights, MACs of one sample, of the model as it is now
        (the shrunk one after P-RM or a shrunk checkpoint)."""
        macs = layer_macs(self.model, self.spec.input_shape)
        return {name: {"shape": list(m.weight.shape), "weights": m.weight.numel(),
                       "nonzero": int(torch.count_nonzero(m.weight)), "macs": macs[name]}
                for name, m in self.prunable().items()}

    def layer_stats(self) -> dict[str, dict]:
        out = {}
        for name, m in self.prunable().items():
            n, nz = m.weight.numel(), int(torch.count_nonzero(m.weight))
            out[name] = {"weights": n, "nonzero": nz, "sparsity": 1 - nz / n}
        return out

    def storage(self) -> dict:
        """The model's size coded as admm.storage describes: bytes compressed and of the dense float32
        network this session started from (also after P-RM shrank it), bits per original prunable weight.
        Computed once per model state (weights change only inside run_stage): on resnet50 it takes seconds,
        and a stage's end, the run's summary and the state file all report it."""
        from ..admm.storage import model_storage

        if self._storage is None or self._storage[0] != self.weights_version:
            self._storage = (self.weights_version, model_storage(self.model, self.dense_params, self.dense_weights))
        return self._storage[1]

    def compression(self) -> float:
        """Prunable weights of the dense model / nonzero prunable weights now."""
        nonzero = sum(int(torch.count_nonzero(m.weight)) for m in self.prunable().values())
        return self.dense_weights / max(nonzero, 1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None, split: str = "test") -> tuple[float, float]:
        """(mean cross-entropy, top-1 accuracy) on the test set, or on the validation set held out of training."""
        model = model or self.model
        if split not in ("test", "validation"):
            raise ValueError(f"split = {split!r}: test or validation")
        batches = {"test": self.data.test_batches, "validation": self.data.validation_batches}[split]
        if batches is None:
            raise RecipeError("no validation set: give the recipe validation = N (training examples to hold out)")
        was_training = model.training
        model.eval()
        loss_sums, corrects, n = [], [], 0  # per batch, on the device: read once at the end
        for x, y in batches():
            x, y = self.inputs(x, y)
            with self.autocast():
                out = model(x)
            loss_sums.append(nn.functional.cross_entropy(out.float(), y, reduction="sum"))
            corrects.append((out.argmax(1) == y).sum())
            n += len(y)
        model.train(was_training)
        loss_sum = sum(torch.stack(loss_sums).tolist()) if loss_sums else 0.0
        correct = int(torch.stack(corrects).sum()) if corrects else 0
        if self.world.size > 1:  # each rank read its own part of the set (BatchPlan): add them up
            loss_sum, correct, n = self.world.sum(
                torch.tensor([loss_sum, correct, n], dtype=torch.float64, device=self.device)).tolist()
        return loss_sum / n, correct / n

    def inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device, in the recipe's memory format (a no-op for data held there already)."""
        fmt = torch.channels_last if self.recipe.channels_last and x.dim() == 4 else torch.preserve_format
        return x.to(self.device, non_blocking=True, memory_format=fmt), y.to(self.device, non_blocking=True)

    def autocast(self):
        """The recipe's precision for a forward pass (float32: no autocast)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.recipe.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # stages -----------------------------------------------------------------------------------------
    def run_stage(self, spec: StageSpec, checkpoint_dir: Path | None = None) -> StageRecord:
        """Run one stage; returns its record. Raises StageFailed (or any error of the stage's code) with the
        session back as it was before the stage."""
        from .stages import get_stage

        entry = get_stage(spec.kind)
        try:
            entry.check(spec, self.model)
            check_output_filters(spec, self.model, self.spec.input_shape)
            if entry.needs_pruning and not self.masks:
                raise ValueError(nothing_pruned(entry))
        except (ValueError, KeyError) as e:
            raise RecipeError(f"{spec.kind}: {e}") from None
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("a stage is already running in this session")
        try:
            self._stop.clear()
            index = self.stage_index
            ctx = StageContext(self, index, spec, entry.batches(spec, len(self.data.train_batches(0))))
            self.emit(StageStarted(stage=index, stage_kind=spec.kind, epochs=entry.epochs(spec),
                                   total_batches=ctx.total_batches))
            self.weights_version += 1
            if not self.records and self.recipe.start is not None and self.start_accuracy is None:
                self.start_accuracy = self.evaluate()[1]  # what judge() compares the first stage with
            start = time.perf_counter()
            # a stage that fails, in any way, hands back the model, masks and targets it started from
            saved = self.snapshot()
            try:
                entry.run(self, spec, ctx)
                seconds = time.perf_counter() - start
                _, accuracy = self.evaluate()
                status = "stopped" if self.stopped() else "finished"
                if status == "finished":
                    self.judge(index, spec, accuracy, entry.epochs(spec))
            except BaseException:
                self.restore(saved)
                raise
            path = None
            if checkpoint_dir is not None and status == "finished":
                path = checkpoints.save(self, checkpoint_dir / f"stage{index}-{spec.kind}.pt", index, spec.kind)
            record = StageRecord(index, spec.kind, seconds, accuracy, self.compression(), status,
                                 str(path) if path else None)
            if status == "finished":
                self.records.append(record)
                self.stage_index += 1
            self.emit(StageEnded(stage=index, stage_kind=spec.kind, seconds=seconds, accuracy=accuracy,
                                 compression=record.compression, status=status, checkpoint=record.checkpoint,
                                 storage=self.storage()))
            return record
        finally:
            self._lock.release()

    def snapshot(self) -> Snapshot:
        """What a stage may change, copied: the weights to host memory (a snapshot never needs the model's
        size on the GPU), the masks, targets, architecture and quantized layers."""
        return Snapshot(self.model, {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
                        dict(self.masks), dict(self.targets), self.arch, set(self.quantized))

    def restore(self, snapshot: Snapshot) -> None:
        self.model = snapshot.model
        self.model.load_state_dict(snapshot.state)
        self.masks, self.targets = dict(snapshot.masks), dict(snapshot.targets)
        self.arch, self.quantized = snapshot.arch, set(snapshot.quantized)

    def judge(self, index: int, spec: StageSpec, accuracy: float, epochs: float) -> None:
        """A stage that trained the network into uselessness fails (StageFailed) instead of passing as finished:
        test accuracy at chance although the stage started above it, or after a full epoch of pretraining from
        scratch; an ADMM stage more than 20 points below the accuracy it started from (before any pruning:
        rho too large). Only stages that prune nothing are judged: a hard prune to an extreme rate with a
        short retrain may end at chance by the user's choice. FakeData's random labels make accuracy
        meaningless: not judged."""
        if self.recipe.dataset == "fake" or spec.kind not in ("pretrain", "admm", "reweighted"):
            return
        chance = 1 / self.data.num_classes
        before = self.records[-1].accuracy if self.records else self.start_accuracy
        where = f"stage {index} ({spec.kind})"
        if accuracy <= 1.5 * chance and before is not None and before > 2 * chance:
            raise StageFailed(f"{where}: the test accuracy fell from {before:.2%} to {accuracy:.2%} (chance is "
                              f"{chance:.0%}); the stage was undone. Lower its learning rate"
                              + (" or rho." if spec.kind != "pretrain" else "."))
        if accuracy <= 1.5 * chance and before is None and spec.kind == "pretrain" and epochs >= 1:
            raise StageFailed(f"{where}: after {epochs:g} epochs the test accuracy is {accuracy:.2%}, chance level "
                              "(the network learned nothing); the stage was undone. Lower the learning rate.")
        if spec.kind in ("admm", "reweighted") and before is not None and before - accuracy > 0.2:
            raise StageFailed(f"{where}: ADMM lowered the test accuracy from {before:.2%} to {accuracy:.2%} before "
                              f"any weight was pruned; the stage was undone. rho is likely too large (max "
                              f"{spec.rho.max:g}): lower rho.max or rho.init.")


def make_optimizer(spec: OptimizerSpec, params) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def make_scheduler(spec: OptimizerSpec, optimizer, epochs: int):
    if spec.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    return None


class DivergenceWatch:
    """A loss that runs away without becoming NaN (too high a learning rate or rho): the mean task loss over
    the last `window` batches stays above max(10 x the phase's first batch loss (computed before any step),
    2 ln(classes), twice the loss of guessing uniformly) for `window` batches in a row. Phases shorter than
    two windows are not judged."""

    def __init__(self, num_classes: int, budget: int):
        self.window = min(50, max(10, budget // 10))
        self.floor = 2 * math.log(num_classes)
        self.recent: deque[float] = deque(maxlen=self.window)
        self.start: float | None = None
        self.above = 0

    def diverged(self, loss: float) -> tuple[float, float] | None:
        """(the phase's first loss, the current mean loss) once the loss has diverged, else None."""
        if self.start is None:
            self.start = loss
        self.recent.append(loss)
        if len(self.recent) < self.window:
            return None
        mean = sum(self.recent) / self.window
        self.above = self.above + 1 if mean > max(10 * self.start, self.floor) else 0
        return (self.start, mean) if self.above >= self.window else None


def at_multiple(done: int, every_epochs: float, batches_per_epoch: int) -> bool:
    """True at the batch nearest k * every_epochs for k = 1, 2, ... (periods shorter than a batch: every batch)."""
    period = every_epochs * batches_per_epoch
    if period <= 1:
        return True
    k = math.floor((done + 0.5) / period)
    return k >= 1 and math.floor(k * period + 0.5) == done


class BatchLog:
    """The figures of a phase's batches not yet read from the device, and what reading them decides: one
    BatchEnded per batch, a non-finite or diverging loss (StageFailed: run_stage undoes the stage), a stop
    asked for on any rank. Under torchrun the figures of every rank are summed in the same read."""

    def __init__(self, ctx: "StageContext", phase: str, watch: DivergenceWatch, optimizer, penalised: bool):
        self.ctx, self.phase, self.watch, self.optimizer, self.penalised = ctx, phase, watch, optimizer, penalised
        self.pending: list[tuple] = []  # (epoch, batch, step, lr, global examples, loss, total, correct)
        self.stop_seen = False  # a stop asked for on some rank, as of the last read (torchrun)

    def add(self, epoch: int, batch: int, step: int, loss, total, correct, global_n: int) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.pending.append((epoch, batch, step, lr, global_n, loss.detach(), total.detach(), correct))

    def stopping(self) -> bool:
        """Whether to stop before the next batch: in a world of one as soon as asked (no device read); under
        torchrun once a read saw any rank asked, so that every rank stops at the same batch."""
        session = self.ctx.session
        return session.stop_requested if session.world.size == 1 else self.stop_seen

    def flush(self) -> None:
        session, ctx = self.ctx.session, self.ctx
        world = session.world
        if not self.pending and world.size == 1:
            return
        figures = [torch.stack([loss, total, correct.to(loss.dtype)]) for *_, loss, total, correct in self.pending]
        figures.append(torch.tensor([float(session.stop_requested)], device=session.device))
        values = world.sum(torch.cat(figures)).tolist()  # the one wait for the device
        self.stop_seen = values[-1] > 0
        pending, self.pending = self.pending, []
        where = f"stage {ctx.index} ({ctx.spec.kind}, {self.phase})"
        for (epoch, batch, step, lr, global_n, *_), (loss, total, correct) in zip(pending, zip(*[iter(values)] * 3)):
            loss, total = loss / world.size, total / world.size
            if not math.isfinite(total):
                hint = (" The ADMM penalty is in the loss: rho is the likely cause; lower rho.init or rho.max."
                        if self.penalised and math.isfinite(loss) else
                        " Lower the learning rate (or rho, in an ADMM stage).")
                raise StageFailed(f"{where}: the loss became {total} at epoch {epoch}, batch {batch}; stopped.{hint}")
            runaway = self.watch.diverged(loss)
            if runaway is not None:
                cause = (f"rho (the ADMM penalty is {total - loss:.3g} of the loss) or the learning rate ({lr:g}) "
                         "is likely too high" if self.penalised else f"the learning rate ({lr:g}) is likely too high")
                raise StageFailed(f"{where}: training diverged: the loss rose from {runaway[0]:.3g} to "
                                  f"{runaway[1]:.3g} over the last {self.watch.window} batches (epoch {epoch}, "
                                  f"batch {batch}); stopped: {cause}.")
            session.emit(BatchEnded(stage=ctx.index, phase=self.phase, epoch=epoch, step=step,
                                    total_batches=ctx.total_batches, loss=loss, penalty=total - loss,
                                    accuracy=correct / global_n, lr=lr))


class StageContext:
    """What a stage function needs to train: seeded epochs, stop checks, events, periodic hooks."""

    def __init__(self, session: Session, index: int, spec: StageSpec, total_batches: int):
        self.session, self.index, self.spec, self.total_batches = session, index, spec, total_batches
        self.step = 0  # batches done in this stage, across phases
        self.phase_count = 0
        # fp16: one loss scale for the stage, so a phase (a retrain share, a progressive step) does not start
        # again at 65,536 and skip its first steps; disabled (a no-op) otherwise
        self.scaler = torch.amp.GradScaler(session.device.type, enabled=session.recipe.precision == "fp16")

    def train(self, phase: str, epochs: float, optimizer: OptimizerSpec, *,
              penalty: Callable[[], torch.Tensor] | None = None,
              period_epochs: float | None = None, on_period: Callable[[int, float], bool] | None = None,
              after_step: Callable[[], None] | None = None) -> bool:
        """Train for `epochs` (fractions allowed) on the task loss (+ penalty()); False if stopped.

        Every `period_epochs` (fractions allowed; at the batch nearest each multiple) on_period(batches_done,
        epochs_done) runs: ADMM's Z/U update; when it returns True the phase ends there (evaluated, finished).
        after_step runs after every optimiser step (mask enforcement). Each epoch's shuffle and any
        randomness are seeded from (recipe seed, stage, phase, epoch), so reruns are bit-identical on CPU.

        A batch's figures (loss, penalty, correct) stay on the device; every log_every batches, and before
        each Z/U round, evaluation and the phase's end, BatchLog reads them at once: one wait for the device
        instead of three per batch. The forward runs in the recipe's precision; the penalty is computed
        outside autocast, in float32. Under torchrun the model is wrapped in DDP for the phase.
        """
        s = self.session
        phase_id = self.phase_count
        self.phase_count += 1
        world = s.world
        if s.recipe.channels_last:
            s.model.to(memory_format=torch.channels_last)  # the Parameters stay the same objects
        optimizer_ = make_optimizer(optimizer, s.model.parameters())
        scaler = self.scaler
        n_epochs = math.ceil(epochs)
        scheduler = make_scheduler(optimizer, optimizer_, n_epochs)
        batches_per_epoch = len(s.data.train_batches(0))
        budget = round(epochs * batches_per_epoch)
        eval_every = self.spec.eval_every
        log = BatchLog(self, phase, DivergenceWatch(s.data.num_classes, budget), optimizer_, penalty is not None)
        done = 0
        s.model.train()
        with data_parallel(s.model, world, s.device) as model:
            for epoch in range(n_epochs):
                seed = seed_for(s.recipe.seed, self.index, phase_id, epoch)
                torch.manual_seed(seed)
                loss_sum = torch.zeros((), device=s.device)  # this rank's, over the epoch so far
                correct = torch.zeros((), device=s.device, dtype=torch.long)
                seen = 0  # examples of every rank
                batches = s.data.train_batches(seed)
                for i, (x, y) in enumerate(batches):
                    if done >= budget:
                        break
                    if log.stopping():
                        log.flush()
                        return False
                    if s.pending_lr is not None:
                        for group in optimizer_.param_groups:
                            group["lr"] = s.pending_lr
                        s.pending_lr = None
                    global_n = batches.plan.global_sizes[i]
                    x, y = s.inputs(x, y)
                    with s.autocast():
                        out = model(x)
                    # world 1: the batch's mean; else this rank's share of the global batch's mean, which DDP's
                    # gradient averaging turns into the mean over the global batch (shards may differ by one)
                    loss = (nn.functional.cross_entropy(out.float(), y) if world.size == 1 else
                            nn.functional.cross_entropy(out.float(), y, reduction="sum") * (world.size / global_n))
                    extra = penalty() if penalty is not None else None
                    total = loss + extra if extra is not None else loss
                    batch_correct = (out.argmax(1) == y).sum()
                    log.add(epoch + 1, done + 1, self.step + 1, loss, total, batch_correct, global_n)
                    if len(log.pending) >= s.log_every:
                        log.flush()  # before the step: at log_every 1 a NaN never reaches the weights
                    optimizer_.zero_grad(set_to_none=True)
                    scaler.scale(total).backward()
                    scaler.step(optimizer_)
                    scaler.update()
                    if after_step is not None:
                        after_step()
                    loss_sum += loss.detach() * (global_n / world.size)
                    correct += batch_correct
                    seen += global_n
                    done += 1
                    self.step += 1
                    periodic = on_period is not None and at_multiple(done, period_epochs, batches_per_epoch)
                    evaluate = at_multiple(done, eval_every, batches_per_epoch) or done == budget
                    if periodic or evaluate:
                        log.flush()
                    ended = periodic and on_period(done, done / batches_per_epoch)
                    if ended or evaluate:
                        train_loss, train_correct = world.sum(torch.stack([loss_sum, correct.float()])).tolist()
                        self.evaluation(phase, done / batches_per_epoch, train_loss / max(seen, 1),
                                        train_correct / max(seen, 1))
                    if ended:
                        return True
                log.flush()
                if scheduler is not None:
                    scheduler.step()
        return True

    def evaluation(self, phase: str, epoch: float, train_loss: float | None, train_accuracy: float | None):
        s = self.session
        test_loss, test_accuracy = s.evaluate()
        s.emit(EvaluationDone(stage=self.index, phase=phase, epoch=epoch, step=self.step,
                              train_loss=train_loss, train_accuracy=train_accuracy, test_loss=test_loss,
                              test_accuracy=test_accuracy, compression=s.compression(),
                              sparsity={k: v["sparsity"] for k, v in s.layer_stats().items()}))
        return test_accuracy
