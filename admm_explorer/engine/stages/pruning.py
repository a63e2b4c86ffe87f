"""Pruning stages: admm, retrain, progressive, magnitude (papers 1 and 2; ALGORITHMS.md sections 1-2)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from ...admm import ADMM, LayerTarget, RhoSpec, progressive_plan, resolve_targets, support
from ...recipe import OptimizerSpec, StageSpec
from ..events import AdmmRound
from ..session import StageFailed
from . import StageEntry, register

Targets = dict[str, LayerTarget | float]


class PruningSpec(StageSpec):
    @field_validator("targets", check_fields=False)
    @classmethod
    def _nonempty(cls, targets):
        if targets is not None and not targets:
            raise ValueError("give at least one layer (or '*' for every prunable layer)")
        return targets


class AdmmSpec(PruningSpec):
    kind: Literal["admm"] = "admm"
    epochs: float = Field(30, gt=0)  # W-step budget
    update_every: float = Field(1.0, gt=0)  # Z/U update period in epochs (fractions allowed)
    rho: RhoSpec = Field(default_factory=RhoSpec)
    targets: Targets
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


class RetrainSpec(PruningSpec):
    kind: Literal["retrain"] = "retrain"
    epochs: float = Field(20, gt=0)
    targets: Targets | None = None  # None: the targets of the last admm/progressive stage
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


class ProgressiveSpec(PruningSpec):
    kind: Literal["progressive"] = "progressive"
    targets: Targets  # the final targets
    steps: int = Field(3, ge=1)
    # explicit plan: one {layer: sparsity} per step (overrides the geometric plan of `steps`)
    plan: list[dict[str, float]] | None = None
    admm_epochs: float = Field(10, gt=0)  # per step
    retrain_epochs: float = Field(5, gt=0)  # per step
    update_every: float = Field(1.0, gt=0)
    rho: RhoSpec = Field(default_factory=RhoSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    retrain_optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)

    def step_count(self) -> int:
        return len(self.plan) if self.plan else self.steps


class MagnitudeSpec(PruningSpec):
    kind: Literal["magnitude"] = "magnitude"
    targets: Targets
    epochs: float = Field(50, gt=0)  # masked retraining budget, split evenly over the steps
    steps: int = Field(1, ge=1)  # 1 = one-shot; T = T prune+retrain steps on the geometric plan
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


def check_targets(spec, model) -> None:
    if getattr(spec, "targets", None) is not None:
        resolve_targets(model, spec.targets)


def check_progressive(spec: ProgressiveSpec, model) -> None:
    final = resolve_targets(model, spec.targets)
    for t, step in enumerate(spec.plan or []):
        for layer, s in step.items():
            if layer not in final:
                raise ValueError(f"plan[{t}] names {layer!r}, which has no final target")
            if not 0 <= s <= (final[layer].sparsity or 0):
                raise ValueError(f"plan[{t}].{layer} = {s}: must be in [0, its final sparsity "
                                 f"{final[layer].sparsity}]")


def round_payload(admm: ADMM, residuals: dict, targets: dict[str, LayerTarget]) -> dict:
    histograms = admm.histograms()
    return {name: {**r.as_dict(), "target": targets[name].sparsity, "bits": targets[name].bits,
                   **histograms[name]}
            for name, r in residuals.items()}


def admm_phase(session, ctx, phase: str, targets: dict[str, LayerTarget], epochs: float, update_every: float,
               rho: RhoSpec, optimizer: OptimizerSpec) -> bool:
    """W-steps on loss + penalty, a Z/U round every `update_every` epochs; False if stopped."""
    carried = {name: m for name, m in session.masks.items() if name in targets}
    admm = ADMM(session.model, targets, rho=rho, masks=carried)
    rounds = [0]

    def on_period(done: int, epochs_done: float) -> None:
        if session.pending_rho is not None:
            admm.set_rho(session.pending_rho)
            session.pending_rho = None
        try:
            residuals = admm.update()
        except FloatingPointError as e:
            raise StageFailed(f"stage {ctx.index} ({ctx.spec.kind}, {phase}): {e}") from None
        rounds[0] += 1
        session.emit(AdmmRound(stage=ctx.index, phase=phase, round=rounds[0], epoch=epochs_done, step=ctx.step,
                               layers=round_payload(admm, residuals, targets)))

    with session.enforce_masks() as after_step:
        return ctx.train(phase, epochs, optimizer, penalty=admm.penalty,
                         period_epochs=update_every,
                         on_period=on_period, after_step=after_step)


@torch.no_grad()
def prune_to(session, targets: dict[str, LayerTarget]) -> None:
    """Hard prune: mask = support of Proj(W) (within the masks already in force); W <- W * mask."""
    layers = session.prunable()
    for name, target in targets.items():
        w = layers[name].weight
        mask = support(w, target, session.masks.get(name))
        session.masks[name] = mask
        w.mul_(mask)


def retrain_phase(session, ctx, phase: str, epochs: float, optimizer: OptimizerSpec) -> bool:
    with session.enforce_masks() as after_step:  # a fresh optimiser: no momentum from before the prune
        return ctx.train(phase, epochs, optimizer, after_step=after_step)


def run_admm(session, spec: AdmmSpec, ctx) -> None:
    targets = resolve_targets(session.model, spec.targets)
    session.targets = targets
    admm_phase(session, ctx, "admm", targets, spec.epochs, spec.update_every, spec.rho, spec.optimizer)


def run_retrain(session, spec: RetrainSpec, ctx) -> None:
    targets = resolve_targets(session.model, spec.targets) if spec.targets is not None else session.targets
    if not targets:
        raise StageFailed(f"stage {ctx.index} (retrain): no targets to prune to; give targets, or run an admm "
                          "or progressive stage first")
    session.targets = targets
    prune_to(session, targets)
    retrain_phase(session, ctx, "retrain", spec.epochs, spec.optimizer)


def step_targets(final: dict[str, LayerTarget], sparsity: dict[str, float]) -> dict[str, LayerTarget]:
    return {name: t.model_copy(update={"sparsity": sparsity[name]}) for name, t in final.items()
            if name in sparsity}


def geometric_plans(final: dict[str, LayerTarget], steps: int) -> list[dict[str, float]]:
    """Per step, each layer's total sparsity: keep-fraction shrinking geometrically to the final target."""
    per_layer = {name: progressive_plan(t.sparsity or 0.0, steps) for name, t in final.items()}
    return [{name: plan[i] for name, plan in per_layer.items()} for i in range(steps)]


