"""Network purification and the whole P-RM step: purify, retrain, remove unused paths, shrink.

Purification criterion (our reconstruction; paper 3 does not publish the exact rule): in every layer the
user pruned, a remaining filter (GEMM row) whose L2 norm is below tau times the mean norm of the
layer's remaining filters is removed, and so is a remaining GEMM column (C*kh*kw, or a linear input)
below tau times the mean of the remaining columns; rows and columns are judged on the same weights.
tau is swept over `taus` (all in (0, 1): within one round the largest filter and column of a layer
stay) and the sweep's choice is the last tau before the first whose accuracy falls more than
`tolerance` below the accuracy before purification (tau = 0 means nothing is purified). A plain
reading of paper 3's rule takes the largest tau within the tolerance; we stop at the first failure instead, because a later
tau that scores within the tolerance again is most likely evaluation noise: in an ad-hoc check on
LeNet-5 with 1,000 validation digits, such a tau (0.6, after 0.4 and 0.5 failed) cost 0.64 points on
the 10,000 test digits, against 0.02 for the tau the stop rule keeps. Every tau is still evaluated and
reported. Rows of the layers that produce the network's outputs are never purified.

At each tau, purification alternates with unused path removal (paths.py) until purification finds
nothing more (docs/algorithms.md section 4): each round judges the norms on the network as path removal leaves it.
Removing a channel zeroes its consumers' slices, which can empty a consumer row or shrink a column, and
an emptied row or column leaves its layer's mean, so the next round judges against a new mean. The
rounds can cascade through layers (a larger tau then need not remove a superset of a smaller one, and
a hidden layer can end with a single channel); the accuracy of a tau is that of its fixed point, so
the sweep judges what the cascade leaves.

Then the caller's short masked retrain runs on the network as path removal leaves it, under masks that
also hold the removed channels' rows and reader slices at zero (no reader learns to rely on a channel
about to go); its result is kept only if it does not lower the purified network's accuracy (a retrain
of a converged network can do that: fresh optimizer state moves every weight at once), else the
purified network goes on as it was. A last unused path removal and the
physical shrink (shrink.py) follow; both are exact, so they change no accuracy.

The masked network is the model with weights multiplied by the masks and `structured_masks_to_bn`
applied (a pruned conv filter's BN gamma and beta are zero); accuracies are measured on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .graph import channel_graph
from .paths import baked, plan, structured_masks_to_bn
from .report import reports
from .shrink import shrink_plan

DEFAULT_TAUS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class PurifyResult:
    model: nn.Module  # physically shrunk; the masked input network itself when `changed` is False
    tau: float  # chosen threshold; 0.0 when no tau kept the accuracy within tolerance
    accuracies: dict[float, float]  # tau -> accuracy of the purified masked network (before retraining)
    accuracy_before: float  # the masked network given to purify
    accuracy_after: float  # the shrunk network, after the retrain (if kept)
    retrain_kept: bool  # False: the retrain lowered the accuracy and was dropped (also False without one)
    masks: dict[str, torch.Tensor]  # after purification, shaped like the unshrunk weights
    removed: dict[str, dict[str, list[int]]]  # unused path removal: module -> {"out": [...], "in": [...]}
    before: dict  # report() of the masked network
    after: dict  # report() of the shrunk network (latencies of both measured in turn)
    changed: bool = True  # False: no tau purified a weight and no path was unused; nothing retrained or shrunk


def masked(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Copy of `model` with weights multiplied by `masks` and pruned filters' BN zeroed."""
    model = baked(model)
    with torch.no_grad():
        for name, mask in masks.items():
            weight = model.get_submodule(name).weight
            weight.mul_(mask.to(weight.device))
    return structured_masks_to_bn(model, masks)


def _weak(norms: torch.Tensor, tau: float) -> torch.Tensor:
    """bool: nonzero norms below tau times the mean of the nonzero norms."""
    alive = norms.gt(0)
    if not alive.any():
        return alive
    return alive & norms.lt(tau * norms[alive].mean())


