"""LeNet-5 on mnist-sample, tested on the real MNIST test set: ADMM quantization (paper 2).

    python benchmarks/lenet5_quantize.py [--seeds 0 1 2] [--bits 1 2 3]

Same protocol as benchmarks/lenet5_admm.py: the same 20-epoch dense start, then 50 epochs:
- all four layers quantized to b bits: 30 ADMM epochs (Z/U every epoch) + 20 retrain epochs in which the
  weights are snapped to their levels in four growing shares (50%, 75%, 87.5%, 100%; the last 5 epochs
  fine-tune only the biases);
- paper 1's rates (71.2x) with 3-bit nonzeros: the same, with the sparsity targets.
Prints accuracy against the dense start, distinct values per layer and the compressed size in bytes
(admm_explorer.admm.storage) against the dense float32 model. Results: benchmarks/results/lenet5_quantize.json.
Runs are cached under runs/bench-lenet5/ by lenet5_admm.cached (the key covers the whole protocol).
"""
from __future__ import annotations

import argparse

from lenet5_admm import ADAM, N_TEST, PAPER, RHO, base, cached, dense, save
from results_io import accuracy_stats, compare


def stages(targets: dict) -> list[dict]:
    return [{"kind": "admm", "epochs": 30, "update_every": 1, "rho": RHO, "targets": targets, "optimizer": ADAM},
            {"kind": "retrain", "epochs": 20, "optimizer": ADAM}]


def run(name: str, targets: dict, seed: int) -> dict:
    start, _ = dense(seed)
    return cached(f"{name}-s{seed}", {**base(seed), "start": str(start), "stages": stages(targets)})[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    dense_accs = [dense(seed)[1] for seed in args.seeds]
    cases = {f"quant-{b}bit": {"*": {"bits": b}} for b in args.bits}
    cases["quant-71.2x-3bit"] = {name: {"sparsity": s, "bits": 3} for name, s in PAPER.items()}
    dense_stats = accuracy_stats(dense_accs, N_TEST)
    rows = {}
    for name, targets in cases.items():
        runs = [run(name, targets, seed) for seed in args.seeds]
        storage = [r["storage"] for r in runs]  # per seed; the sizes differ only by the zeros a run leaves
        accuracy = accuracy_stats([r["accuracy"] for r in runs], N_TEST)
        rows[name] = {"accuracy": accuracy, "vs_dense": compare(accuracy, dense_stats),
                      "loss_points": [(d - r["accuracy"]) * 100 for d, r in zip(dense_accs, runs)],
                      "compression": [r["compression"] for r in runs], "dense_bytes": storage[0]["dense_bytes"],
                      "compressed_bytes": [st["compressed_bytes"] for st in storage],
                      "bytes_ratio": [st["ratio"] for st in storage],
                      "bits_per_weight": [st["bits_per_weight"] for st in storage],
                      "distinct": {n: max(st["layers"][n]["distinct"] for st in storage) for n in storage[0]["layers"]}}
    save("lenet5_quantize.json", {"seeds": args.seeds, "n_test": N_TEST, "dense": dense_stats, "runs": rows})
    print(f"LeNet-5, seeds {args.seeds}: dense {dense_stats['mean']:.2%} (std {dense_stats['std']:.2%}; "
          f"{rows[next(iter(rows))]['dense_bytes']:,} bytes float32); binomial SE {dense_stats['binomial_se']:.2%}")
    print(f"{'run':18s} {'accuracy (std)':>16s} {'vs dense':>18s} {'bits/w':>7s} {'bytes':>9s} {'x smaller':>9s}"
          "  distinct values per layer")
    for name, r in rows.items():
        a, vs = r["accuracy"], r["vs_dense"]
        print(f"{name:18s} {a['mean']:9.2%} ({a['std']:.2%}) {vs['difference'] * 100:+6.2f} pts "
              f"{'tie' if vs['call'] == 'tie' else 'not a tie':>9s} {max(r['bits_per_weight']):7.3f} "
              f"{max(r['compressed_bytes']):9,d} {min(r['bytes_ratio']):9.1f}  {r['distinct']}")
    print("vs dense: a tie unless the means differ by more than twice the noise (results_io.compare)")


if __name__ == "__main__":
    main()
