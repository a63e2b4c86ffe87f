"""ADMM variables of one pruned layer: Z, the scaled dual U, rho (docs/algorithms.md sections 1, 3, 4 and 5).

W itself stays the module's Parameter; these objects only read it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .projections import apply_support, reweighted_shrink, support
from .schedules import RhoSpec, next_rho
from .targets import LayerTarget


@dataclass(frozen=True)
class Residuals:
    """One layer's ADMM round (Boyd et al. 2011 with A = I, B = -I)."""

    primal: float  # ||W - Z_k||_F, Z_k the new Z
    dual: float  # rho_k * ||Z_k - Z_{k-1}||_F, rho_k the rho this round ran with
    rho: float  # rho for the next round (after the schedule step)
    mask_flips: float  # fraction of Z_k's kept set not kept by Z_{k-1}; 0 when nothing changed
    sparsity: float  # fraction of exact zeros in Z_k
    w_sparsity: float  # fraction of exact zeros in W
    # the scales of Boyd et al.'s relative stopping criteria (section 3.3.1): primal / w_norm and
    # dual / rho_u_norm compare layers of any size and any rho
    w_norm: float  # ||W||_F
    rho_u_norm: float  # ||rho_k U_k||_F, the unscaled dual after this round (set_rho leaves it unchanged)

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def within(self, primal: float, dual: float | None = None) -> bool:
        """Boyd et al.'s relative stopping test (3.3.1, with eps_abs = 0): ||W - Z|| <= primal ||W||, and
        rho ||Z - Z'|| <= dual ||rho U|| when dual is given."""
        return self.primal <= primal * self.w_norm and (dual is None or self.dual <= dual * self.rho_u_norm)


def _zero_fraction(t: Tensor) -> float:
    return 1 - int(torch.count_nonzero(t)) / t.numel()


def _flips(kept: Tensor, kept_prev: Tensor) -> float:
    """Share of this round's kept weights that the previous round did not keep (0 when none is kept)."""
    n_kept = int(torch.count_nonzero(kept))
    return int(torch.count_nonzero(kept & ~kept_prev)) / n_kept if n_kept else 0.0


