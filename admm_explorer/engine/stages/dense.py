"""pretrain: dense training (masks in force stay in force, so it also fine-tunes a pruned model)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...recipe import OptimizerSpec, StageSpec
from . import StageEntry, register


class PretrainSpec(StageSpec):
    kind: Literal["pretrain"] = "pretrain"
    epochs: float = Field(20, gt=0)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


def run_pretrain(session, spec: PretrainSpec, ctx) -> None:
    with session.enforce_masks() as after_step:
        ctx.train("train", spec.epochs, spec.optimizer, after_step=after_step)


register(StageEntry("pretrain", PretrainSpec, run_pretrain, epochs=lambda s: s.epochs))
