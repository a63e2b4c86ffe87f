"""Per-layer ADMM variables: residuals worked out by hand, penalty gradient, rho rescaling, reweighted."""
from __future__ import annotations

import io
import math

import pytest
import torch

from admm_explorer.admm import LayerTarget, RhoSpec
from admm_explorer.admm.projections import soft_threshold
from admm_explorer.admm.state import LayerADMM, LayerReweighted

T = torch.tensor
HALF = LayerTarget(sparsity=0.5)  # 2x3: keep the 3 largest |v|
W0 = T([[3.0, -1.0, 0.5], [2.0, -4.0, 0.1]])
W1 = T([[2.5, -1.0, 1.0], [1.0, -3.5, 2.0]])  # W after the first W-step
W2 = T([[2.5, -0.5, 1.5], [0.5, -3.0, 1.5]])  # after the second


def test_start_is_the_projection_of_w_never_w():
    layer = LayerADMM(W0, HALF, RhoSpec(init=0.1, schedule="constant"))
    assert torch.equal(layer.z, T([[3.0, 0.0, 0.0], [2.0, -4.0, 0.0]]))
    assert torch.equal(layer.u, torch.zeros(2, 3)) and layer.rho == 0.1
    assert float(layer.penalty(W0)) == pytest.approx(0.05 * (1 + 0.25 + 0.01))


def test_two_rounds_by_hand_with_constant_rho():
    layer = LayerADMM(W0, HALF, RhoSpec(init=0.1, schedule="constant"))
    r1 = layer.update(W1)
    # V = W1 + 0; top 3 of |V|: 3.5, 2.5, 2.0
    assert torch.equal(layer.z, T([[2.5, 0.0, 0.0], [0.0, -3.5, 2.0]]))
    assert torch.equal(layer.u, T([[0.0, -1.0, 1.0], [1.0, 0.0, 0.0]]))
    assert r1.primal == pytest.approx(math.sqrt(3))
    assert r1.dual == pytest.approx(0.1 * math.sqrt(0.25 + 4 + 0.25 + 4))  # Z1 - Z0 = [-.5 0 0; -2 .5 2]
    assert r1.mask_flips == pytest.approx(1 / 3)  # kept {0,4,5} vs {0,3,4}: flat 5 is new
    assert (r1.rho, r1.sparsity, r1.w_sparsity) == (0.1, 0.5, 0.0)
    assert r1.w_norm == pytest.approx(math.sqrt(6.25 + 1 + 1 + 1 + 12.25 + 4))  # ||W1||
    assert r1.rho_u_norm == pytest.approx(0.1 * math.sqrt(3))  # rho * ||U1||, U1 = [0 -1 1; 1 0 0]
    r2 = layer.update(W2)
    # V = W2 + U1 = [2.5 -1.5 2.5; 1.5 -3 1.5]: top 3 are 3, 2.5, 2.5
    assert torch.equal(layer.z, T([[2.5, 0.0, 2.5], [0.0, -3.0, 0.0]]))
    assert torch.equal(layer.u, T([[0.0, -1.5, 0.0], [1.5, 0.0, 1.5]]))
    assert r2.primal == pytest.approx(math.sqrt(0.25 + 1 + 0.25 + 2.25))
    assert r2.dual == pytest.approx(0.1 * math.sqrt(6.25 + 0.25 + 4))  # Z2 - Z1 = [0 0 2.5; 0 .5 -2]
    assert r2.mask_flips == pytest.approx(1 / 3)  # kept {0,2,4} vs {0,4,5}
    assert r2.w_norm == pytest.approx(4.5)  # sqrt(6.25 + .25 + 2.25 + .25 + 9 + 2.25)
    assert r2.rho_u_norm == pytest.approx(0.1 * math.sqrt(2.25 + 2.25 + 2.25))
    assert r2.primal / r2.w_norm == pytest.approx(math.sqrt(3.75) / 4.5)  # the normalised primal
    assert r2.as_dict() == {"primal": r2.primal, "dual": r2.dual, "rho": 0.1, "mask_flips": r2.mask_flips,
                            "sparsity": 0.5, "w_sparsity": 0.0, "w_norm": r2.w_norm, "rho_u_norm": r2.rho_u_norm}


