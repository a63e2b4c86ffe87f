"""rho schedules and progressive plans."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from admm_explorer.admm import RhoSpec, progressive_plan
from admm_explorer.admm.schedules import RHO_FLOOR, next_rho


def test_constant_and_geometric():
    assert next_rho(RhoSpec(init=0.01, schedule="constant"), 0.01, 5.0, 0.0) == 0.01
    geometric = RhoSpec(init=0.01, factor=1.5, max=0.03)
    assert next_rho(geometric, 0.01, 0.0, 0.0) == pytest.approx(0.015)
    assert next_rho(geometric, 0.025, 0.0, 0.0) == 0.03  # capped


@pytest.mark.parametrize("primal, dual, expected", [
    (10.0, 0.5, 0.2),  # primal > mu * dual: rho * tau
    (0.5, 10.0, 0.05),  # dual > mu * primal: rho / tau
    (1.0, 0.5, 0.1),  # balanced within mu: unchanged
    (1.0, 0.1, 0.1),  # primal = mu * dual is not "greater": unchanged
])
def test_balance(primal, dual, expected):
    spec = RhoSpec(init=0.1, schedule="balance", mu=10, tau=2, max=1.0)
    assert next_rho(spec, 0.1, primal, dual) == pytest.approx(expected)


def test_balance_is_clamped_to_floor_and_max():
    spec = RhoSpec(init=0.1, schedule="balance", max=0.3)
    assert next_rho(spec, 0.2, 1.0, 0.0) == 0.3
    floor = 0.1 * RHO_FLOOR
    assert next_rho(spec, floor * 1.5, 0.0, 1.0) == floor


def test_rho_spec_validation():
    for bad in ({"init": 0}, {"factor": 0.9}, {"mu": 1.0}, {"tau": 1}, {"schedule": "cosine"}, {"extra": 1}):
        with pytest.raises(ValidationError):
            RhoSpec(**bad)
    with pytest.raises(ValidationError, match="max=0.01 is below init=0.1"):
        RhoSpec(init=0.1, max=0.01)


def test_a_bare_rho_is_the_default_schedule_from_it():
    assert RhoSpec.of(0.01) == RhoSpec(init=0.01)
    assert RhoSpec.of(5.0) == RhoSpec(init=5.0, max=5.0)
    spec = RhoSpec(init=0.1, schedule="balance")
    assert RhoSpec.of(spec) is spec


def test_progressive_plan_is_geometric_in_the_kept_fraction():
    assert progressive_plan(0.99, 2) == pytest.approx([0.9, 0.99])
    plan = progressive_plan(0.999, 3)
    assert plan == pytest.approx([0.9, 0.99, 0.999]) and plan[-1] == 0.999
    assert progressive_plan(0.8, 1) == [0.8]
    plan = progressive_plan(0.991, 5)
    assert plan[-1] == 0.991 and all(a < b for a, b in zip(plan, plan[1:]))
    # every step removes the same fraction of what is left
    kept = [1.0] + [1 - s for s in plan]
    ratios = [b / a for a, b in zip(kept, kept[1:])]
    assert ratios == pytest.approx([ratios[0]] * 5)


def test_progressive_plan_validation():
    with pytest.raises(ValueError, match="steps=0"):
        progressive_plan(0.9, 0)
    with pytest.raises(ValueError, match="final_sparsity=1.0"):
        progressive_plan(1.0, 3)
