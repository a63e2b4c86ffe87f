"""How far quantize's b-bit fit (bits 2..4) lands above the exact optimum min over alpha, Q of ||v - alpha Q||^2.

    python benchmarks/quantization_gap.py [--seed 0] [--trials 2000 500 100 20 5]

For every distribution (normal, laplace, uniform on [-1, 1]) and size n (8, 64, 512, 4,096, 65,536; the
trials per size are --trials), the same float64 vectors for every bits; the figure of one vector is the
relative gap (||v - quantize(v, b)||^2 - optimum) / ||v||^2, and per bits the worst and the mean over all
vectors are reported. The optimum is exact at every n, by enumerating the breakpoints of alpha
(optimal_scale), and for n <= 64 checked against an independent enumeration of every cell (cell_optimum).
Both costs are evaluated alike, ||v - snap(v, alpha, b)||^2 in float64, so bits 2 (exact since
_ternary_scale, the same prefix sums) shows a gap of exactly 0. Also times quantize(v, 2) on 10^6 float32
normal entries (one thread, the median of --repeats). Results: benchmarks/results/quantization_gap.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from results_io import environment, spread, write

from admm_explorer.admm.projections import level_count, quantize, snap

BITS = (2, 3, 4)
SIZES = (8, 64, 512, 4096, 65536)
DISTRIBUTIONS = ("normal", "laplace", "uniform")
CROSS_CHECK_MAX_N = 64
AT_OPTIMUM = 1e-12  # relative gaps below this are float64 rounding: the fit found the optimum
TIMED_N = 1_000_000


def draw(distribution: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) float64 entries of the distribution (laplace: exponential magnitudes with random signs)."""
    if distribution == "normal":
        return torch.randn(n, generator=gen, dtype=torch.float64)
    if distribution == "laplace":
        signs = torch.where(torch.rand(n, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
        return torch.empty(n, dtype=torch.float64).exponential_(generator=gen) * signs
    return torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1


def optimal_scale(v: torch.Tensor, bits: int) -> torch.Tensor:
    """alpha of the exact optimum (v float64, not all zero; bits >= 2).

    Going down in alpha, |Q_j| = min(L, round(|v_j| / alpha)) steps from m to m + 1 at the breakpoint
    |v_j| / (m + 1/2), m < L, where <|v|,|Q|> gains |v_j| and <Q,Q> gains 2m + 1. Each prefix of the
    breakpoints in decreasing order is a Q (those of every cell of alpha, and in-between ones where
    breakpoints tie, also feasible) whose best cost is ||v||^2 - <|v|,|Q|>^2 / <Q,Q> at alpha =
    <|v|,|Q|> / <Q,Q>; the optimum's Q is a cell's, so the prefix maximising <|v|,|Q|>^2 / <Q,Q> gives it.
    """
    levels = level_count(bits)
    a = v.abs()[v != 0]  # (n',) zeros sit at level 0 for every alpha
    m = torch.arange(levels, dtype=v.dtype)  # (L,)
    breaks = (a[:, None] / (m + 0.5)).flatten()  # (n' L,), one entry's decreasing in m
    order = torch.sort(breaks, descending=True, stable=True).indices
    gain_a = a[:, None].expand(-1, levels).flatten()[order]
    gain_b = (2 * m + 1).expand(a.numel(), -1).flatten()[order]
    sum_a, sum_b = gain_a.cumsum(0), gain_b.cumsum(0)
    best = int(torch.argmax(sum_a.square() / sum_b))
    return sum_a[best] / sum_b[best]


def cell_optimum(v: torch.Tensor, bits: int) -> float:
    """The optimum cost by evaluating every cell: one alpha strictly inside each interval between sorted
    breakpoints gives that cell's Q; its best alpha <v,Q>/<Q,Q>, with Q re-rounded there. O(n^2 L)."""
    levels = level_count(bits)
    breaks = (v.abs()[:, None] / (torch.arange(levels) + 0.5)).flatten().unique()  # sorted
    breaks = breaks[breaks > 0]
    probes = torch.cat([breaks[:1] / 2, (breaks[1:] + breaks[:-1]) / 2, breaks[-1:] * 2])[:, None]  # (P, 1)
    q = torch.clamp(torch.round(v / probes), -levels, levels)  # (P, n)
    used = q.square().sum(1) > 0
    alpha = ((v * q).sum(1) / q.square().sum(1))[used][:, None]
    q = torch.clamp(torch.round(v / alpha), -levels, levels)
    return min(float(v.square().sum()), float((v - alpha * q).square().sum(1).min()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, nargs=len(SIZES), default=[2000, 500, 100, 20, 5],
                        metavar="T", help=f"vectors per distribution at each size {SIZES}")
    parser.add_argument("--repeats", type=int, default=5, help=f"timed calls of quantize(v, 2) on {TIMED_N:,} entries")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = environment()

    gaps = {bits: [] for bits in BITS}
    cases, checked, worst_check = [], 0, 0.0
    for d, distribution in enumerate(DISTRIBUTIONS):
        for s, (n, trials) in enumerate(zip(SIZES, args.trials)):
            gen = torch.Generator().manual_seed(args.seed + 100 * d + s)
            vectors = [draw(distribution, n, gen) for _ in range(trials)]
            for bits in BITS:
                case = []
                for v in vectors:
                    norm = float(v.square().sum())
                    optimum = float((v - snap(v, optimal_scale(v, bits), bits)).square().sum())
                    if n <= CROSS_CHECK_MAX_N:
                        worst_check = max(worst_check, abs(optimum - cell_optimum(v, bits)) / norm)
                        checked += 1
                    case.append((float((v - quantize(v, bits)).square().sum()) - optimum) / norm)
                gaps[bits] += case
                cases.append({"bits": bits, "distribution": distribution, "n": n, "trials": trials,
                              "worst_relative_gap": max(case), "mean_relative_gap": statistics.mean(case),
                              "share_above_optimum": sum(g > AT_OPTIMUM for g in case) / trials})
                print(f"bits {bits} {distribution:8s} n={n:6d} ({trials:3d} vectors): worst {max(case):.2e}, "
                      f"mean {statistics.mean(case):.2e} of ||v||^2")
    assert worst_check <= AT_OPTIMUM, f"the breakpoint sweep and the cell enumeration disagree: {worst_check}"
    by_bits = {str(bits): {"worst_relative_gap": max(g), "mean_relative_gap": statistics.mean(g),
                           "vectors": len(g), "share_above_optimum": sum(x > AT_OPTIMUM for x in g) / len(g),
                           "most_below_optimum": min(g),
                           "worst_relative_gap_by_n": {str(n): max(c["worst_relative_gap"] for c in cases
                                                                   if c["bits"] == bits and c["n"] == n)
                                                       for n in SIZES}}
               for bits, g in gaps.items()}
    for bits, row in by_bits.items():
        print(f"bits {bits}: worst {row['worst_relative_gap']:.3%}, mean {row['mean_relative_gap']:.4%} of ||v||^2 "
              f"over {row['vectors']} vectors; above the optimum on {row['share_above_optimum']:.1%}")
    big = torch.randn(TIMED_N, generator=torch.Generator().manual_seed(args.seed))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        quantize(big, 2)
        times.append(time.perf_counter() - start)
    print(f"quantize(v, 2) on {TIMED_N:,} float32 entries: {statistics.median(times):.3f} s (median of {args.repeats})")
    write(__file__, protocol={
        "seed": args.seed, "seeds": "torch.Generator().manual_seed(seed + 100 * distribution index + size index), "
                                    "the same vectors for every bits",
        "bits": list(BITS), "sizes": list(SIZES), "trials_per_size": args.trials,
        "distributions": {"normal": "torch.randn", "laplace": "Exp(1) magnitudes with random signs",
                          "uniform": "uniform on [-1, 1]"},
        "dtype": "float64", "fit": "admm_explorer.admm.projections.quantize(v, bits) (default iters 10)",
        "optimum": "exact at every n: every breakpoint |v_j| / (m + 1/2) of alpha in decreasing order, prefix sums "
                   "of <|v|,|Q|> and <Q,Q>, the prefix maximising <|v|,|Q|>^2 / <Q,Q> (optimal_scale); its cost "
                   "evaluated as ||v - snap(v, alpha)||^2 like the fit's",
        "cross_check": f"n <= {CROSS_CHECK_MAX_N}: the optimum equals an enumeration of every cell of alpha "
                       f"(cell_optimum) to {AT_OPTIMUM} of ||v||^2",
        "figure": "relative gap (||v - quantize(v, b)||^2 - optimum) / ||v||^2 per vector; worst and mean per bits "
                  "over every vector (most of them small: the trials per size fall with n), and the worst per n",
        "at_optimum": f"a gap <= {AT_OPTIMUM} counts as at the optimum (share_above_optimum)",
        "timing": f"quantize(v, 2) on {TIMED_N:,} float32 torch.randn entries (seed), one thread, "
                  f"{args.repeats} calls, the median"}, results={
        "by_bits": by_bits, "cases": cases,
        "cross_check": {"vectors": checked, "worst_relative_difference": worst_check},
        "ternary_million_s": statistics.median(times), "ternary_million_repeats_s": spread(times)}, env=env)


if __name__ == "__main__":
    main()