def purification_masks(model: nn.Module, masks: dict[str, torch.Tensor], tau: float,
                       protected: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """`masks` with the weak rows and columns of each masked weight also zeroed; rows of `protected` stay."""
    out = {}
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight.detach()
        w = (weight * mask.to(weight.device)).flatten(1)  # (F, C*kh*kw)
        rows = _weak(w.norm(dim=1), tau)
        if name in protected:
            rows = torch.zeros_like(rows)
        cols = _weak(w.norm(dim=0), tau)
        keep = ~rows[:, None] & ~cols[None, :]
        out[name] = mask * keep.view(mask.shape).to(mask.device)
    return out


def purified(model: nn.Module, masks: dict[str, torch.Tensor], tau: float, example_input: torch.Tensor,
             protected: frozenset[str] = frozenset()) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Purification at `tau` alternated with unused path removal until purification finds nothing more.

    Each round judges the norms on the network as path removal leaves it (consumer slices of removed
    channels zeroed, all-zero rows gone from the means). Returns masked(model, masks) and the masks:
    `masks` with every purified row and column zeroed; what path removal takes is left to the final plan.
    """
    while True:
        network = masked(model, masks)
        new = purification_masks(plan(network, example_input).graph.model, masks, tau, protected)
        if all(torch.equal(new[name], masks[name]) for name in masks):
            return network, masks
        masks = new


def output_layers(model: nn.Module, example_input: torch.Tensor) -> frozenset[str]:
    """Layers whose rows are the network's outputs (the classifier): never purified, never shrunk."""
    g = channel_graph(model, example_input)
    return frozenset(name for name, space in g.rows.items() if space in g.outputs)


def purify(model: nn.Module, masks: dict[str, torch.Tensor], evaluate: Callable[[nn.Module], float],
           tolerance: float = 0.001, taus: tuple[float, ...] = DEFAULT_TAUS,
           retrain: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None, *,
           input_shape: tuple[int, ...], latency: bool = True) -> PurifyResult:
    """P-RM: purification sweep, retrain(model, masks) in place if given, unused path removal, shrink.

    When no tau purifies any weight and no path is unused, nothing is retrained or shrunk: the result has
    changed False and the masked input network.

    `evaluate` returns accuracy as a fraction; `tolerance` is in the same unit (0.001 = 0.1 points).
    `input_shape` is one sample's (C, H, W), used to trace the network and for the reports.
    `model` is not modified.
    """
    if not all(0 < t < 1 for t in taus):
        raise ValueError(f"taus must lie in (0, 1), got {taus}")
    base = masked(model, masks)
    x = torch.zeros(1, *input_shape, device=next(base.parameters()).device)
    protected = output_layers(base, x)
    accuracy = evaluate(base)
    # one fixed point alive at a time (a model copy each); the chosen one is recomputed, deterministically
    accuracies = {t: evaluate(purified(base, masks, t, x, protected)[0]) for t in sorted(taus)}
    tau = 0.0
    for t, a in accuracies.items():  # ascending
        if accuracy - a > tolerance + 1e-9:
            break
        tau = t
    network, final_masks = purified(base, masks, tau, x, protected) if tau else (base, masks)
    p = plan(network, x)  # the same outputs, constants folded into the readers' biases
    if (not any(r["out"] or r["in"] for r in p.by_layer().values())
            and all(torch.equal(final_masks[name], masks[name]) for name in masks)):
        before, = reports([base], input_shape, latency=latency)
        return PurifyResult(model=base, tau=tau, accuracies=accuracies, accuracy_before=accuracy,
                            accuracy_after=accuracy, retrain_kept=False, masks=masks, removed={}, before=before,
                            after=dict(before), changed=False)
    retrain_kept = False
    if retrain is not None:
        retrained, retrain_masks = p.graph.model, p.masks(final_masks)
        retrain(retrained, retrain_masks)  # in place: p is planned again below
        # the engine's retrain holds the masks (MaskGuard, BN of pruned filters included); another caller's may not
        retrained = masked(retrained, retrain_masks)
        if evaluate(retrained) >= accuracies.get(tau, accuracy):
            network, retrain_kept = retrained, True
        p = plan(network, x)
    removed = p.by_layer()
    shrunk = shrink_plan(p)
    before, after = reports([base, shrunk], input_shape, latency=latency)
    return PurifyResult(
        model=shrunk,
        tau=tau,
        accuracies=accuracies,
        accuracy_before=accuracy,
        accuracy_after=evaluate(shrunk),
        retrain_kept=retrain_kept,
        masks=final_masks,
        removed=removed,
        before=before,
        after=after,
    )
