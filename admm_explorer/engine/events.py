"""Frozen event records the engine emits; subscribers (run-folder writer, progress bars, UI panels) read them.

Every event has a `kind` and serialises to one JSON object (a line of metrics.jsonl) with `as_dict()`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_dir: str | None
    model: str
    dataset: str
    device: str
    test_set: str
    layers: dict  # prunable layer name -> {"shape": [...], "weights": int, "nonzero": int, "macs": int}, as loaded
    dense_weights: int  # prunable weights of the dense network the session was built as (before any P-RM shrink)


@dataclass(frozen=True)
class StageStarted(Event):
    kind: ClassVar[str] = "stage_started"
    stage: int
    stage_kind: str
    epochs: float
    total_batches: int  # batches this stage will run (all its phases), for progress bars and ETA


@dataclass(frozen=True)
class BatchEnded(Event):
    """Emitted when the engine reads the batch's figures from the device: every log_every batches, several
    at once (on the CPU every batch, before that batch's optimiser step)."""

    kind: ClassVar[str] = "batch_ended"
    stage: int
    phase: str  # "train", "admm", "retrain", "admm 2/3" ...
    epoch: int
    step: int  # batches done in this stage so far (1-based), across phases
    total_batches: int
    loss: float  # task loss of the batch (without the ADMM penalty)
    penalty: float
    accuracy: float
    lr: float


@dataclass(frozen=True)
class EvaluationDone(Event):
    kind: ClassVar[str] = "evaluation_done"
    stage: int
    phase: str
    epoch: float  # epochs done in the phase (fractions when eval_every < 1)
    step: int
    train_loss: float | None
    train_accuracy: float | None
    test_loss: float
    test_accuracy: float
    compression: float
    sparsity: dict  # layer -> fraction of exact zeros in W


@dataclass(frozen=True)
class AdmmRound(Event):
    """After each Z/U update. layers: name -> Residuals fields, target sparsity and bits, histogram edges and
    counts, Z's levels (bits targets; None otherwise). Lines written before w_norm, rho_u_norm and levels lack them."""

    kind: ClassVar[str] = "admm_round"
    stage: int
    phase: str
    round: int
    epoch: float
    step: int
    layers: dict
    converged: bool = False  # every layer's residuals within the stage's `stop`: the phase ends here


@dataclass(frozen=True)
class StageEnded(Event):
    kind: ClassVar[str] = "stage_ended"
    stage: int
    stage_kind: str
    seconds: float
    accuracy: float
    compression: float
    status: str  # "finished" | "stopped"
    checkpoint: str | None
    storage: dict | None = None  # admm.storage.model_storage: bytes dense/compressed, bits per weight, per layer


@dataclass(frozen=True)
class PurifyDone(Event):
    kind: ClassVar[str] = "purify_done"
    stage: int
    tau: float
    tolerance: float
    sweep: list  # [{"tau", "accuracy"}] for every tau, accuracy on the set named by selected_on
    before: dict  # params, macs, size_bytes, latency_ms_b1, latency_ms_b64, accuracy (test set),
    after: dict  # and validation_accuracy when tau was chosen on a validation set
    removed: dict  # layer -> {"filters": n, "channels": n}
    retrain_kept: bool = True  # False: the short retrain lowered the accuracy and was dropped
    selected_on: str = "test"  # "validation" | "test": the set tau and the retrain's keep-or-drop were judged on
    changed: bool = True  # False: nothing could be removed; the network was left as it was (before == after)


@dataclass(frozen=True)
class CandidatesRanked(Event):
    """A progressive stage with candidates > 1 finished a step: every partial solution of that step, best
    first, and which of them go on (the best `candidates`; after the last step the one the stage keeps)."""

    kind: ClassVar[str] = "candidates_ranked"
    stage: int
    step: int  # 1-based
    steps: int
    selected_on: str  # "validation" | "test"
    ranked: list  # [{"candidate": "2.1" (its run at each step so far), "accuracy": ..., "kept": bool}]


@dataclass(frozen=True)
class ModelShrunk(Event):
    """P-RM replaced the model by a physically smaller one: `layers` describes it as RunStarted does."""

    kind: ClassVar[str] = "model_shrunk"
    stage: int
    layers: dict
    dense_weights: int


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    status: str  # "finished" | "stopped"
    summary: dict


@dataclass(frozen=True)
class RunFailed(Event):
    kind: ClassVar[str] = "run_failed"
    stage: int | None
    message: str


def from_dict(record: dict) -> Event | None:
    """The event a metrics.jsonl line holds (as_dict's inverse); None for a kind this version does not know.
    Fields added since the line was written take their defaults; a RunStarted from before ModelShrunk
    existed describes a dense network (its weights are its dense weights, all nonzero)."""
    cls = KINDS.get(record.get("kind"))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in record.items() if k in names}
    if cls is RunStarted:
        fields["layers"] = {name: {"nonzero": info["weights"], **info} for name, info in fields["layers"].items()}
        fields.setdefault("dense_weights", sum(info["weights"] for info in fields["layers"].values()))
    return cls(**fields)


KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in (
    RunStarted, StageStarted, BatchEnded, EvaluationDone, AdmmRound, StageEnded, CandidatesRanked, PurifyDone,
    ModelShrunk, RunFinished, RunFailed)}
