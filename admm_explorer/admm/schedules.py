"""rho schedules (docs/algorithms.md section 1) and progressive stage plans (section 2)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RHO_FLOOR = 1e-6  # balance never lowers rho below init * RHO_FLOOR: rho -> 0 would drop the constraint


class RhoSpec(BaseModel):
    """The penalty parameter's start and schedule. `factor` is the geometric gamma; `max` caps every
    schedule that raises rho; `mu` and `tau` are residual balancing's (Boyd et al. 2011, 3.4.1)."""

    model_config = ConfigDict(extra="forbid")

    init: float = Field(1e-3, gt=0)
    schedule: Literal["constant", "geometric", "balance"] = "geometric"
    factor: float = Field(1.3, ge=1)
    max: float = 1.0
    mu: float = Field(10.0, gt=1)
    tau: float = Field(2.0, gt=1)

    @model_validator(mode="after")
    def _max_above_init(self) -> RhoSpec:
        if self.max < self.init:
            raise ValueError(f"max={self.max!r} is below init={self.init!r}: rho's cap must be >= its start")
        return self

    @classmethod
    def of(cls, rho: RhoSpec | float) -> RhoSpec:
        """A RhoSpec as given, or the default geometric schedule from a bare initial rho (its cap raised
        to that rho if it is above the default 1.0)."""
        if isinstance(rho, RhoSpec):
            return rho
        return cls(init=rho, max=max(float(rho), cls.model_fields["max"].default))


def next_rho(spec: RhoSpec, rho: float, primal: float, dual: float) -> float:
    """rho for the next round, given this round's primal and dual residuals.

    constant: rho. geometric: min(rho * factor, max). balance: rho * tau if primal > mu * dual,
    rho / tau if dual > mu * primal, else rho; clamped to [init * RHO_FLOOR, max].
    """
    if spec.schedule == "constant":
        return rho
    if spec.schedule == "geometric":
        return min(rho * spec.factor, spec.max)
    if primal > spec.mu * dual:
        rho = rho * spec.tau
    elif dual > spec.mu * primal:
        rho = rho / spec.tau
    return min(max(rho, spec.init * RHO_FLOOR), spec.max)


def progressive_plan(final_sparsity: float, steps: int) -> list[float]:
    """Sparsities of `steps` progressive ADMM steps ending exactly at final_sparsity.

    Our plan; the paper's intermediate rates are not public: a geometric plan in the kept fraction,
    keep_t = keep_final ** (t / T) for t = 1..T, so every step removes the same fraction of what is left.
    """
    if steps < 1:
        raise ValueError(f"steps={steps!r} is not allowed: a progressive plan needs steps >= 1")
    if not 0 <= final_sparsity < 1:
        raise ValueError(f"final_sparsity={final_sparsity!r} is not allowed: it must satisfy 0 <= s < 1")
    keep = 1 - final_sparsity
    return [1 - keep ** (t / steps) for t in range(1, steps)] + [final_sparsity]
