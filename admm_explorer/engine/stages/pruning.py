"""Pruning stages: admm, retrain, progressive, magnitude, reweighted (papers 1, 2 and 4; docs/algorithms.md 1-3, 5, 6)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...admm import ADMM, LayerTarget, RhoSpec, hard_prune, progressive_plan, resolve_targets, support
from ...admm.admm import global_budget
from ...admm.projections import fit_scale, snap, top_mask
from ...recipe import OptimizerSpec, StageSpec
from ..events import AdmmRound, CandidatesRanked
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


class AdmmPhaseSpec(PruningSpec):
    """A stage with ADMM W-steps: its budget must hold at least one Z/U round (else ADMM never projects)."""

    def admm_epochs_per_phase(self) -> float:
        return self.epochs

    @model_validator(mode="after")
    def _one_round(self):
        epochs = self.admm_epochs_per_phase()
        if self.update_every > epochs:
            raise ValueError(f"update_every = {self.update_every:g} is longer than the {epochs:g} ADMM epochs: no "
                             "Z/U round would run (make update_every at most the ADMM epochs)")
        return self


DEFAULT_SHARES = (0.5, 0.75, 0.875, 1.0)


class QuantizedRetrainSpec(PruningSpec):
    # Layers with a bits target are retrained in rounds: before round i the freeze_shares[i] share of
    # their kept weights with the largest magnitudes is snapped to its level and frozen there (INQ's order,
    # Zhou et al. 2017); the last share is 1, so the final round fine-tunes only what is not quantized
    # (biases, BatchNorm, other layers). [1.0]: snap everything at once, then fine-tune the rest.
    freeze_shares: list[float] = Field(default_factory=lambda: list(DEFAULT_SHARES))

    @field_validator("freeze_shares")
    @classmethod
    def _shares(cls, shares: list[float]) -> list[float]:
        if not shares or any(not a < b <= 1 for a, b in zip([0.0, *shares], shares)) or shares[-1] != 1.0:
            raise ValueError("give increasing shares in (0, 1] ending with 1.0 "
                             "(e.g. [0.5, 0.75, 0.875, 1.0], or [1.0] to snap every weight at once)")
        return shares


class StopSpec(BaseModel):
    """End an ADMM stage at the first Z/U round where every layer's relative residuals are within these
    (W is close to Z, as paper 1 runs it); its epochs are then the most it runs."""

    model_config = ConfigDict(extra="forbid")

    primal: float = Field(gt=0)  # ||W - Z|| / ||W||
    dual: float | None = Field(None, gt=0)  # rho ||Z - Z'|| / ||rho U||; None: not judged


class AdmmSpec(AdmmPhaseSpec):
    kind: Literal["admm"] = "admm"
    epochs: float = Field(30, gt=0)  # W-step budget (the most it runs when `stop` is given)
    stop: StopSpec | None = None
    update_every: float = Field(1.0, gt=0)  # Z/U update period in epochs (fractions allowed)
    rho: RhoSpec = Field(default_factory=RhoSpec)
    targets: Targets
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


class RetrainSpec(QuantizedRetrainSpec):
    kind: Literal["retrain"] = "retrain"
    epochs: float = Field(20, gt=0)
    targets: Targets | None = None  # None: the targets of the last admm/progressive/reweighted stage
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


class ProgressiveSpec(QuantizedRetrainSpec, AdmmPhaseSpec):
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
    # partial solutions kept at each step (paper 2's "dynamic programming"; ours: docs/algorithms.md 2): every
    # kept one runs the step `candidates` times, each run with its own data order, and the best `candidates`
    # by validation accuracy go on; after the last step the best one stays. 1: one chain
    candidates: int = Field(1, ge=1, le=8)

    def step_count(self) -> int:
        return len(self.plan) if self.plan else self.steps

    def step_runs(self) -> int:
        """ADMM + retrain runs in all: k at the first step (from one start), k^2 at each later one."""
        k = self.candidates
        return k + (self.step_count() - 1) * k * k

    def chooses(self) -> bool:
        return self.candidates > 1

    def admm_epochs_per_phase(self) -> float:
        return self.admm_epochs


class MagnitudeSpec(QuantizedRetrainSpec):
    kind: Literal["magnitude"] = "magnitude"
    targets: Targets
    epochs: float = Field(50, gt=0)  # masked retraining budget, split evenly over the steps
    steps: int = Field(1, ge=1)  # 1 = one-shot; T = T prune+retrain steps on the geometric plan
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


class ReweightedSpec(AdmmPhaseSpec):
    """Reweighted ADMM (paper 4, our reconstruction: docs/algorithms.md section 5). No per-layer rates: the
    sparsity emerges from lam; `compression` (optional) is met by one global magnitude top-k at the end."""

    kind: Literal["reweighted"] = "reweighted"
    epochs: float = Field(30, gt=0)
    update_every: float = Field(1.0, gt=0)
    rho: RhoSpec = Field(default_factory=RhoSpec)
    # the L1 weight: Z keeps a weight when |V| (|V| + eps) > lam / rho, V = W + U, so lam scales with rho
    # (1e-6 at rho 1e-3 puts that cut near 0.03, LeNet-5's fc1 scale)
    lam: float = Field(1e-6, gt=0)
    eps: float = Field(1e-3, gt=0)  # a_j = 1 / (|V_j| + eps)
    layers: list[str] = Field(default_factory=lambda: ["*"], min_length=1)  # "*": every prunable layer
    # all prunable weights / kept weights after the stage's final top-k; None: keep Z's support
    compression: float | None = Field(None, gt=1)
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


def round_payload(admm: ADMM, residuals: dict) -> dict:
    """Per layer: the residuals, the target (sparsity None for reweighted ADMM: it has no per-layer rate),
    the histograms and, for a bits target, Z's levels (None otherwise)."""
    histograms, levels = admm.histograms(), admm.levels()
    return {name: {**r.as_dict(), "target": admm.targets[name].sparsity if admm.method == "admm" else None,
                   "bits": admm.targets[name].bits, **histograms[name], "levels": levels.get(name)}
            for name, r in residuals.items()}


