"""ResNet-20, half of every channel group pruned, shrunk by P-RM: does CPU latency follow the MACs?

Every channel space of the network (each block's inner channels, each stage's residual stream) loses
the 50% of channels with the smallest L1 norm summed over the convs that write it (random init, seed 0),
so that every block, shortcut and the stem shrink together. The masked network is shrunk with
admm_explorer.prm.shrink (outputs checked equal), then dense and shrunk latencies are measured on
CIFAR-shaped inputs, alternating pass by pass so that load from other processes hits both alike;
median and minimum are printed (the minimum is the least disturbed by other load). A ResNet-20 built
directly at the shrunk widths is timed alongside: equal times mean the shrink adds no overhead and any
gap to the MACs reduction is the kernels' efficiency at small channel counts and the passes over the
activations (BatchNorm, ReLU, residual adds), which halve where the MACs quarter; both networks are
also timed with BatchNorm folded into the convs (torch.fx's fuse, eval mode). The reference arm is
Torch-Pruning's own MagnitudePruner (L1, 50% of every channel group, classifier kept) on the same dense
network, timed in the same loop: the issue's reference figure was taken with it. The CPU's vector
capability is printed: oneDNN blocks channels by 16 on AVX-512 and by 8 on AVX2, so an 8-channel
conv wastes half of each vector on AVX-512 (ONEDNN_MAX_CPU_ISA=AVX2 shows the other case).

Target: (batch-64 latency speedup) / (MACs reduction) >= 0.9.

    python benchmarks/prm_resnet20_latency.py [--runs 30] [--threads N]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
import torch_pruning as tp

from admm_explorer.models import build_model
from admm_explorer.models.cifar import CifarResNet
from admm_explorer.prm import masked, report, shrink
from admm_explorer.prm.graph import channel_graph

SHAPE = (3, 32, 32)
RESULTS = Path(__file__).resolve().parent / "results"


def half_of_every_group(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks zeroing, in every unpinned channel space, the half of the channels with the smallest L1 norm
    over all conv filters writing them (a residual stream's stem, block output convs and shortcut)."""
    g = channel_graph(model, torch.zeros(1, *SHAPE))
    writers: dict[int, list[str]] = {}
    for name, space in g.rows.items():
        if isinstance(model.get_submodule(name), nn.Conv2d) and not g.pinned[space]:
            writers.setdefault(space, []).append(name)
    masks = {}
    for space, convs in writers.items():
        l1 = sum(model.get_submodule(c).weight.detach().abs().flatten(1).sum(1) for c in convs)
        dead = l1.argsort()[: g.sizes[space] // 2]
        for c in convs:
            masks[c] = torch.ones_like(model.get_submodule(c).weight)
            masks[c][dead] = 0
    return masks


@torch.inference_mode()
def paired_ms(models: list[nn.Module], x: torch.Tensor, runs: int, warmup: int = 3) -> list[list[float]]:
    """Wall times (ms) of `runs` forward passes per model; the models alternate pass by pass, so that
    load from other processes hits them alike."""
    for m in models:
        for _ in range(warmup):
            m(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for t, m in zip(times, models):
            start = time.perf_counter()
            m(x)
            t.append(1000 * (time.perf_counter() - start))
    return times


def torch_pruning_half(dense: nn.Module) -> nn.Module:
    """Torch-Pruning's magnitude pruner, L1, 50% of every channel group; the classifier keeps its outputs."""
    model = copy.deepcopy(dense)
    pruner = tp.pruner.MagnitudePruner(model, torch.zeros(1, *SHAPE), importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    return model.eval()


@torch.inference_mode()
def convs_alone(dense: nn.Module, small: nn.Module, runs: int) -> list[dict]:
    """Each stage's first inner 3x3 conv timed on its own, dense vs shrunk, batch 64 (median of 2 x runs):
    how the kernels' rate (GMAC/s) holds up as the channels halve."""
    rows = []
    for i, (d, s) in enumerate(zip(dense.layers, small.layers)):
        side = SHAPE[1] >> i  # 32, 16, 8
        convs = [stage[0].conv2 for stage in (d, s)]
        xs = [torch.randn(64, conv.in_channels, side, side) for conv in convs]
        # paired_ms passes one input to all: each conv closes over its own instead
        calls = [lambda _, c=c, x=x: c(x) for c, x in zip(convs, xs)]
        d_ms, s_ms = (statistics.median(t) for t in paired_ms(calls, None, 2 * runs))
        macs = [64 * c.weight.numel() * side * side for c in convs]
        rows.append({"stage": i + 1, "channels": [c.out_channels for c in convs], "ms": [d_ms, s_ms],
                     "gmac_per_s": [macs[0] / d_ms / 1e6, macs[1] / s_ms / 1e6], "speedup": d_ms / s_ms})
        print(f"stage {i + 1} conv alone, {convs[0].out_channels} -> {convs[1].out_channels} channels at "
              f"{side}x{side}: {d_ms:.3f} -> {s_ms:.3f} ms "
              f"({d_ms / s_ms:.2f}x for {macs[0] / macs[1]:.0f}x fewer MACs), "
              f"{rows[-1]['gmac_per_s'][0]:.0f} -> {rows[-1]['gmac_per_s'][1]:.0f} GMAC/s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="batch-64 passes per model (batch 1: 20x)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dense = build_model("resnet20").eval()
    pruned = masked(dense, half_of_every_group(dense)).eval()
    small = shrink(pruned, torch.zeros(1, *SHAPE)).eval()
    x64 = torch.randn(64, *SHAPE)
    with torch.no_grad():
        error = (pruned(x64) - small(x64)).abs().max().item()

    before, after = report(dense, SHAPE, latency=False), report(small, SHAPE, latency=False)
    reduction = before["macs"] / after["macs"]
    print(f"threads {torch.get_num_threads()}, max |masked - shrunk| = {error:.2e}")
    print(f"params {before['params']:,} -> {after['params']:,} ({before['params'] / after['params']:.2f}x)")
    print(f"MACs   {before['macs']:,} -> {after['macs']:,} ({reduction:.2f}x)")
    print(f"size   {before['size_bytes']:,} -> {after['size_bytes']:,} bytes")
    # control: the shrunk architecture built directly, to tell P-RM overhead from kernel efficiency
    widths = [stage[0].conv2.out_channels for stage in small.layers]
    fresh = CifarResNet([len(stage) for stage in small.layers], widths).eval()
    # BatchNorm folded into the convs (inference form, both networks): BN is a pass over the activations,
    # which only halve when the channels do, while the MACs fall 4x
    dense_bn, small_bn = fuse(dense), fuse(small)
    reference = torch_pruning_half(dense)
    reference_report = report(reference, SHAPE, latency=False)
    reference_reduction = before["macs"] / reference_report["macs"]
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}; Torch-Pruning arm: params "
          f"{reference_report['params']:,}, MACs {reference_reduction:.2f}x, "
          f"widths {[stage[0].conv2.out_channels for stage in reference.layers]}")
    results = {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "params": [before["params"], after["params"], reference_report["params"]],
               "macs_reduction": reduction, "torch_pruning_macs_reduction": reference_reduction,
               "convs_alone": convs_alone(dense, small, args.runs)}
    ratios = {}
    for batch, runs in ((1, 20 * args.runs), (64, args.runs)):
        d, s, c, dbn, sbn, ref = paired_ms([dense, small, fresh, dense_bn, small_bn, reference],
                                           torch.randn(batch, *SHAPE), runs)
        for stat, f in (("median", statistics.median), ("min", min)):
            speedup, folded = f(d) / f(s), f(dbn) / f(sbn)
            ratios[batch, stat] = speedup / reduction
            results[f"batch{batch}_{stat}"] = {
                "ms": {"dense": f(d), "shrunk": f(s), "built_at_widths": f(c), "dense_bn_folded": f(dbn),
                       "shrunk_bn_folded": f(sbn), "torch_pruning": f(ref)},
                "ratio": speedup / reduction, "ratio_bn_folded": folded / reduction,
                "ratio_torch_pruning": f(d) / f(ref) / reference_reduction}
            print(f"batch {batch:>2} {stat:>6} of {runs}: {f(d):8.2f} ms -> {f(s):7.2f} ms, "
                  f"speedup {speedup:.2f}x, speedup / MACs reduction = {speedup / reduction:.2f} "
                  f"(ResNet-20 built at widths {widths}: {f(c):.2f} ms); BN folded: {f(dbn):.2f} -> "
                  f"{f(sbn):.2f} ms, {folded:.2f}x, / MACs reduction = {folded / reduction:.2f}; "
                  f"Torch-Pruning: {f(ref):.2f} ms, {f(d) / f(ref):.2f}x, / MACs reduction = "
                  f"{f(d) / f(ref) / reference_reduction:.2f}")
    verdict = "met" if ratios[64, "median"] >= 0.9 else "NOT met"
    print(f"target: batch-64 (median) speedup / MACs reduction >= 0.9: {verdict} ({ratios[64, 'median']:.2f})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prm_resnet20_latency.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
