"""P-RM (Ma et al., arXiv 1905.00136): network purification, unused path removal, physical shrink.

    purify(model, masks, evaluate, tolerance, taus, retrain, input_shape=...) -> PurifyResult
    remove_unused_paths(model, example_input) -> (masked copy, {module: {"out": [...], "in": [...]}})
    shrink(model, example_input) -> physically smaller copy, same outputs in eval mode
    report(model, input_shape, latency=True) -> params, macs, size_bytes, sparsity, latency_ms_b1/_b64
    save_shrunk(model, path) / load_shrunk(path)

Semantics (BN, constant folding, residual streams, flatten) are in paths.py; the purification
criterion, our reconstruction, in purify.py.
"""
from __future__ import annotations

from .paths import remove_unused_paths, structured_masks_to_bn
from .purify import DEFAULT_TAUS, PurifyResult, masked, purification_masks, purify
from .report import report
from .shrink import architecture, build_shrunk, load_shrunk, save_shrunk, shrink

__all__ = [
    "DEFAULT_TAUS", "PurifyResult", "architecture", "build_shrunk", "load_shrunk", "masked", "purification_masks", "purify",
    "remove_unused_paths", "report", "save_shrunk", "shrink", "structured_masks_to_bn",
]
