"""Stage kinds: a registry of (spec model, run function). A recipe's `kind` picks one."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch import nn

from ...recipe import StageSpec
from ...registry import Registry

if TYPE_CHECKING:
    from ..session import Session, StageContext


@dataclass(frozen=True)
class StageEntry:
    kind: str
    spec: type[StageSpec]
    run: Callable[["Session", StageSpec, "StageContext"], None]
    epochs: Callable[[StageSpec], float]  # training epochs the stage runs in all (progress, ETA)
    check: Callable[[StageSpec, nn.Module], None] = lambda spec, model: None  # raises ValueError
    prunes: bool = False  # leaves hard masks in force (the weights it prunes are exactly zero)
    needs_pruning: str = ""  # non-empty: why the stage runs only on a pruned model (no masks: refused)

    def batches(self, spec: StageSpec, batches_per_epoch: int) -> int:
        return math.ceil(self.epochs(spec) * batches_per_epoch)


STAGES: Registry[StageEntry] = Registry("stage kind")


def register(entry: StageEntry) -> StageEntry:
    return STAGES.register(entry.kind, entry)


def get_stage(kind: str) -> StageEntry:
    return STAGES.get(kind)


from . import dense, pruning, purify  # noqa: E402,F401  (registers the stage kinds)
