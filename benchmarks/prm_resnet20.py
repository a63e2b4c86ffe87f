"""ResNet-20: filter ADMM, then P-RM, end to end from a recipe; CIFAR-10 when it is on disk, else FakeData.

    python benchmarks/prm_resnet20.py [--data-root DIR] [--epochs 4] [--out runs/bench-resnet20]

With CIFAR-10 in --data-root (torchvision's cifar-10-batches-py) this is a quality measure: pretrain,
30%-of-filters ADMM on every conv, masked retrain, purify (tolerance 0.1 points). Without it the same
recipe runs on 2,000 CIFAR-shaped FakeData images: the accuracies are then meaningless (random labels)
and only the parameter, MAC and latency figures count. The first line printed says which data ran.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from admm_explorer.engine import run_recipe

HERE = Path(__file__).resolve().parent
FILTERS = {"sparsity": 0.3, "structure": "filter"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--epochs", type=float, default=4, help="pretrain epochs; ADMM and retrain run as many")
    parser.add_argument("--out", type=Path, default=HERE.parent / "runs" / "bench-resnet20")
    args = parser.parse_args()
    real = args.data_root is not None and (args.data_root / "cifar-10-batches-py").is_dir()
    data = ({"dataset": "cifar10", "data_root": str(args.data_root), "batch_size": 128} if real else
            {"dataset": "fake", "fake_size": 2000, "fake_shape": [3, 32, 32], "fake_classes": 10,
             "batch_size": 128})
    print("data:", f"CIFAR-10 from {args.data_root}" if real else
          "FakeData, 2,000 random CIFAR-shaped images (no CIFAR-10 in --data-root): accuracy is not a quality measure")
    sgd = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}
    recipe = {"model": "resnet20", **data, "device": "auto", "seed": 0, "stages": [
        {"kind": "pretrain", "epochs": args.epochs, "optimizer": sgd},
        # the classifier loses columns, not rows: its rows are the classes
        {"kind": "admm", "epochs": args.epochs, "update_every": 0.5,
         "targets": {"*": FILTERS, "fc": {"sparsity": 0.3, "structure": "column"}},
         "rho": {"init": 1e-3, "schedule": "geometric", "factor": 1.5, "max": 0.1}, "optimizer": sgd},
        {"kind": "retrain", "epochs": args.epochs, "optimizer": sgd},
        {"kind": "purify", "tolerance": 0.001, "retrain_epochs": 1}]}
    if args.out.exists():
        shutil.rmtree(args.out)
    summary = run_recipe(recipe, out=args.out)
    p = summary["purify"]
    before, after = p["before"], p["after"]
    print(f"accuracy: dense {summary['stages'][0]['accuracy']:.2%}, masked {before['accuracy']:.2%}, "
          f"after P-RM {after['accuracy']:.2%} (tau {p['tau']:g})")
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("size_bytes", "file bytes")):
        print(f"{label:11s} {before[key]:>12,} -> {after[key]:>12,}  ({before[key] / after[key]:.2f}x)")
    for key in ("latency_ms_b1", "latency_ms_b64"):
        print(f"{key:14s} {before[key]:8.2f} ms -> {after[key]:8.2f} ms  ({before[key] / after[key]:.2f}x)")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "prm_resnet20.json").write_text(json.dumps(
        {"data": "cifar10" if real else "fake", "purify": p, "stages": summary["stages"]}, indent=2))


if __name__ == "__main__":
    main()