def test_two_rounds_by_hand_with_balance_rescale_u():
    layer = LayerADMM(W0, HALF, RhoSpec(init=0.1, schedule="balance", mu=2, tau=2, max=10))
    r1 = layer.update(W1)
    # primal sqrt(3) = 1.73 > 2 * dual (0.58): rho 0.1 -> 0.2, U halved
    assert r1.dual == pytest.approx(0.1 * math.sqrt(8.5)) and r1.rho == pytest.approx(0.2)
    assert torch.allclose(layer.u, T([[0.0, -0.5, 0.5], [0.5, 0.0, 0.0]]))
    # ||rho U||: the unscaled dual, the same before (0.1 * U1) and after (0.2 * U1 / 2) the rescale
    assert r1.rho_u_norm == pytest.approx(0.1 * math.sqrt(3)) == layer.rho * float(layer.u.norm())
    r2 = layer.update(W2)
    # V = W2 + U1 = [2.5 -1 2; 1 -3 1.5]: top 3 are 3, 2.5, 2
    assert torch.equal(layer.z, T([[2.5, 0.0, 2.0], [0.0, -3.0, 0.0]]))
    assert r2.primal == pytest.approx(math.sqrt(3))  # W2 - Z2 = [0 -.5 -.5; .5 0 1.5]
    assert r2.dual == pytest.approx(0.2 * math.sqrt(8.25))  # the rho in force: Z2 - Z1 = [0 0 2; 0 .5 -2]
    # 1.73 > 2 * 0.57: rho 0.2 -> 0.4 and U2 = [0 -1 0; 1 0 1.5] halved
    assert r2.rho == pytest.approx(0.4)
    assert torch.allclose(layer.u, T([[0.0, -0.5, 0.0], [0.5, 0.0, 0.75]]))
    assert r2.rho_u_norm == pytest.approx(0.2 * math.sqrt(1 + 1 + 2.25))  # rho 0.2 this round ran with, U2 unhalved
    assert r2.w_norm == pytest.approx(4.5)


def test_set_rho_keeps_the_unscaled_dual():
    layer = LayerADMM(W0, HALF, 0.1)
    layer.update(W1)
    unscaled = layer.rho * layer.u
    layer.set_rho(0.37)
    assert layer.rho == 0.37 and torch.allclose(layer.rho * layer.u, unscaled)
    with pytest.raises(ValueError, match="rho=0"):
        layer.set_rho(0)


def test_penalty_gradient_is_rho_times_w_minus_z_plus_u():
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    layer = LayerADMM(w0, LayerTarget(sparsity=0.6), 0.3)
    layer.update(w0 + 0.1 * torch.randn(w0.shape, generator=gen, dtype=torch.float64))
    w = (w0 + 0.2 * torch.randn(w0.shape, generator=gen, dtype=torch.float64)).requires_grad_()
    loss = layer.penalty(w)
    assert loss.dim() == 0
    loss.backward()
    assert torch.allclose(w.grad, layer.rho * (w - layer.z + layer.u).detach())
    assert torch.autograd.gradcheck(layer.penalty, (w.detach().requires_grad_(),))  # finite differences


