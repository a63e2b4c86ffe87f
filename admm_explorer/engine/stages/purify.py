"""purify: P-RM (paper 3) - network purification, unused path removal, physical shrink.

The purification criterion is our reconstruction (paper 3 does not publish it): see prm/purify.py.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...prm import DEFAULT_TAUS, architecture, masked, purify
from ...recipe import OptimizerSpec, StageSpec
from ..events import ModelShrunk, PurifyDone
from . import StageEntry, register
from .pruning import retrain_phase


class PurifySpec(StageSpec):
    kind: Literal["purify"] = "purify"
    tolerance: float = Field(0.001, ge=0, lt=1)  # accuracy loss purification may cost (0.001 = 0.1 points)
    taus: list[float] = Field(default_factory=lambda: list(DEFAULT_TAUS))  # thresholds, x a layer's mean norm
    retrain_epochs: float = Field(2, ge=0)  # short masked retrain after purification
    # small steps on a converged network: a fresh Adam at 1e-3 moved every weight and cost LeNet-5 0.3-0.6
    # points (benchmarks/prm_lenet5.py); the retrain is kept only if it does not lower the accuracy anyway
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(lr=1e-4))
    latency: bool = True  # measure CPU latency before/after (batch 1 and 64)

    def chooses(self) -> bool:
        return True

    @field_validator("taus")
    @classmethod
    def _taus(cls, taus: list[float]) -> list[float]:
        if not taus or not all(0 < t < 1 for t in taus):
            raise ValueError("give one or more thresholds, each in (0, 1)")
        return taus


def run_purify(session, spec: PurifySpec, ctx) -> None:
    # tau and the retrain's keep-or-drop are chosen on the validation set when the recipe holds one out,
    # so that the test accuracy reported after P-RM was not used to pick them
    split = "test" if session.data.validation_batches is None else "validation"

    def evaluate(model, split=split) -> float:
        return session.evaluate(model, split)[1]

    def retrain(model, masks) -> None:
        # the purified copy is retrained in place, under its own masks
        session.model, session.masks = model, masks
        if spec.retrain_epochs > 0:
            retrain_phase(session, ctx, "retrain", spec.retrain_epochs, spec.optimizer)

    dense_model, dense_masks = session.model, session.masks  # Session.run_stage restores them on failure
    result = purify(dense_model, dense_masks, evaluate, spec.tolerance, tuple(spec.taus), retrain,
                    input_shape=session.spec.input_shape, latency=spec.latency)
    if result.changed:
        session.model = result.model.to(session.device)
        session.arch = architecture(result.model, base=session.recipe.model)
        # zeros that remain inside the shrunk layers (unstructured pruning) stay zero from now on
        session.masks = {name: m.weight.detach() != 0 for name, m in session.prunable().items()
                         if name in dense_masks}
        session.targets = {}  # they were fractions of the layers before the shrink
    removed = {name: {"filters": len(r.get("out", [])), "channels": len(r.get("in", []))}
               for name, r in result.removed.items() if r.get("out") or r.get("in")}
    before, after = {"accuracy": result.accuracy_before}, {"accuracy": result.accuracy_after}
    if split == "validation":  # "accuracy" is always the test set's
        before = {"accuracy": evaluate(masked(dense_model, dense_masks), "test"),
                  "validation_accuracy": result.accuracy_before}
        after = {"accuracy": evaluate(result.model, "test"), "validation_accuracy": result.accuracy_after}
    event = PurifyDone(
        stage=ctx.index, tau=result.tau, tolerance=spec.tolerance, selected_on=split,
        sweep=[{"tau": t, "accuracy": a} for t, a in sorted(result.accuracies.items())],
        before={**result.before, **before}, after={**result.after, **after}, removed=removed,
        retrain_kept=result.retrain_kept, changed=result.changed)
    session.purify_report = {k: v for k, v in event.as_dict().items() if k not in ("kind", "time")}
    session.emit(event)
    if result.changed:
        session.emit(ModelShrunk(stage=ctx.index, layers=session.layer_info(), dense_weights=session.dense_weights))



register(StageEntry("purify", PurifySpec, run_purify, epochs=lambda s: s.retrain_epochs,
                    needs_pruning="P-RM removes the filters and channels pruning left (nearly) empty"))
