"""ADMM pruning for any training loop (and for the engine):

    admm = ADMM(model, {"conv1": 0.8, "fc1": {"sparsity": 0.991}}, rho=1e-3)
    loss = criterion(model(x), y) + admm.penalty()      # W-step: ordinary optimiser steps on this
    residuals = admm.update()                           # every Z/U period: {name: Residuals}
    masks = admm.hard_prune()                           # at the end: {name: bool mask}, applied to W

Reweighted ADMM (our reconstruction of paper 4): ADMM(model, {"*": 0.0}, method="reweighted", lam=1e-6),
then hard_prune(compression=300) for one global top-k instead of per-layer rates.
"""
from __future__ import annotations

import math
from typing import Literal, Mapping, Optional

import torch
from torch import Tensor, nn

from ..models import prunable_layers
from .masks import hard_prune
from .projections import apply_support, global_keep_counts, support
from .schedules import RhoSpec
from .state import LayerADMM, LayerJoint, LayerReweighted, Residuals, layer_state
from .targets import TargetLike, resolve_targets

HIST_EDGES = 61  # bin edges of histograms(): 60 bins symmetric around 0
# a widened range is this times max|W|: a weight growing slowly does not rebin every round, and the largest
# weight lies inside a bin (at 1.25 or 1.2 it would sit exactly on an edge, its bin decided by rounding)
HIST_WIDEN = 1.3


