"""Combined filter + column pruning as P-RM's ADMM does it: a rate per constraint set, one Z and one U per set,
the penalties summed; the sequential projection as a labelled option."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from admm_explorer.admm import ADMM, LayerTarget, RhoSpec, support
from admm_explorer.admm.projections import apply_support, column_mask, columns, filter_mask, filters, keep_count
from admm_explorer.admm.state import LayerADMM, LayerJoint
from admm_explorer.admm.targets import kept_weights
from admm_explorer.recipe import RecipeError, parse_recipe

T = torch.tensor
CONSTANT = RhoSpec(init=0.1, schedule="constant")


def test_a_target_takes_a_rate_for_filters_and_one_for_columns():
    t = LayerTarget.model_validate({"filter": 0.5, "column": 0.7})
    assert (t.structure, t.filter, t.column, t.combine) == ("filter+column", 0.5, 0.7, "admm")
    assert t.sparsity == pytest.approx(1 - 0.5 * 0.3)  # the fraction of the weights that end up zero
    assert LayerTarget.model_validate(t.model_dump()) == t  # a resolved recipe reads back
    # a conv of 20 filters x 25 columns keeps 10 rows x round(7.5) = 8 columns
    assert kept_weights((20, 1, 5, 5), t) == keep_count(20, 0.5) * keep_count(25, 0.7) == 80
    # a sparsity alone splits evenly between the two
    even = LayerTarget(sparsity=0.75, structure="filter+column")
    assert even.filter == even.column == pytest.approx(0.5)
    assert t.constraint_sets() == (LayerTarget(sparsity=0.5, structure="filter"),
                                   LayerTarget(sparsity=0.7, structure="column"))
    assert LayerTarget(filter=0.5, column=0.7, combine="sequential").constraint_sets() == (
        LayerTarget(filter=0.5, column=0.7, combine="sequential"),)


@pytest.mark.parametrize("target, message", [
    ({"filter": 0.5}, "needs both rates"),
    ({"filter": 0.5, "column": 0.7, "sparsity": 0.2}, "does not match"),
    ({"filter": 0.5, "structure": "filter", "sparsity": 0.5}, "for structure 'filter\\+column' only"),
    ({"filter": 1.0, "column": 0.5}, "0 <= filter < 1"),
    ({"filter": 0.5, "column": 0.5, "bits": 2}, "combine: sequential"),
    ({"sparsity": 0.5, "combine": "sequential"}, "combine is for structure"),
])
def test_bad_filter_column_targets_get_one_line_before_any_work(target, message):
    with pytest.raises(RecipeError, match=message) as err:
        parse_recipe({"stages": [{"kind": "admm", "targets": {"conv2": target}}]})
    assert "\n" not in str(err.value)


def brute_force_cost(v: torch.Tensor, rows: int, cols: int) -> float:
    """min ||v - P||^2 over every P that keeps `rows` rows and `cols` columns of v (the Euclidean projection)."""
    total = float(v.square().sum())
    return min(total - float(v[list(kept)].square().sum(0).topk(cols).values.sum())
               for kept in itertools.combinations(range(v.shape[0]), rows))


def test_supports_keep_exactly_the_rows_and_columns_of_the_rates():
    v = torch.randn(10, 4, 3, 3, generator=torch.Generator().manual_seed(16))
    joint, sequential = LayerTarget(filter=0.4, column=0.75), LayerTarget(filter=0.4, column=0.75, combine="sequential")
    # combine admm: the filter selection's rows and the column selection's columns, both on v
    assert torch.equal(support(v, joint), filter_mask(v, 0.4) & column_mask(v, 0.75))
    # sequential: the best columns, then the best filters on those columns (the authors' order)
    assert torch.equal(apply_support(v, support(v, sequential)), filters(columns(v, 0.75), 0.4))
    for target in (joint, sequential):
        keep = support(v, target).reshape(10, -1)
        assert int(keep.any(1).sum()) == keep_count(10, 0.4) and int(keep.any(0).sum()) == keep_count(36, 0.75)
        assert int(keep.sum()) == kept_weights(tuple(v.shape), target)


def test_the_sequential_step_is_not_the_euclidean_projection():
    """On 200 random 6x8 matrices keeping 3 rows and 4 columns, brute force over every row set finds a closer
    point than the sequential step in most cases: it is kept only as a labelled option."""
    gen = torch.Generator().manual_seed(0)
    target = LayerTarget(filter=0.5, column=0.5, combine="sequential")
    worse, gap = 0, 0.0
    for _ in range(200):
        v = torch.randn(6, 8, generator=gen, dtype=torch.float64)
        best = brute_force_cost(v, 3, 4)
        cost = float((v - apply_support(v, support(v, target))).square().sum())
        assert cost >= best - 1e-12
        worse += cost > best + 1e-12
        gap = max(gap, (cost - best) / float(v.square().sum()))
    assert worse > 100 and gap > 0.05


def test_two_rounds_by_hand():
    """Z_f = filters(W + U_f), Z_c = columns(W + U_c), U_i += W - Z_i; residuals of the stacked constraint."""
    w0 = T([[3.0, -1.0, 0.5], [2.0, -4.0, 0.1]])  # keep 1 of 2 rows (filter 0.5) and 2 of 3 columns (column 1/3)
    target = LayerTarget(filter=0.5, column=1 / 3)
    layer = LayerJoint(w0, target, CONSTANT)
    zf, zc = (part.z for part in layer.parts)
    # row norms^2: 10.25, 20.01 -> row 1; column norms^2: 13, 17, 0.26 -> columns 0, 1
    assert torch.equal(zf, T([[0.0, 0.0, 0.0], [2.0, -4.0, 0.1]]))
    assert torch.equal(zc, T([[3.0, -1.0, 0.0], [2.0, -4.0, 0.0]]))
    assert torch.equal(layer.kept, T([[False, False, False], [True, True, False]]))
    assert torch.equal(layer.z, T([[0.0, 0.0, 0.0], [2.0, -4.0, 0.0]]))
    w = w0.clone().requires_grad_()
    penalty = layer.penalty(w)
    assert float(penalty.detach()) == pytest.approx(0.05 * (10.25 + 0.26))  # rho/2 (||W - Z_f||^2 + ||W - Z_c||^2)
    penalty.backward()
    assert torch.allclose(w.grad, 0.1 * ((w0 - zf) + (w0 - zc)))

    w1 = T([[2.5, -1.0, 1.0], [1.0, -3.5, 2.0]])
    r = layer.update(w1)
    zf1, zc1 = (part.z for part in layer.parts)
    # row norms^2 of W1: 8.25, 17.25 -> row 1; column norms^2: 7.25, 13.25, 5 -> columns 0, 1
    assert torch.equal(zf1, T([[0.0, 0.0, 0.0], [1.0, -3.5, 2.0]]))
    assert torch.equal(zc1, T([[2.5, -1.0, 0.0], [1.0, -3.5, 0.0]]))
    assert torch.equal(layer.parts[0].u, w1 - zf1) and torch.equal(layer.parts[1].u, w1 - zc1)
    primal2 = float((w1 - zf1).square().sum() + (w1 - zc1).square().sum())  # 8.25 + 5
    assert r.primal == pytest.approx(math.sqrt(primal2)) == pytest.approx(math.sqrt(13.25))
    dz2 = float((zf1 - zf).square().sum() + (zc1 - zc).square().sum())
    assert r.dual == pytest.approx(0.1 * math.sqrt(dz2))
    assert r.w_norm == pytest.approx(math.sqrt(2) * float(w1.norm()))  # ||[W; W]||
    assert r.rho_u_norm == pytest.approx(0.1 * math.sqrt(primal2))  # U_i = W1 - Z_i after one round from U = 0
    assert r.sparsity == pytest.approx(4 / 6) and r.mask_flips == 0.0
    # round 2 projects W + U_i, each set with its own dual
    w2 = T([[2.5, -0.5, 1.5], [0.5, -3.0, 1.5]])
    u = [part.u.clone() for part in layer.parts]
    layer.update(w2)
    assert torch.equal(layer.parts[0].z, filters(w2 + u[0], 0.5))
    assert torch.equal(layer.parts[1].z, columns(w2 + u[1], 1 / 3))


def test_rho_is_shared_and_the_state_round_trips():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(8, 12, generator=gen)
    target = LayerTarget(filter=0.5, column=0.6)
    spec = RhoSpec(init=0.01, schedule="geometric", factor=2.0, max=1.0)
    layer = LayerJoint(w, target, spec)
    for _ in range(3):
        layer.update(w + 0.1 * torch.randn(8, 12, generator=gen))
    assert layer.rho == pytest.approx(0.08) and all(part.rho == layer.rho for part in layer.parts)
    u = [part.u.clone() for part in layer.parts]
    layer.set_rho(0.16)  # each U rescaled: rho * U unchanged
    assert all(torch.allclose(part.u * 0.16, old * 0.08) for part, old in zip(layer.parts, u))
    copy = LayerJoint(torch.zeros(8, 12), target, spec)
    copy.load_state_dict(layer.state_dict())
    step = torch.randn(8, 12, generator=gen)
    assert layer.update(step) == copy.update(step)
    assert all(torch.equal(a.z, b.z) and torch.equal(a.u, b.u) for a, b in zip(layer.parts, copy.parts))
    with pytest.raises(ValueError, match="one state per constraint set"):
        copy.load_state_dict(LayerADMM(w, LayerTarget(sparsity=0.5), 0.1).state_dict())


def test_admm_on_a_quadratic_ends_in_the_intersection_and_hard_prunes_to_it():
    """f(W) = 1/2 ||W - A||^2 with the exact W-step: with rho growing, W meets both Z's, and the hard prune keeps
    exactly the rates' rows and columns; the mask is a rows x columns pattern. (The kept set need not settle:
    on this nonconvex intersection the iteration ends in a 2-cycle between two feasible points, which the dual
    residual shows.)"""
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(12, 20, generator=gen, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(20, 12, bias=False, dtype=torch.float64))
    with torch.no_grad():
        model[0].weight.copy_(a)
    admm = ADMM(model, {"0": {"filter": 0.5, "column": 0.75, "prune_outputs": True}},
                rho=RhoSpec(init=0.05, schedule="geometric", factor=1.3, max=1e3))
    layer = admm.layers["0"]
    assert isinstance(layer, LayerJoint)
    for _ in range(60):
        with torch.no_grad():  # argmin_W 1/2||W - A||^2 + rho/2 sum_i ||W - Z_i + U_i||^2
            model[0].weight.copy_((a + layer.rho * sum(p.z - p.u for p in layer.parts)) / (1 + 2 * layer.rho))
        r = admm.update()["0"]
    assert r.primal / r.w_norm < 1e-2
    mask = admm.hard_prune()["0"]
    w = model[0].weight.detach()
    assert int(mask.any(1).sum()) == 6 and int(mask.any(0).sum()) == 5 and int(mask.sum()) == 30
    assert torch.equal(mask, mask.any(1, keepdim=True) & mask.any(0, keepdim=True))
    assert torch.equal(w != 0, mask)