def admm_phase(session, ctx, phase: str, targets: dict[str, LayerTarget], epochs: float, update_every: float,
               rho: RhoSpec, optimizer: OptimizerSpec, stop: StopSpec | None = None, **method) -> ADMM | None:
    """W-steps on loss + penalty, a Z/U round every `update_every` epochs; the ADMM object, None if stopped.
    With `stop`, the phase ends at the first round whose residuals are all within it (that round's event
    says converged). `method`: ADMM's method, lam and eps (reweighted ADMM)."""
    carried = {name: m for name, m in session.masks.items() if name in targets}
    admm = ADMM(session.model, targets, rho=rho, masks=carried, **method)
    rounds = [0]

    def on_period(done: int, epochs_done: float) -> bool:
        if session.pending_rho is not None:
            admm.set_rho(session.pending_rho)
            session.pending_rho = None
        try:
            residuals = admm.update()
        except FloatingPointError as e:
            raise StageFailed(f"stage {ctx.index} ({ctx.spec.kind}, {phase}): {e}") from None
        rounds[0] += 1
        converged = stop is not None and all(r.within(stop.primal, stop.dual) for r in residuals.values())
        session.emit(AdmmRound(stage=ctx.index, phase=phase, round=rounds[0], epoch=epochs_done, step=ctx.step,
                               layers=round_payload(admm, residuals), converged=converged))
        return converged

    with session.enforce_masks(release=targets) as after_step:  # ADMM may move quantized layers it targets
        finished = ctx.train(phase, epochs, optimizer, penalty=admm.penalty, period_epochs=update_every,
                             on_period=on_period, after_step=after_step)
    return admm if finished else None


Levels = dict[str, tuple[torch.Tensor, int]]  # layer -> (alpha, bits): its levels alpha * Q


@torch.no_grad()
def prune_to(session, targets: dict[str, LayerTarget]) -> Levels:
    """Hard prune: mask = support of Proj(W) (within the masks already in force); W <- W * mask, and the
    BN gamma and beta of every pruned filter <- 0 (hard_prune; MaskGuard holds both from then on).

    Returns the levels of the layers with a bits target, alpha fitted to their kept weights now
    (retrain_phase snaps the weights onto them).
    """
    layers = session.prunable()
    levels = {}
    for name, target in targets.items():
        w = layers[name].weight
        if target.sparsity is not None or name in session.masks:
            mask = support(w, target, session.masks.get(name))
            session.masks[name] = mask
        if target.bits is not None:
            kept = session.masks.get(name, torch.ones_like(w, dtype=torch.bool))
            levels[name] = (fit_scale(w[kept], target.bits), target.bits)
        session.quantized.discard(name)  # on levels again only once retrain_phase has snapped it
    hard_prune(session.model, session.masks)
    return levels


