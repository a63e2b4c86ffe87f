"""Storage of a pruned and quantized model in bits: compression as bytes, not only as zeros.

Each prunable weight tensor is coded as positions of its nonzeros + one value per nonzero, whichever
coding below is smallest (Deep Compression, Han et al. 2016, for the relative index):
- positions: none when every weight is nonzero (stored dense); else a bitmap (1 bit per weight), or
  relative indices of g bits (g = 1..16, the best one): each nonzero stores its gap from the previous one,
  a gap of d > 2^g costs ceil(d / 2^g) - 1 filler entries (a value of 0), and fillers cost an entry each;
- values: float32 (32 bits), or an index into a codebook of the layer's k distinct nonzero values
  (k + 1 with fillers): ceil(log2 k) bits per entry (at least 1) + 32 k bits for the codebook.
Every other parameter (biases, BatchNorm) is counted dense in float32, in both the dense and the compressed
size. Buffers (BatchNorm running statistics) are not counted.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ..models import prunable_layers

FLOAT_BITS = 32
MAX_INDEX_BITS = 16


def value_cost(entries: int, distinct: int) -> tuple[int, int]:
    """(bits per stored value, codebook bits) for `entries` values taking `distinct` values: the cheaper of
    float32 and a codebook (ceil(log2 distinct) bits per entry, at least 1, + 32 bits per codebook value)."""
    if entries == 0:
        return 0, 0
    index = max(1, math.ceil(math.log2(distinct)))
    if entries * index + FLOAT_BITS * distinct < entries * FLOAT_BITS:
        return index, FLOAT_BITS * distinct
    return FLOAT_BITS, 0


def gaps_of(positions) -> np.ndarray:
    """(nnz,) gaps >= 1 between sorted flat positions; the first counts from -1 (a nonzero at 0 has gap 1).
    numpy, int32 where it fits: on a busy 2-core machine torch's int64 ops were 10x slower for this."""
    positions = np.asarray(positions)
    dtype = np.int32 if positions.size == 0 or positions[-1] < 2**31 - 2**17 else np.int64
    return np.diff(positions, prepend=-1).astype(dtype, copy=False)


def relative_index_entries(gaps: np.ndarray, g: int) -> int:
    """Entries a relative index of g-bit gaps needs (one per nonzero + fillers): a gap d costs ceil(d / 2^g)."""
    return int(((gaps + (2 ** g - 1)) >> g).sum(dtype=np.int64)) if gaps.size else 0


def tensor_storage(w: Tensor) -> dict:
    """{"weights", "nonzero", "distinct", "value_bits", "positions", "bits"} of one weight tensor, coded as
    in the module docstring: "distinct" nonzero values; "positions" the cheapest position coding ("dense",
    "bitmap" or "relative<g>"); "value_bits" bits per stored value in it; "bits" its total."""
    flat = w.detach().flatten().cpu().numpy()  # numpy: its unique is 10x faster than torch's on CPU
    n = flat.size
    positions = np.flatnonzero(flat)  # (nnz,) sorted
    nnz = positions.size
    distinct = int(np.unique(flat[positions]).size)

    def cost(entries: int, fillers: bool) -> tuple[int, int]:  # (bits, bits per value); fillers store 0.0
        vb, codebook = value_cost(entries, distinct + fillers)
        return entries * vb + codebook, vb

    options = {}  # coding -> (bits, bits per value)
    if nnz == n:  # every gap is 1: any index only adds bits to the dense values
        options["dense"] = cost(n, False)
    else:
        bits, vb = cost(nnz, False)
        options["bitmap"] = (n + bits, vb)
        gaps = gaps_of(positions)
        # a bitmap wins once entries * g > n, so g beyond log2(n) never helps
        for g in range(1, min(MAX_INDEX_BITS, math.ceil(math.log2(n + 1))) + 1):
            entries = relative_index_entries(gaps, g)
            bits, vb = cost(entries, entries > nnz)
            options[f"relative{g}"] = (entries * g + bits, vb)
    coding = min(options, key=lambda c: options[c][0])
    return {"weights": n, "nonzero": nnz, "distinct": distinct, "value_bits": options[coding][1],
            "positions": coding, "bits": options[coding][0]}


def model_storage(model: nn.Module, dense_params: int | None = None, dense_weights: int | None = None) -> dict:
    """The model's storage: per prunable layer (tensor_storage) and in all.

    dense_bytes: every parameter in float32. compressed_bytes: prunable weights coded, everything else
    float32. bits_per_weight: coded bits of the prunable weights / their count (32 when dense).
    dense_params / dense_weights: the counts of the network before it was physically shrunk (P-RM), so
    that dense_bytes, ratio and bits_per_weight compare with the original, not the shrunk, network.
    """
    layers = {name: tensor_storage(m.weight) for name, m in prunable_layers(model).items()}
    prunable_ids = {id(m.weight) for m in prunable_layers(model).values()}
    other = sum(p.numel() for p in model.parameters() if id(p) not in prunable_ids)
    weights = sum(s["weights"] for s in layers.values())
    coded = sum(s["bits"] for s in layers.values())
    dense_bytes = (dense_params or weights + other) * FLOAT_BITS // 8
    compressed_bytes = math.ceil((coded + other * FLOAT_BITS) / 8)
    reference_weights = dense_weights or weights
    return {"dense_bytes": dense_bytes, "compressed_bytes": compressed_bytes, "ratio": dense_bytes / compressed_bytes,
            "bits_per_weight": coded / reference_weights if reference_weights else 0.0,
            "other_params": other, "layers": layers}
