"""Euclidean projections of the ADMM Z-step (docs/algorithms.md sections 1, 3, 4).

Pure functions: they return new tensors and never modify their inputs; they work on any device and
floating dtype. Inputs must be finite. "GEMM view" of a weight: rows = v.shape[0] (output filters of a
conv, output features of a Linear), columns = everything else flattened (C/groups*kh*kw, or inputs).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Mapping, Optional

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .targets import LayerTarget


def keep_count(n: int, sparsity: float) -> int:
    """Entries kept out of n at this sparsity: max(1, round((1 - sparsity) * n)).

    Python's round (half to even). Never 0, so a pruned layer still passes a signal.
    """
    return max(1, round((1 - sparsity) * n))


def filter_column_split(sparsity: float) -> float:
    """The filter and the column rate of a "filter+column" target given by its sparsity alone: both keep
    sqrt(1 - sparsity) of their rows/columns, so the layer keeps (about) 1 - sparsity of its weights."""
    return 1 - math.sqrt(1 - sparsity)


# ---- exact top-k selection (the cost of every unstructured Z-step) -------------------------------

_BAND_MIN = 1 << 16  # below this many entries exact selection is as fast as the sampled band
_SAMPLE = 4096  # sample size for the band guess
_BAND_SDS = 4.0  # band half-width in binomial sds: the guess misses (exact fallback) ~1e-4 of the time


def top_mask(a: Tensor, k: int) -> Tensor:
    """(n,) bool with exactly min(k, n) True: the k largest of the 1-D scores a, ties to the lower index.

    Exact; large inputs go through a sampled band (_band_top_mask), which changes the time, not the answer.
    """
    n = a.numel()
    if k >= n:
        return torch.ones_like(a, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(a, dtype=torch.bool)
    if n >= _BAND_MIN:
        mask = _band_top_mask(a, k)
        if mask is not None:
            return mask
    return _exact_top_mask(a, k)


def _exact_top_mask(a: Tensor, k: int) -> Tensor:
    """top_mask for 0 < k < n by one exact selection of the k-th largest value t."""
    n = a.numel()
    # topk (not kthvalue or sort: both are several times slower on CPU) from the nearer end
    if 2 * k <= n:
        t = torch.topk(a, k, sorted=False).values.min()
    else:
        t = torch.topk(a, n - k + 1, largest=False, sorted=False).values.max()
    mask = a > t  # fewer than k entries are strictly above the k-th largest
    ties = torch.nonzero(a == t).squeeze(1)  # increasing indices
    mask[ties[: k - int(torch.count_nonzero(mask))]] = True
    return mask


def _band_top_mask(a: Tensor, k: int) -> Optional[Tensor]:
    """_exact_top_mask's answer, found by exact selection inside a narrow band of candidate values.

    A random sample gives thresholds t_lo < t_hi that bracket the k-th largest value with high
    probability; entries above t_hi are all kept, entries at or below t_lo all dropped, and only the
    band between them (~4% of n at 90% sparsity) goes through exact selection. None when the sample
    missed, so the answer never depends on the sample, only the time taken does.
    """
    n, m = a.numel(), _SAMPLE
    gen = torch.Generator(device=a.device).manual_seed(0)  # fixed: the time taken is reproducible
    sample = torch.sort(a[torch.randint(n, (m,), generator=gen, device=a.device)], descending=True).values
    # the count of sample entries above the k-th largest value is Binomial(m, k/n)
    p = k / n
    half = _BAND_SDS * math.sqrt(m * p * (1 - p)) + 1
    hi_rank, lo_rank = math.floor(p * m - half), math.ceil(p * m + half)
    t_hi = sample[hi_rank].item() if hi_rank >= 0 else math.inf
    t_lo = sample[lo_rank].item() if lo_rank < m else -math.inf
    mask = a > t_hi
    above = int(torch.count_nonzero(mask))
    if above > k:
        return None
    band = torch.nonzero((a > t_lo).logical_xor_(mask)).squeeze(1)  # (b,) increasing indices, t_lo < a <= t_hi
    if above + band.numel() < k or band.numel() == n:  # missed, or heavy ties made the band everything
        return None  # (recursing on a band as large as the input would never end)
    mask[band[top_mask(a[band], k - above)]] = True
    return mask


def global_keep_counts(scores: Mapping[str, Tensor], keep: int) -> dict[str, int]:
    """Per tensor, how many of its entries are among the `keep` largest scores of all the tensors together
    (one threshold across layers, torch.nn.utils.prune.global_unstructured's rule; ties to the earlier
    tensor and the lower index), at least 1 each so that no layer is cut off."""
    flat = torch.cat([s.flatten() for s in scores.values()])  # (all entries,)
    kept = top_mask(flat, keep).split([s.numel() for s in scores.values()])
    return {name: max(1, int(torch.count_nonzero(k))) for name, k in zip(scores, kept)}


# ---- structured selections: bool masks of the kept entries --------------------------------------

def _gemm(v: Tensor) -> Tensor:
    if v.dim() < 2:
        raise ValueError(f"filter/column pruning needs a weight with >= 2 dims, got shape {tuple(v.shape)}")
    return v.reshape(v.shape[0], -1)


def unstructured_mask(v: Tensor, sparsity: float, within: Optional[Tensor] = None) -> Tensor:
    """Bool, v's shape: the keep_count(numel) entries of largest |v| (ties to the lower flat index).

    With `within` (bool, v's shape) the kept set is the same selection restricted to `within`: entries
    outside it rank below every entry inside, and are then dropped.
    """
    scores = v.abs() if within is None else torch.where(within, v.abs(), -1.0)
    mask = top_mask(scores.flatten(), keep_count(v.numel(), sparsity)).view(v.shape)
    return mask if within is None else mask & within


def filter_mask(v: Tensor, sparsity: float, within: Optional[Tensor] = None) -> Tensor:
    """Bool, v's shape: the keep_count(rows) GEMM rows of largest L2 norm (ties to the lower row).

    With `within`, norms are taken of v restricted to it and the mask is intersected with it: the
    exact projection onto "row-sparse and zero outside `within`".
    """
    g = _gemm(v if within is None else torch.where(within, v, 0.0))  # (F, C*kh*kw)
    rows = top_mask(g.square().sum(1), keep_count(g.shape[0], sparsity))  # (F,)
    mask = rows[:, None].expand(g.shape).reshape(v.shape)
    return mask if within is None else mask & within


def column_mask(v: Tensor, sparsity: float, within: Optional[Tensor] = None) -> Tensor:
    """Bool, v's shape: the keep_count(columns) GEMM columns of largest L2 norm over all rows
    (ties to the lower column); `within` as in filter_mask."""
    g = _gemm(v if within is None else torch.where(within, v, 0.0))  # (F, C*kh*kw)
    cols = top_mask(g.square().sum(0), keep_count(g.shape[1], sparsity))  # (C*kh*kw,)
    mask = cols[None, :].expand(g.shape).reshape(v.shape)
    return mask if within is None else mask & within


def unstructured(v: Tensor, sparsity: float) -> Tensor:
    """Projection onto "at most keep_count(numel) nonzeros": v on unstructured_mask, 0.0 elsewhere."""
    return apply_support(v, unstructured_mask(v, sparsity))


def filters(v: Tensor, sparsity: float) -> Tensor:
    """Projection onto "at most keep_count(rows) nonzero GEMM rows": v on filter_mask, 0.0 elsewhere."""
    return apply_support(v, filter_mask(v, sparsity))


def columns(v: Tensor, sparsity: float) -> Tensor:
    """Projection onto "at most keep_count(columns) nonzero GEMM columns": v on column_mask, 0.0 elsewhere."""
    return apply_support(v, column_mask(v, sparsity))


PROJECTIONS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "unstructured": unstructured,
    "filter": filters,
    "column": columns,
}
_MASKS: dict[str, Callable[..., Tensor]] = {
    "unstructured": unstructured_mask,
    "filter": filter_mask,
    "column": column_mask,
}


# ---- quantization ------------------------------------------------------------------------------

_ALPHA_GRID = 32  # scales tried for the start of the alternation
_GRID_SAMPLE = 4096  # entries the start is chosen on


def level_count(bits: int) -> int:
    """L: the integer levels of b bits are -L..L (b >= 2), or +-1 (b = 1, returned as 1)."""
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def snap(v: Tensor, alpha: Tensor | float, bits: int) -> Tensor:
    """Every entry of v moved to its nearest level of alpha * Q: +-alpha for bits 1 (0 goes to +alpha),
    alpha * clip(round(v / alpha), -L, L) for bits >= 2. alpha > 0; the levels stay fixed."""
    alpha = torch.as_tensor(alpha, dtype=v.dtype, device=v.device)
    if bits > 1 and alpha == 0:  # all-zero input: its only level is 0
        return torch.zeros_like(v)
    return alpha * _level_index(v, alpha, bits)


def _level_index(v: Tensor, alpha: Tensor, bits: int) -> Tensor:
    """The integer Q of snap (as v's dtype): sign with 0 -> +1 for bits 1, clip(round(v / alpha), -L, L)."""
    if bits == 1:
        return torch.where(v >= 0, 1.0, -1.0).to(v.dtype)
    return torch.clamp(torch.round(v / alpha), -level_count(bits), level_count(bits))


def fit_scale(v: Tensor, bits: int, iters: int = 10) -> Tensor:
    """The scale alpha (0-dim, v's dtype) of the levels alpha * Q closest to v in L2 (docs/algorithms.md section 3).

    bits 1: alpha = mean|v|, the exact optimum. bits 2 (ternary): the exact optimum, _ternary_scale.
    bits b >= 3: alternates up to `iters` times between Q = clip(round(v / alpha), -L, L) and
    alpha = <v,Q>/<Q,Q> (each step can only lower the cost), starting from the best of 32 geometrically
    spaced alphas in [max|v| / 8L, max|v|] (the optimal alpha is <= max|v|) scored on <= 4096 evenly
    strided entries. A local optimum over alpha, not always the global one: against the exact optimum
    (benchmarks/quantization_gap.py: 7,875 float64 vectors of normal, laplace and uniform entries, 8 to
    65,536 of them) the cost was at most 0.25% (3 bits) and 0.36% (4 bits) of ||v||^2 above it, 0.004% and
    0.016% on average; the worst at 8 entries, at most 0.004% and 0.013% from 4,096 entries on.
    0 for an all-zero (or empty) v with bits >= 2. `iters` is used for bits >= 3 only.
    """
    a = v.abs()
    if bits == 1:
        return a.mean() if v.numel() else v.new_zeros(())
    if bits == 2:
        return _ternary_scale(a.flatten())
    top = a.max() if v.numel() else v.new_zeros(())
    if top == 0:
        return top
    levels = level_count(bits)
    x = v.flatten()
    sample = x[:: max(1, x.numel() // _GRID_SAMPLE)]  # (<= 2 * _GRID_SAMPLE,)
    grid = top * torch.logspace(-math.log10(8 * levels), 0, _ALPHA_GRID, device=v.device, dtype=v.dtype)
    costs = (sample - grid[:, None] * _level_index(sample, grid[:, None], bits)).square().sum(1)  # (grid,)
    alpha = grid[costs.argmin()]
    q = _level_index(x, alpha, bits)
    for _ in range(iters):
        alpha = (x * q).sum() / q.square().sum()  # q != 0 somewhere: alpha <= max|v| rounds max|v| to >= 1
        q_next = _level_index(x, alpha, bits)
        if torch.equal(q_next, q):
            break
        q = q_next
    return alpha


def _ternary_scale(a: Tensor) -> Tensor:
    """The exact ternary alpha for the magnitudes a (n,): O(n log n), 0 when every a is 0 (or n = 0).

    For a support of k entries the best levels are their signs and the best alpha is their mean magnitude,
    with cost ||a||^2 - S^2 / k, S their magnitude sum; for each k that sum is largest on the k largest
    magnitudes. So the optimum keeps the k largest, k maximising S_k^2 / k (S_k a prefix sum of the sorted
    magnitudes; the smallest such k on exact ties), and alpha = S_k / k. At that k, from S_k^2 / k >= both
    neighbours' values, every kept magnitude is >= alpha (k - sqrt(k^2 - k)) > alpha / 2 and every dropped one
    <= alpha (sqrt(k^2 + k) - k) < alpha / 2: snap at this alpha keeps exactly these k (no magnitude lies on
    the threshold, and a tie group is never split), so quantize returns the optimum. The margins are about
    alpha / 8k, so in floating point only a magnitude within rounding of alpha / 2 can land on the other side,
    which changes the cost by as little. Prefix sums in float64 (float32 on MPS).
    """
    if a.numel() == 0:
        return a.new_zeros(())
    acc = torch.float32 if a.device.type == "mps" else torch.float64  # MPS has no float64
    sums = torch.sort(a, descending=True).values.to(acc).cumsum(0)  # (n,) S_1..S_n
    k = int(torch.argmax(sums.square() / torch.arange(1, a.numel() + 1, device=a.device, dtype=acc)))  # first max
    return (sums[k] / (k + 1)).to(a.dtype)


def quantize(v: Tensor, bits: int, iters: int = 10) -> Tensor:
    """snap(v, fit_scale(v, bits), bits): alpha * Q close to v in L2, every entry of v counted; the exact
    projection for bits 1 and 2, near it for bits >= 3 (fit_scale). At most 2 distinct values for bits 1,
    2^b - 1 for bits b >= 2 (ternary: 3)."""
    return snap(v, fit_scale(v, bits, iters), bits)


# ---- the Z-step of a LayerTarget ------------------------------------------------------------------

def support(v: Tensor, target: LayerTarget, mask: Optional[Tensor] = None) -> Tensor:
    """Bool, v's shape: the entries project(v, target, mask) leaves free (its selection).

    Exactly the kept count of the target's structure (inside `mask`, if given); all True (or `mask`)
    without sparsity. A kept entry stays in the support even where its value is 0.0 (a zero weight,
    or a weight quantized to level 0), so the support never depends on values landing on zero.
    "filter+column": the rows of the filter selection and the columns of the column selection, each on v
    (combine "admm": the support of the two sets' projections together, what the hard prune of P-RM's
    ADMM keeps); combine "sequential": the columns, then the filters with their norms taken on those columns
    only (the authors' two-step order). Neither is the Euclidean projection onto "few rows and few
    columns", which does not separate by group.
    """
    if target.sparsity is None:
        return torch.ones_like(v, dtype=torch.bool) if mask is None else mask.clone()
    if target.structure != "filter+column":
        return _MASKS[target.structure](v, target.sparsity, mask)
    cols = column_mask(v, target.column, mask)
    if target.combine == "sequential":
        return filter_mask(v, target.filter, cols)
    return filter_mask(v, target.filter, mask) & cols


def apply_support(v: Tensor, keep: Tensor, bits: Optional[int] = None) -> Tensor:
    """v on `keep` (bool, v's shape), +0.0 elsewhere; with bits, the kept entries (only those) are
    replaced by quantize(kept entries, bits). project(v, target, mask) given its support."""
    if bits is None:
        return torch.where(keep, v, v.new_zeros(()))  # +0.0 where dropped (v * keep would give -0.0)
    out = torch.zeros_like(v)
    out[keep] = quantize(v[keep], bits)
    return out


def project(v: Tensor, target: LayerTarget, mask: Optional[Tensor] = None) -> Tensor:
    """Z-step projection of v onto the target's set: apply_support(v, support(v, target, mask), target.bits).

    `mask` (bool, v's shape): weights outside it are already pruned and stay 0; the selection is the
    exact projection onto the target's set intersected with "zero outside mask".
    """
    return apply_support(v, support(v, target, mask), target.bits)


def reweighted_shrink(v: Tensor, lam_over_rho: float, eps: float) -> Tensor:
    """The Z-step of reweighted ADMM: soft_threshold(v, lam_over_rho * a) with each entry's L1 weight
    a = 1 / (|v| + eps) taken from v itself (docs/algorithms.md section 5).

    Depends on v alone, not on the previous Z: an entry is nonzero exactly when |v| (|v| + eps) > lam / rho,
    so a dropped weight whose |W + U| grows past that cut enters again. Continuous in v (0 at the cut).
    """
    return soft_threshold(v, lam_over_rho / (v.abs() + eps))


def soft_threshold(v: Tensor, thresh: Tensor | float) -> Tensor:
    """sign(v) * max(|v| - thresh, 0), thresh a float or a tensor broadcastable to v (the prox of thresh*|.|_1)."""
    return v.sign() * (v.abs() - thresh).clamp_min(0)
