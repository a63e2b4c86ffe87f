"""LeNet-5 on mnist-sample, tested on the real MNIST test set: ADMM quantization (paper 2).

    python benchmarks/lenet5_quantize.py [--seed 0] [--bits 1 2 3]

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

from lenet5_admm import ADAM, PAPER, RHO, base, cached, dense, save


def stages(targets: dict) -> list[dict]:
    return [{"kind": "admm", "epochs": 30, "update_every": 1, "rho": RHO, "targets": targets, "optimizer": ADAM},
            {"kind": "retrain", "epochs": 20, "optimizer": ADAM}]


def run(name: str, targets: dict, seed: int) -> dict:
    start, _ = dense(seed)
    return cached(f"{name}-s{seed}", {**base(seed), "start": str(start), "stages": stages(targets)})[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    _, dense_acc = dense(args.seed)
    cases = {f"quant-{b}bit": {"*": {"bits": b}} for b in args.bits}
    cases["quant-71.2x-3bit"] = {name: {"sparsity": s, "bits": 3} for name, s in PAPER.items()}
    rows = {}
    for name, targets in cases.items():
        s = run(name, targets, args.seed)
        st = s["storage"]
        rows[name] = {"accuracy": s["accuracy"], "loss_points": (dense_acc - s["accuracy"]) * 100,
                      "compression": s["compression"], "dense_bytes": st["dense_bytes"],
                      "compressed_bytes": st["compressed_bytes"], "bytes_ratio": st["ratio"],
                      "bits_per_weight": st["bits_per_weight"],
                      "distinct": {n: layer["distinct"] for n, layer in st["layers"].items()}}
    save("lenet5_quantize.json", {"seed": args.seed, "dense": dense_acc, "runs": rows})
    print(f"LeNet-5, seed {args.seed}: dense {dense_acc:.2%} ({rows[next(iter(rows))]['dense_bytes']:,} bytes float32)")
    print(f"{'run':18s} {'accuracy':>9s} {'loss':>6s} {'zeros x':>8s} {'bits/w':>7s} {'bytes':>9s} {'x smaller':>9s}"
          "  distinct values per layer")
    for name, r in rows.items():
        print(f"{name:18s} {r['accuracy']:9.2%} {r['loss_points']:6.2f} {r['compression']:8.1f} "
              f"{r['bits_per_weight']:7.3f} {r['compressed_bytes']:9,d} {r['bytes_ratio']:9.1f}  {r['distinct']}")
    print("loss: points below the dense start (target <= 0.5 for the all-layer runs)")


if __name__ == "__main__":
    main()