def test_state_dict_round_trip_through_torch_load_weights_only():
    layer = LayerADMM(W0, HALF, RhoSpec(init=0.1), mask=W0.abs() > 0.2)
    layer.update(W1)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    restored = LayerADMM(W0, HALF, RhoSpec(init=0.1), mask=W0.abs() > 0.2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.rho == layer.rho and torch.equal(restored.u, layer.u) and torch.equal(restored.mask, layer.mask)
    assert restored.update(W2) == layer.update(W2)
    with pytest.raises(ValueError, match="expected"):
        restored.load_state_dict({"rho": 1.0})


def test_mask_keeps_pruned_weights_out_of_z():
    mask = T([[True, False, True], [True, True, False]])  # flat 1 and 5 pruned by an earlier step
    layer = LayerADMM(W0, LayerTarget(sparsity=0.5), 0.1, mask=mask)
    assert torch.equal(layer.z, T([[3.0, 0.0, 0.0], [2.0, -4.0, 0.0]]))  # top 3 of 3, .5, 2, -4
    layer.update(T([[1.0, 9.0, 1.0], [1.0, 1.0, 9.0]]))  # large values outside the mask
    assert not layer.z[~mask].any() and int(layer.kept.sum()) == 3


def test_reweighted_start_and_round_by_hand():
    w = T([[1.0, -0.2, 0.05], [0.5, -2.0, 0.0]])
    lam, eps, rho = 0.01, 0.1, 0.1
    layer = LayerReweighted(w, LayerTarget(sparsity=0.5), RhoSpec(init=rho, schedule="constant"), lam=lam, eps=eps)
    z0 = soft_threshold(w, lam / (w.abs() + eps) / rho)  # thresholds 0.0909 0.333 0.667 0.167 0.0476 1
    assert torch.allclose(layer.z, z0) and torch.equal(layer.z != 0, T([[True, False, False], [True, True, False]]))
    assert torch.allclose(layer.z, T([[0.9091, 0.0, 0.0], [0.3333, -1.9524, 0.0]]), atol=1e-4)
    w1 = T([[0.9, -0.3, 0.2], [0.4, -1.8, 0.1]])
    r = layer.update(w1)
    v1 = w1  # + U0 = 0
    z1 = soft_threshold(v1, lam / (v1.abs() + eps) / rho)  # the weights come from V itself, not from Z0
    assert torch.allclose(layer.z, z1) and torch.allclose(layer.u, w1 - z1)
    assert r.primal == pytest.approx(float((w1 - z1).norm())) and r.dual == pytest.approx(rho * float((z1 - z0).norm()))
    assert r.sparsity == pytest.approx(float((z1 == 0).float().mean()))
    w2 = T([[0.8, -0.3, 0.4], [0.3, -1.7, 0.0]])
    layer.update(w2)
    v2 = w2 + (w1 - z1)
    assert torch.allclose(layer.z, soft_threshold(v2, lam / (v2.abs() + eps) / rho))


def test_a_reweighted_weight_whose_magnitude_grows_enters_z_again():
    """Z keeps a weight exactly when |V| (|V| + eps) > lam / rho: a weight Z dropped comes back as soon as its
    W + U grows past that cut (0.0951 here), however long it was out. (Reweighting from the previous Z gave a
    dropped weight the threshold lam / (rho eps) = 1.0, ten times these weights: it never came back.)"""
    lam, eps, rho = 1e-3, 1e-2, 0.1
    cut = (-eps + math.sqrt(eps ** 2 + 4 * lam / rho)) / 2
    assert cut == pytest.approx(0.0951, abs=1e-4)
    w = T([0.3, -0.2, 0.05, 0.02])
    layer = LayerReweighted(w, LayerTarget(sparsity=0.5), RhoSpec(init=rho, schedule="constant"), lam=lam, eps=eps)
    assert layer.kept.tolist() == [True, True, False, False]
    for _ in range(3):  # the W-steps pull the dropped weights to 0 (U stays 0 there): they stay out
        layer.update(T([0.3, -0.2, 0.0, 0.0]))
        assert layer.kept.tolist() == [True, True, False, False]
    assert float(layer.u[2]) == 0.0
    grown = T([0.3, -0.2, 0.15, 0.0])  # the loss wants the third weight after all: |V| = 0.15, 1.6 x the cut
    layer.update(grown)
    assert layer.kept.tolist() == [True, True, True, False]
    v = grown + layer.u + (layer.z - grown)  # the V this Z-step saw: Z + U_new = W + U_old
    assert float(layer.z[2]) == pytest.approx(float(v[2]) - lam / (rho * (abs(float(v[2])) + eps)), rel=1e-5)
    # just below and just above the cut, from a fresh start (U = 0)
    edge = LayerReweighted(T([0.999 * cut, 1.001 * cut]), LayerTarget(sparsity=0.5), rho, lam=lam, eps=eps)
    assert edge.kept.tolist() == [False, True] and 0 < float(edge.z[1]) < 1e-3


def test_reweighted_makes_more_zeros_as_lam_grows():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(40, 30, generator=gen) * 0.05
    sparsities = []
    for lam in (1e-7, 1e-6, 1e-5, 1e-4):
        layer = LayerReweighted(w, LayerTarget(sparsity=0.9), 1e-2, lam=lam, eps=1e-3)
        for _ in range(3):
            r = layer.update(w)
        sparsities.append(r.sparsity)
    assert all(a < b for a, b in zip(sparsities, sparsities[1:])), sparsities
    # W is held fixed (no W-step pulls the dropped weights to 0), so their U grows round by round and brings
    # some back: after 3 rounds lam = 1e-4 keeps about half of the weights its first Z-step dropped
    assert sparsities[0] < 0.1 and sparsities[-1] > 0.4


def test_reweighted_refuses_quantization_and_bad_parameters():
    with pytest.raises(ValueError, match="needs a sparsity and no bits"):
        LayerReweighted(W0, LayerTarget(sparsity=0.5, bits=2), 0.1, lam=1e-3, eps=1e-3)
    with pytest.raises(ValueError, match="lam=0"):
        LayerReweighted(W0, HALF, 0.1, lam=0, eps=1e-3)


def test_penalty_follows_every_change_of_z_u_and_rho():
    """The penalty caches C = Z - U between rounds; after an update, set_rho or load_state_dict its value
    and gradient must still be rho/2 ||W - Z + U||^2 and rho (W - Z + U), computed here by hand."""
    from admm_explorer.admm.state import LayerADMM
    from admm_explorer.admm.targets import LayerTarget

    torch.manual_seed(0)
    w = torch.randn(6, 5, requires_grad=True)
    layer = LayerADMM(w.detach(), LayerTarget(sparsity=0.6), 0.5)
    saved = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in layer.state_dict().items()}

    def check():
        w.grad = None
        value = layer.penalty(w)
        value.backward()
        d = w.detach() - layer.z + layer.u
        assert float(value.detach()) == pytest.approx(layer.rho / 2 * float(d.square().sum()), rel=1e-6)
        assert torch.allclose(w.grad, layer.rho * d, atol=1e-6)

    check()
    with torch.no_grad():
        w.add_(0.3)
    layer.update(w.detach())
    check()
    layer.set_rho(layer.rho * 4)
    check()
    layer.load_state_dict(saved)
    check()


def test_relative_stopping_test_by_hand():
    from admm_explorer.admm.state import Residuals

    r = Residuals(primal=0.3, dual=0.2, rho=1.0, mask_flips=0.0, sparsity=0.5, w_sparsity=0.0, w_norm=10.0,
                  rho_u_norm=4.0)
    assert r.within(0.03) and not r.within(0.029)  # 0.3 <= 0.03 * 10
    assert r.within(0.03, 0.05) and not r.within(0.03, 0.049)  # 0.2 <= 0.05 * 4