def retrain_phase(session, ctx, phase: str, epochs: float, optimizer: OptimizerSpec,
                  levels: Levels | None = None, shares=DEFAULT_SHARES) -> bool:
    """Masked retraining with a fresh optimiser (no momentum from before the prune); False if stopped.

    With `levels` (prune_to's) the quantized layers are moved onto their levels in rounds, one per share:
    before each, the largest-magnitude free kept weights are snapped and frozen until that share of the
    layer's kept weights is; the epochs are split evenly over the rounds. After the last (share 1.0)
    every quantized layer holds only its levels, and later stages keep it there (Session.quantized).
    """
    if not levels:
        with session.enforce_masks() as after_step:
            return ctx.train(phase, epochs, optimizer, after_step=after_step)
    layers = session.prunable()
    frozen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (bool frozen, values there)
    for share in shares:
        with torch.no_grad():
            for name, (alpha, bits) in levels.items():
                w = layers[name].weight
                kept = session.masks.get(name, torch.ones_like(w, dtype=torch.bool))
                done, values = frozen.get(name, (torch.zeros_like(kept), torch.zeros_like(w)))
                more = round(share * int(kept.sum())) - int(done.sum())
                if more > 0:  # INQ's order: the largest magnitudes first
                    scores = torch.where(kept & ~done, w.abs(), -1.0).flatten()
                    new = top_mask(scores, more).view_as(w)
                    values = torch.where(new, snap(w, alpha, bits), values)
                    done = done | new
                frozen[name] = (done, values)
        with session.enforce_masks(frozen) as after_step:  # attaching writes the frozen values into W
            if not ctx.train(f"{phase} ({share:.0%} quantized)", epochs / len(shares), optimizer,
                             after_step=after_step):
                return False
    session.quantized |= set(levels)  # from now on every stage holds them on their levels
    return True


def run_admm(session, spec: AdmmSpec, ctx) -> None:
    targets = resolve_targets(session.model, spec.targets)
    session.targets = targets
    admm_phase(session, ctx, "admm", targets, spec.epochs, spec.update_every, spec.rho, spec.optimizer, spec.stop)


def run_retrain(session, spec: RetrainSpec, ctx) -> None:
    targets = resolve_targets(session.model, spec.targets) if spec.targets is not None else session.targets
    if not targets:
        raise StageFailed(f"stage {ctx.index} (retrain): no targets to prune to; give targets, or run an admm, "
                          "progressive or reweighted stage first")
    session.targets = targets
    levels = prune_to(session, targets)
    retrain_phase(session, ctx, "retrain", spec.epochs, spec.optimizer, levels, spec.freeze_shares)


def step_targets(final: dict[str, LayerTarget], sparsity: dict[str, float], last: bool) -> dict[str, LayerTarget]:
    """The final targets with this step's sparsities. Bits only in the last step: weights snapped onto
    levels earlier would tie in magnitude, and the next step's prune would then pick by index."""
    if last:
        return {name: t.at_sparsity(sparsity[name]) if name in sparsity else t for name, t in final.items()}
    return {name: final[name].model_copy(update={"bits": None}).at_sparsity(s) for name, s in sparsity.items()}


def geometric_plans(final: dict[str, LayerTarget], steps: int) -> list[dict[str, float]]:
    """Per step, each pruned layer's total sparsity: keep-fraction shrinking geometrically to the final target."""
    per_layer = {name: progressive_plan(t.sparsity, steps) for name, t in final.items() if t.sparsity is not None}
    return [{name: plan[i] for name, plan in per_layer.items()} for i in range(steps)]


def progressive_step(session, ctx, spec: ProgressiveSpec, targets: dict[str, LayerTarget], label: str) -> bool:
    """One step: ADMM towards `targets` (z, u, rho afresh; earlier zeros stay zero through session.masks), hard
    prune, masked retrain; False if stopped."""
    if not admm_phase(session, ctx, f"admm {label}", targets, spec.admm_epochs, spec.update_every, spec.rho,
                      spec.optimizer):
        return False
    session.targets = targets
    levels = prune_to(session, targets)
    return retrain_phase(session, ctx, f"retrain {label}", spec.retrain_epochs, spec.retrain_optimizer, levels,
                         spec.freeze_shares)


