"""Time one full unstructured Z-step over torchvision ResNet-50's prunable weights (25.5M).

Compares admm_explorer's selection (sampled band + exact selection inside it) with plain per-layer
torch.topk, checks that its Z is an exact top-k, and prints the best of several repeats in seconds
(the two selections alternate repeat by repeat, so load from other processes hits both alike).
Figures, every repeat and the protocol: benchmarks/results/zstep_speed.json.

    python benchmarks/zstep_speed.py [--sparsity 0.9] [--repeats 7]

Needs an otherwise idle machine: with other processes competing for the cores, every parallel pass
can wait for a scheduler time slice, and the band selection makes ~7 passes per layer to topk's ~3.
The 1-minute load average is printed with the timings for that reason.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from results_io import Competition, environment, spread, write

from admm_explorer.admm.projections import keep_count, unstructured
from admm_explorer.models import build_model, prunable_layers

TARGET_S = 0.15  # seconds for one Z-step over ResNet-50 on a 2-core CPU


def topk_projection(v: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The plain baseline: torch.topk of |v| per layer, scattered into zeros."""
    flat = v.flatten()
    idx = torch.topk(flat.abs(), keep_count(flat.numel(), sparsity)).indices
    return torch.zeros_like(flat).index_copy_(0, idx, flat[idx]).view(v.shape)


def is_exact_top_k(v: torch.Tensor, z: torch.Tensor, sparsity: float) -> bool:
    """z keeps v's entries on exactly keep_count of them, none smaller in |v| than any dropped one."""
    kept = z != 0
    a = v.abs()
    return (int(kept.sum()) == keep_count(v.numel(), sparsity) and torch.equal(z[kept], v[kept])
            and bool(a[kept].min() >= a[~kept].max()))


def one_pass(step, weights: list[torch.Tensor], sparsity: float) -> float:
    """Seconds of one Z-step (`step` on every layer)."""
    start = time.perf_counter()
    for w in weights:
        step(w, sparsity)
    return time.perf_counter() - start


def paired_times(steps: dict, weights: list[torch.Tensor], sparsity: float, repeats: int) -> dict[str, list[float]]:
    """`repeats` passes of each step, alternating step by step; {name: seconds per pass}."""
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(one_pass(step, weights, sparsity))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="before the timed passes, wait up to S seconds for other processes to go quiet "
                             "(0: no wait)")
    args = parser.parse_args()

    env = environment()
    torch.manual_seed(0)
    weights = [m.weight.detach() for m in prunable_layers(build_model("resnet50")).values()]
    n = sum(w.numel() for w in weights)
    exact = all(is_exact_top_k(w, unstructured(w, args.sparsity), args.sparsity) for w in weights)
    comp = Competition(args.quiet_wait)
    with comp.repeat():
        times = paired_times({"sampled_band": unstructured, "torch_topk": topk_projection}, weights, args.sparsity,
                             args.repeats)
    fast, plain = min(times["sampled_band"]), min(times["torch_topk"])
    print(f"resnet50: {len(weights)} prunable layers, {n:,} weights, sparsity {args.sparsity}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"exact top-k in every layer: {exact}")
    print(f"Z-step, sampled-band selection: {fast:.3f} s (target <= {TARGET_S} s: {'met' if fast <= TARGET_S else 'MISSED'})")
    print(f"Z-step, per-layer torch.topk:   {plain:.3f} s ({plain / fast:.1f}x slower)")
    write(__file__, protocol={
        "model": "torchvision resnet50 (random init, torch.manual_seed(0))", "seed": 0,
        "weights": "every prunable layer's weight (admm_explorer.models.prunable_layers)",
        "layers": len(weights), "n_weights": n, "sparsity": args.sparsity, "repeats": args.repeats,
        "quiet_wait_s": args.quiet_wait,
        "arms": {"sampled_band": "admm_explorer.admm.projections.unstructured per layer",
                 "torch_topk": "torch.topk of |w| per layer, scattered into zeros"},
        "order": "arms alternate pass by pass", "headline": "best (min) of the repeats, seconds per Z-step",
        "target_s": TARGET_S}, results={
        "sampled_band_s": fast, "torch_topk_s": plain, "topk_over_band": plain / fast,
        "median_topk_over_band": statistics.median(times["torch_topk"]) / statistics.median(times["sampled_band"]),
        "target_met": fast <= TARGET_S, "exact_top_k_every_layer": exact,
        "sampled_band_repeats_s": spread(times["sampled_band"]), "torch_topk_repeats_s": spread(times["torch_topk"]),
        "competition": comp.as_dict()},
        env=env)


if __name__ == "__main__":
    main()
