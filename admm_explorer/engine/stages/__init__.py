"""Stage kinds: a registry of (spec model, run function). A recipe's `kind` picks one."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch import nn

from ...models import lookup
from ...recipe import StageSpec

if TYPE_CHECKING:
    from ..session import Session, StageContext


@dataclass(frozen=True)
class StageEntry:
    kind: str
    spec: type[StageSpec]
    run: Callable[["Session", StageSpec, "StageContext"], None]
    epochs: Callable[[StageSpec], float]  # training epochs the stage runs in all (progress, ETA)
    check: Callable[[StageSpec, nn.Module], None] = lambda spec, model: None  # raises ValueError

    def batches(self, spec: StageSpec, batches_per_epoch: int) -> int:
        return math.ceil(self.epochs(spec) * batches_per_epoch)


STAGES: dict[str, StageEntry] = {}


def register(entry: StageEntry) -> StageEntry:
    STAGES[entry.kind] = entry
    return entry


def get_stage(kind: str) -> StageEntry:
    return lookup(STAGES, kind, "stage kind")


from . import dense, pruning, purify  # noqa: E402,F401  (registers the stage kinds)