def run_progressive(session, spec: ProgressiveSpec, ctx) -> None:
    final = resolve_targets(session.model, spec.targets)
    plans = spec.plan or geometric_plans(final, spec.steps)
    steps, k = len(plans), spec.candidates
    if k == 1:
        for t, plan in enumerate(plans, 1):
            if not progressive_step(session, ctx, spec, step_targets(final, plan, t == steps), f"{t}/{steps}"):
                return
        session.targets = final
        return
    # a beam of partial solutions: (snapshot, its run index at each step); candidates of one step share its
    # targets, so their accuracies compare like with like. Each run trains its own phases, so its own data order
    split = "test" if session.data.validation_batches is None else "validation"
    beam = [(session.snapshot(), ())]
    for t, plan in enumerate(plans, 1):
        targets = step_targets(final, plan, t == steps)
        runs = []  # (accuracy, snapshot, path)
        for parent, path in beam:
            for j in range(1, k + 1):
                session.restore(parent)
                name = ".".join(map(str, (*path, j)))
                if not progressive_step(session, ctx, spec, targets, f"{t}/{steps}, candidate {name}"):
                    return
                runs.append((session.evaluate(split=split)[1], session.snapshot(), (*path, j)))
        runs.sort(key=lambda run: -run[0])  # stable: of equal accuracies the earlier run goes on
        keep = k if t < steps else 1
        beam = [(snapshot, path) for _, snapshot, path in runs[:keep]]
        session.emit(CandidatesRanked(stage=ctx.index, step=t, steps=steps, selected_on=split, ranked=[
            {"candidate": ".".join(map(str, path)), "accuracy": accuracy, "kept": i < keep}
            for i, (accuracy, _, path) in enumerate(runs)]))
    session.restore(beam[0][0])
    session.targets = final


def run_magnitude(session, spec: MagnitudeSpec, ctx) -> None:
    final = resolve_targets(session.model, spec.targets)
    plans = geometric_plans(final, spec.steps)
    for t, plan in enumerate(plans, 1):
        targets = step_targets(final, plan, t == spec.steps)
        session.targets = targets
        levels = prune_to(session, targets)
        if not retrain_phase(session, ctx, f"retrain {t}/{spec.steps}", spec.epochs / spec.steps, spec.optimizer,
                             levels, spec.freeze_shares):
            return
    session.targets = final


def reweighted_layers(model, spec: ReweightedSpec) -> dict[str, LayerTarget]:
    """The stage's layers as targets without a rate (sparsity 0: reweighted ADMM sets no per-layer rate)."""
    return resolve_targets(model, {name: 0.0 for name in spec.layers})


def check_reweighted(spec: ReweightedSpec, model) -> None:
    reweighted_layers(model, spec)  # the names; whether `compression` is reachable depends on earlier stages


def run_reweighted(session, spec: ReweightedSpec, ctx) -> None:
    """Reweighted ADMM, then what the next retrain prunes to: Z's support (its kept set becomes the mask),
    or, with `compression`, one global magnitude top-k of W."""
    targets = reweighted_layers(session.model, spec)
    if spec.compression is not None:  # before any work: the other layers alone may keep too many weights
        try:
            global_budget(session.model, targets, spec.compression)
        except ValueError as e:
            raise StageFailed(f"stage {ctx.index} (reweighted): {e}") from None
    admm = admm_phase(session, ctx, "reweighted admm", targets, spec.epochs, spec.update_every, spec.rho,
                      spec.optimizer, method="reweighted", lam=spec.lam, eps=spec.eps)
    if admm is None:
        return
    layers = session.prunable()
    if spec.compression is None:
        keep = {}
        for name, layer in admm.layers.items():
            keep[name] = int(torch.count_nonzero(layer.kept))
            if keep[name]:
                session.masks[name] = layer.kept.clone()  # the retrain keeps exactly Z's support
            else:
                keep[name] = 1  # Z is all zero: the largest weight stays, so the layer still passes a signal
    else:
        keep = admm.global_keep(spec.compression)
    session.targets = {name: LayerTarget(sparsity=1 - keep[name] / layers[name].weight.numel())
                       for name in targets}


register(StageEntry("admm", AdmmSpec, run_admm, epochs=lambda s: s.epochs, check=check_targets))
register(StageEntry("retrain", RetrainSpec, run_retrain, epochs=lambda s: s.epochs, check=check_targets,
                    prunes=True))
register(StageEntry("progressive", ProgressiveSpec, run_progressive,
                    epochs=lambda s: s.step_runs() * (s.admm_epochs + s.retrain_epochs), check=check_progressive,
                    prunes=True))
register(StageEntry("magnitude", MagnitudeSpec, run_magnitude, epochs=lambda s: s.epochs, check=check_targets,
                    prunes=True))
register(StageEntry("reweighted", ReweightedSpec, run_reweighted, epochs=lambda s: s.epochs,
                    check=check_reweighted))
