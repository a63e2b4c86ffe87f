"""Seconds per training epoch, dense and with ADMM (penalty in the loss + a Z/U round every epoch).

    python benchmarks/epoch_time.py [--epochs 4] [--rounds 3]

lenet5 on mnist-sample (4,000 digits) and resnet20 on CIFAR-shaped FakeData (2,000 images); the ratio
ADMM/plain is the overhead of ADMM's W-step and Z/U rounds (target: at most 1.05). Plain and ADMM stages
alternate `rounds` times, so that a change in the machine's load hits both alike; the medians count.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from admm_explorer.engine import BatchEnded, Session, StageStarted
from admm_explorer.recipe import parse_recipe


def epoch_seconds(session: Session, stage: dict, epochs: int) -> float:
    """Median seconds of one epoch's batches (test evaluations excluded)."""
    marks: dict[int, float] = {}
    batches_per_epoch = len(session.data.train_batches(0))

    def on_event(event):
        if isinstance(event, StageStarted):
            marks[0] = time.perf_counter()
        elif isinstance(event, BatchEnded) and event.step % batches_per_epoch == 0:
            marks[event.step // batches_per_epoch] = time.perf_counter()

    unsubscribe = session.subscribe(on_event)
    spec = parse_recipe({"stages": [{**stage, "epochs": epochs, "eval_every": 1000}]}).stages[0]
    session.run_stage(spec)
    unsubscribe()
    # epoch 1 includes warm-up; the evaluation after the last batch is outside the marks
    return statistics.median(marks[e] - marks[e - 1] for e in range(2, epochs + 1))


def measure(setup: dict, targets: dict, epochs: int, rounds: int) -> tuple[float, float]:
    session = Session(parse_recipe({**setup, "device": "cpu", "seed": 0}))
    plain, admm = [], []
    for _ in range(rounds):
        plain.append(epoch_seconds(session, {"kind": "pretrain"}, epochs))
        admm.append(epoch_seconds(session, {"kind": "admm", "update_every": 1, "targets": targets}, epochs))
    return statistics.median(plain), statistics.median(admm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'model':10s} {'data':28s} {'plain s/epoch':>14s} {'ADMM s/epoch':>13s} {'ratio':>7s}")
    cases = [
        ("lenet5", {"model": "lenet5", "dataset": "mnist-sample"}, "mnist-sample (4,000 digits)",
         {"conv1": 0.8, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93}),
        ("resnet20", {"model": "resnet20", "dataset": "fake", "fake_size": 2000, "batch_size": 128},
         "FakeData 3x32x32 (2,000)", {"*": 0.9}),
    ]
    for name, setup, data, targets in cases:
        plain, admm = measure(setup, targets, args.epochs, args.rounds)
        print(f"{name:10s} {data:28s} {plain:14.3f} {admm:13.3f} {admm / plain:7.3f}")


if __name__ == "__main__":
    main()