class _HalfSquaredDistance(torch.autograd.Function):
    """rho/2 * ||W - C||^2 with its gradient rho * (W - C) written directly: the penalty runs every batch,
    and autograd through (W - Z + U).square().sum() made several passes over W (1.2x a LeNet-5 epoch)."""

    @staticmethod
    def forward(ctx, w: Tensor, c: Tensor, rho: float) -> Tensor:
        ctx.save_for_backward(w, c)
        ctx.rho = rho
        return torch.dist(w, c).square() * (rho / 2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        w, c = ctx.saved_tensors
        return (w - c).mul_(grad * ctx.rho), None, None


class LayerADMM:
    """Z, U and rho of one layer for the constraint `target` (hard-threshold ADMM of paper 1).

    Starts at Z = project(W), U = 0, rho = spec.init (never Z = W: the penalty would be exactly 0).
    `mask` (bool, W's shape): weights already pruned by an earlier progressive step; Z stays 0 outside it.
    Subclasses change the Z-step by overriding z_step.
    """

    _tensors = ("z", "u", "kept", "mask")  # what state_dict saves and what follows W's device

    def __init__(self, w: Tensor, target: LayerTarget, rho: RhoSpec | float, mask: Optional[Tensor] = None):
        w = w.detach()
        if mask is not None and mask.shape != w.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the weight's {tuple(w.shape)}")
        self.target = target
        self.spec = RhoSpec.of(rho)
        self.rho = self.spec.init
        self.mask = None if mask is None else mask.to(device=w.device, dtype=torch.bool)
        self.z, self.kept = self.z_step(w)
        self.u = torch.zeros_like(w)
        self._c_for: tuple = (None, None)  # the (z, u) the cached C = Z - U was computed from

    def z_step(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(Z, kept set) for V = W + U: the projection onto the target's set (inside mask) and its support."""
        keep = support(v, self.target, self.mask)
        return apply_support(v, keep, self.target.bits), keep

    def penalty(self, w: Tensor) -> Tensor:
        """rho/2 * ||W - Z + U||_F^2 as a 0-dim tensor, differentiable in w (gradient rho * (W - Z + U))."""
        self._follow(w)
        if self._c_for[0] is not self.z or self._c_for[1] is not self.u:
            # z and u are only ever replaced, never changed in place: C = Z - U is fixed between rounds
            self._c, self._c_for = self.z - self.u, (self.z, self.u)
        return _HalfSquaredDistance.apply(w, self._c, self.rho)

    def round(self, w: Tensor) -> tuple[float, float, float]:
        """Z-step and U-step at the current rho (no schedule step): (||W - Z||^2, ||Z - Z_prev||^2, ||U||^2)."""
        w = w.detach()
        self._follow(w)
        z_prev = self.z
        self.z, self.kept = self.z_step(w + self.u)
        self.u = self.u + w - self.z
        return tuple(float(torch.linalg.vector_norm(t)) ** 2 for t in (w - self.z, self.z - z_prev, self.u))

    def update(self, w: Tensor) -> Residuals:
        """One Z-step, U-step and rho schedule step; returns this round's residuals."""
        kept_prev, rho = self.kept, self.rho
        primal2, dz2, u2 = self.round(w)
        primal, dual = math.sqrt(primal2), rho * math.sqrt(dz2)
        self.set_rho(next_rho(self.spec, rho, primal, dual))
        return Residuals(primal, dual, self.rho, _flips(self.kept, kept_prev), _zero_fraction(self.z),
                         _zero_fraction(w), float(torch.linalg.vector_norm(w)), rho * math.sqrt(u2))

    def finite(self) -> bool:
        return bool(torch.isfinite(self.z).all())

    def set_rho(self, rho: float) -> None:
        """Switch to a new rho; U is divided by new/old so that rho * U (the unscaled dual) is unchanged."""
        if not rho > 0:
            raise ValueError(f"rho={rho!r} is not allowed: rho must be > 0")
        if rho != self.rho:
            self.u = self.u * (self.rho / rho)
            self.rho = float(rho)

    def state_dict(self) -> dict:
        """rho and the state tensors; loadable with torch.load(weights_only=True)."""
        return {"rho": self.rho, **{name: getattr(self, name) for name in self._tensors}}

    def load_state_dict(self, state: dict) -> None:
        expected = {"rho", *self._tensors}
        if set(state) != expected:
            raise ValueError(f"layer state has keys {sorted(state)}, expected {sorted(expected)}")
        for name in self._tensors:
            old, new = getattr(self, name), state[name]
            if (old is None) != (new is None) or (new is not None and new.shape != old.shape):
                raise ValueError(f"layer state {name!r} does not match this layer (shape or presence)")
            setattr(self, name, None if new is None else new.to(device=self.z.device, dtype=old.dtype))
        self.rho = float(state["rho"])

    def _follow(self, w: Tensor) -> None:
        """Keep the state on W's device (the model may have moved since construction)."""
        if self.z.device != w.device:
            for name in self._tensors:
                t = getattr(self, name)
                if t is not None:
                    setattr(self, name, t.to(w.device))


class LayerJoint:
    """ADMM for a target that is the intersection of several constraint sets (P-RM's filter + column pruning):
    one Z_i and one scaled dual U_i per set S_i, one rho, the penalties summed (docs/algorithms.md section 4).

    Boyd et al.'s ADMM with the stacked constraint [W; W] = [Z_1; Z_2], Z_i in S_i: the Z-step separates into
    the exact projection onto each set, Z_i = Proj_Si(W + U_i), and U_i += W - Z_i. Residuals are those of the
    stacked constraint (primal^2 = sum ||W - Z_i||^2, dual^2 = rho^2 sum ||Z_i - Z_i'||^2, ||W|| counted once
    per set); `kept` is the intersection of the sets' supports, what a hard prune would keep.
    Same interface as LayerADMM; each set's state is a LayerADMM in `parts`.
    """

    def __init__(self, w: Tensor, target: LayerTarget, rho: RhoSpec | float, mask: Optional[Tensor] = None):
        self.target = target
        self.parts = [LayerADMM(w, part, rho, mask) for part in target.constraint_sets()]
        self.kept = self._intersection()

    # one rho schedule and one mask for every part (set_rho moves them together)
    spec = property(lambda self: self.parts[0].spec)
    rho = property(lambda self: self.parts[0].rho)
    mask = property(lambda self: self.parts[0].mask)

    def _intersection(self) -> Tensor:
        kept = self.parts[0].kept
        for part in self.parts[1:]:
            kept = kept & part.kept
        return kept

    @property
    def z(self) -> Tensor:
        """Z_1 on the kept intersection, 0 elsewhere: the point of the target set the Z's agree on."""
        return apply_support(self.parts[0].z, self.kept)

    def finite(self) -> bool:
        return all(bool(torch.isfinite(part.z).all()) for part in self.parts)

    def penalty(self, w: Tensor) -> Tensor:
        """sum_i rho/2 * ||W - Z_i + U_i||_F^2 (gradient rho * sum_i (W - Z_i + U_i))."""
        return sum(part.penalty(w) for part in self.parts)

    def update(self, w: Tensor) -> Residuals:
        """One Z-step and U-step per set, then one rho schedule step on the stacked residuals."""
        w = w.detach()
        kept_prev, rho = self.kept, self.rho
        rounds = [part.round(w) for part in self.parts]  # (primal^2, dz^2, u^2) each
        primal, dual = math.sqrt(sum(r[0] for r in rounds)), rho * math.sqrt(sum(r[1] for r in rounds))
        self.kept = self._intersection()
        self.set_rho(next_rho(self.spec, rho, primal, dual))
        w_norm = math.sqrt(len(self.parts)) * float(torch.linalg.vector_norm(w))
        rho_u_norm = rho * math.sqrt(sum(r[2] for r in rounds))
        return Residuals(primal, dual, self.rho, _flips(self.kept, kept_prev), _zero_fraction(self.kept),
                         _zero_fraction(w), w_norm, rho_u_norm)

    def set_rho(self, rho: float) -> None:
        for part in self.parts:
            part.set_rho(rho)

    def state_dict(self) -> dict:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"parts"} or len(state["parts"]) != len(self.parts):
            raise ValueError(f"layer state has keys {sorted(state)}, expected one state per constraint set "
                             f"({len(self.parts)})")
        for part, part_state in zip(self.parts, state["parts"]):
            part.load_state_dict(part_state)
        self.kept = self._intersection()


def layer_state(w: Tensor, target: LayerTarget, rho: RhoSpec | float, mask: Optional[Tensor] = None
                ) -> LayerADMM | LayerJoint:
    """The ADMM state of one layer: LayerJoint when its target is several constraint sets, else LayerADMM."""
    if len(target.constraint_sets()) > 1:
        return LayerJoint(w, target, rho, mask)
    return LayerADMM(w, target, rho, mask)


class LayerReweighted(LayerADMM):
    """Reweighted ADMM: our reconstruction of paper 4 (its formula is not public), reweighted L1
    after Candes, Wakin & Boyd 2008 inside ADMM (docs/algorithms.md section 5).

    Z-step: Z = reweighted_shrink(W + U, lam / rho, eps), each weight's L1 weight a = 1 / (|W + U| + eps)
    taken from the point being projected, so a weight leaves Z when |W + U| falls below the cut
    |v| (|v| + eps) = lam / rho and enters again when it rises above it. The sparsity of Z emerges from lam;
    the target's sparsity is met only by the final hard prune (support of W). Quantization targets are not
    supported.
    """

    def __init__(self, w: Tensor, target: LayerTarget, rho: RhoSpec | float, lam: float, eps: float,
                 mask: Optional[Tensor] = None):
        if target.bits is not None or target.sparsity is None:
            raise ValueError(f"reweighted ADMM prunes only: the target needs a sparsity and no bits, got {target}")
        if not (lam > 0 and eps > 0):
            raise ValueError(f"lam={lam!r}, eps={eps!r} are not allowed: both must be > 0")
        self.lam, self.eps = lam, eps
        super().__init__(w, target, rho, mask)

    def z_step(self, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.mask is not None:
            v = torch.where(self.mask, v, 0.0)
        z = reweighted_shrink(v, self.lam / self.rho, self.eps)
        return z, z != 0
