"""Time one full unstructured Z-step over torchvision ResNet-50's prunable weights (25.5M).

Compares admm_explorer's selection (sampled band + exact selection inside it) with plain per-layer
torch.topk, checks that its Z is an exact top-k, and prints the best of several repeats in seconds.

    python benchmarks/zstep_speed.py [--sparsity 0.9] [--repeats 7]

Needs an otherwise idle machine: with other processes competing for the cores, every parallel pass
can wait for a scheduler time slice, and the band selection makes ~7 passes per layer to topk's ~3.
The 1-minute load average is printed with the timings for that reason.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

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


def best_time(step, weights: list[torch.Tensor], sparsity: float, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for w in weights:
            step(w, sparsity)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.manual_seed(0)
    weights = [m.weight.detach() for m in prunable_layers(build_model("resnet50")).values()]
    n = sum(w.numel() for w in weights)
    exact = all(is_exact_top_k(w, unstructured(w, args.sparsity), args.sparsity) for w in weights)
    fast = best_time(unstructured, weights, args.sparsity, args.repeats)
    plain = best_time(topk_projection, weights, args.sparsity, args.repeats)
    print(f"resnet50: {len(weights)} prunable layers, {n:,} weights, sparsity {args.sparsity}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"exact top-k in every layer: {exact}")
    print(f"Z-step, sampled-band selection: {fast:.3f} s (target <= {TARGET_S} s: {'met' if fast <= TARGET_S else 'MISSED'})")
    print(f"Z-step, per-layer torch.topk:   {plain:.3f} s ({plain / fast:.1f}x slower)")


if __name__ == "__main__":
    main()