class ADMM:
    """ADMM variables of every targeted layer of `model`; the weights stay the modules' Parameters.

    rho: a RhoSpec, or a bare initial rho for the default geometric schedule (x1.3 a round, cap 1.0).
    method "admm": hard-threshold ADMM (paper 1); "reweighted": our reconstruction of paper 4 with
    lam and eps (starting points; tune lam together with rho: a weight is kept when |W + U| (|W + U| + eps)
    exceeds lam / rho).
    `masks` ({name: bool}): weights pruned by an earlier progressive step, kept at zero in Z.
    ADMM's tensors live on each weight's device (and follow it if the model moves).
    """

    def __init__(self, model: nn.Module, targets: Mapping[str, TargetLike], rho: RhoSpec | float = 1e-3,
                 method: Literal["admm", "reweighted"] = "admm", lam: float = 1e-6, eps: float = 1e-3,
                 masks: Optional[Mapping[str, Tensor]] = None):
        self.model = model
        self.targets = resolve_targets(model, targets)
        if not self.targets:
            raise ValueError("targets select no prunable layer: name layers or use '*'")
        if method not in ("admm", "reweighted"):
            raise ValueError(f"method={method!r} is not allowed: use 'admm' or 'reweighted'")
        self.method = method
        masks = dict(masks or {})
        if set(masks) - set(self.targets):
            raise ValueError(f"masks given for layers without a target: {sorted(set(masks) - set(self.targets))}")
        modules = prunable_layers(model)
        self._modules = {name: modules[name] for name in self.targets}
        self.layers: dict[str, LayerADMM | LayerJoint] = {}
        self._edges: dict[str, Tensor] = {}  # (HIST_EDGES,) float64 on the CPU: +-max|W| at the start, only widened
        for name, target in self.targets.items():
            w = self._modules[name].weight.detach()
            if method == "admm":
                self.layers[name] = layer_state(w, target, rho, masks.get(name))
            else:
                self.layers[name] = LayerReweighted(w, target, rho, lam, eps, masks.get(name))
            self._edges[name] = _symmetric_edges(float(w.abs().max()) or 1.0)

    def penalty(self) -> Tensor:
        """sum over layers of rho/2 * ||W - Z + U||_F^2: add it to the task loss in the W-step."""
        return sum(layer.penalty(self._modules[name].weight) for name, layer in self.layers.items())

    def update(self) -> dict[str, Residuals]:
        """Z-step, U-step and rho schedule step of every layer.

        Raises FloatingPointError naming the layer when W, Z or the residuals are not finite.
        """
        out = {}
        for name, layer in self.layers.items():
            w = self._modules[name].weight.detach()
            if not bool(torch.isfinite(w).all()):
                raise FloatingPointError(_diverged(name, "its weights W", layer.rho))
            rho = layer.rho
            res = layer.update(w)
            if not (math.isfinite(res.primal) and math.isfinite(res.dual) and layer.finite()):
                raise FloatingPointError(_diverged(name, "Z or the residuals", rho))
            out[name] = res
        return out

    def global_keep(self, compression: float) -> dict[str, int]:
        """Weights each targeted layer keeps when one magnitude threshold over all of them brings the model
        to `compression` (see global_budget). At least 1 each."""
        scores = {name: self._modules[name].weight.detach().abs() if layer.mask is None
                  else torch.where(layer.mask, self._modules[name].weight.detach().abs(), -1.0)
                  for name, layer in self.layers.items()}
        return global_keep_counts(scores, global_budget(self.model, self.layers, compression))

    def hard_prune(self, compression: float | None = None) -> dict[str, Tensor]:
        """Masks = support of each layer's projection of W; W <- W on the mask, exactly 0.0 elsewhere.

        With `compression`, the layers keep global_keep(compression) weights each (their largest
        magnitudes) instead of their targets' counts: reweighted ADMM's final top-k.
        Layers with a bits target are also snapped to their projection (quantized).
        """
        keep = self.global_keep(compression) if compression is not None else {}
        masks = {}
        with torch.no_grad():
            for name, layer in self.layers.items():
                weight = self._modules[name].weight
                target = layer.target
                if name in keep:
                    target = target.model_copy(update={"sparsity": 1 - keep[name] / weight.numel(),
                                                       "structure": "unstructured"})
                masks[name] = support(weight.detach(), target, layer.mask)
                if target.bits is not None:
                    weight.copy_(apply_support(weight.detach(), masks[name], target.bits))
        hard_prune(self.model, masks)
        return masks

    def histograms(self) -> dict[str, dict]:
        """{name: {"edges", "w_counts", "kept_counts"}}: counts of all of W and of W inside Z's kept set.

        The edges start at +-max|W| of the starting W. When a weight lies beyond them, they widen to
        +-HIST_WIDEN * max|W| (kept in the state: later rounds share the widened bins), so no weight is ever
        counted in a bin that does not contain it. w_counts sums to the layer's number of weights;
        kept_counts to the size of Z's kept set.
        """
        out = {}
        for name, layer in self.layers.items():
            w = self._modules[name].weight.detach().flatten()
            edges = self._edges[name]
            top = float(w.abs().max())
            if top > float(edges[-1]):
                edges = self._edges[name] = _symmetric_edges(HIST_WIDEN * top)
            bins = torch.bucketize(w, edges[1:-1].to(w.device, w.dtype), right=True)  # (n,) in 0..HIST_EDGES-2
            out[name] = {
                "edges": edges.tolist(),
                "w_counts": torch.bincount(bins, minlength=HIST_EDGES - 1).tolist(),
                "kept_counts": torch.bincount(bins[layer.kept.flatten()], minlength=HIST_EDGES - 1).tolist(),
            }
        return out

    def levels(self) -> dict[str, list[float]]:
        """{name: the distinct nonzero values of Z, ascending} for the layers with a bits target: the levels
        alpha * Q that Z uses (2 for 1 bit, at most 2^bits - 2 for more; its 0 is where the pruned weights are)."""
        return {name: layer.z[layer.z != 0].unique().tolist()
                for name, layer in self.layers.items() if layer.target.bits is not None}

    def set_rho(self, rho: float) -> None:
        """Every layer switches to this rho (U rescaled, see LayerADMM.set_rho); the schedule goes on from it."""
        for layer in self.layers.values():
            layer.set_rho(rho)

    def state_dict(self) -> dict:
        """Every layer's state and the histogram edges; loadable with torch.load(weights_only=True)."""
        return {"layers": {name: layer.state_dict() for name, layer in self.layers.items()},
                "edges": dict(self._edges)}

    def load_state_dict(self, state: dict) -> None:
        if set(state["layers"]) != set(self.layers):
            raise ValueError(f"state has layers {sorted(state['layers'])}, this ADMM {sorted(self.layers)}")
        for name, layer in self.layers.items():
            layer.load_state_dict(state["layers"][name])
        self._edges = dict(state["edges"])


def _symmetric_edges(top: float) -> Tensor:
    return torch.linspace(-top, top, HIST_EDGES, dtype=torch.float64)


def global_budget(model: nn.Module, layers, compression: float) -> int:
    """Weights the `layers` (names) may keep together so that all prunable weights / nonzero ones after the
    prune = compression, the other prunable layers counted as they are now (their nonzeros).
    Raises ValueError when those alone keep too many. A budget above the layers' size keeps them whole
    (the model then ends above `compression`)."""
    modules = prunable_layers(model)
    others = sum(int(torch.count_nonzero(m.weight)) for name, m in modules.items() if name not in layers)
    budget = round(sum(m.weight.numel() for m in modules.values()) / compression) - others
    if budget < len(layers):
        raise ValueError(f"compression={compression:g} cannot be reached: the layers outside this prune keep "
                         f"{others} nonzero weights; add them to the pruned layers or lower compression")
    return budget


def _diverged(layer: str, what: str, rho: float) -> str:
    return (f"ADMM layer {layer!r}: {what} contain NaN or inf. rho={rho:g} is the likely cause: a penalty "
            "too strong for the W-step's learning rate makes it diverge; lower rho (init or max) or the "
            "learning rate")
