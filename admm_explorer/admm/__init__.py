"""ADMM weight pruning: constraints, projections, per-layer state, schedules, masks (docs/algorithms.md 1-5)."""
from __future__ import annotations

from .admm import ADMM
from .masks import MaskGuard, hard_prune, magnitude_masks, to_prune_form
from .projections import project, support
from .schedules import RhoSpec, progressive_plan
from .state import Residuals
from .targets import LayerTarget, resolve_targets

__all__ = [
    "ADMM", "LayerTarget", "resolve_targets", "RhoSpec", "Residuals", "project", "support",
    "MaskGuard", "hard_prune", "magnitude_masks", "to_prune_form", "progressive_plan",
]