def run_progressive(session, spec: ProgressiveSpec, ctx) -> None:
    final = resolve_targets(session.model, spec.targets)
    plans = spec.plan or geometric_plans(final, spec.steps)
    steps = len(plans)
    for t, plan in enumerate(plans, 1):
        targets = step_targets(final, plan)
        # z, u, rho start afresh each step; zeros of earlier steps stay zero through session.masks
        if not admm_phase(session, ctx, f"admm {t}/{steps}", targets, spec.admm_epochs, spec.update_every,
                          spec.rho, spec.optimizer):
            return
        session.targets = targets
        prune_to(session, targets)
        if not retrain_phase(session, ctx, f"retrain {t}/{steps}", spec.retrain_epochs, spec.retrain_optimizer):
            return
    session.targets = final


def run_magnitude(session, spec: MagnitudeSpec, ctx) -> None:
    final = resolve_targets(session.model, spec.targets)
    plans = geometric_plans(final, spec.steps)
    for t, plan in enumerate(plans, 1):
        targets = step_targets(final, plan)
        session.targets = targets
        prune_to(session, targets)
        if not retrain_phase(session, ctx, f"retrain {t}/{spec.steps}", spec.epochs / spec.steps, spec.optimizer):
            return
    session.targets = final


register(StageEntry("admm", AdmmSpec, run_admm, epochs=lambda s: s.epochs, check=check_targets))
register(StageEntry("retrain", RetrainSpec, run_retrain, epochs=lambda s: s.epochs, check=check_targets))
register(StageEntry("progressive", ProgressiveSpec, run_progressive,
                    epochs=lambda s: s.step_count() * (s.admm_epochs + s.retrain_epochs), check=check_progressive))
register(StageEntry("magnitude", MagnitudeSpec, run_magnitude, epochs=lambda s: s.epochs, check=check_targets))
