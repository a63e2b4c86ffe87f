"""Seconds per training epoch, dense and with ADMM (penalty in the loss + a Z/U round every epoch).

    python benchmarks/epoch_time.py [--epochs 4] [--rounds 3]

lenet5 on mnist-sample (4,000 digits) and resnet20 on CIFAR-shaped FakeData (2,000 images); the ratio
ADMM/plain is the overhead of ADMM's W-step and Z/U rounds (target: at most 1.05). Plain and ADMM stages
alternate `rounds` times, so that a change in the machine's load hits both alike; the medians count.
Figures, every round and the protocol: benchmarks/results/epoch_time.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from results_io import Competition, environment, spread, write

from admm_explorer.engine import BatchEnded, Session, StageStarted
from admm_explorer.recipe import parse_recipe

# (name, setup, data, ADMM targets); admm_parts.py times ADMM's parts on the same cases
CASES = [
    ("lenet5", {"model": "lenet5", "dataset": "mnist-sample"}, "mnist-sample (4,000 digits)",
     {"conv1": 0.8, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93}),
    ("resnet20", {"model": "resnet20", "dataset": "fake", "fake_size": 2000, "batch_size": 128},
     "FakeData 3x32x32 (2,000)", {"*": 0.9}),
]


def epoch_seconds(session: Session, stage: dict, epochs: int) -> list[float]:
    """Seconds of each epoch's batches after the first (test evaluations excluded)."""
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
    return [marks[e] - marks[e - 1] for e in range(2, epochs + 1)]


def stage_specs(targets: dict) -> dict[str, dict]:
    return {"plain": {"kind": "pretrain"}, "admm": {"kind": "admm", "update_every": 1, "targets": targets}}


def measure(setup: dict, targets: dict, epochs: int, rounds: int, comp: Competition) -> dict[str, list]:
    """{"plain"|"admm": per round, the seconds of its epochs after the first}; the arms alternate; `comp`
    records what other processes used during each round."""
    session = Session(parse_recipe({**setup, "device": "cpu", "seed": 0}))
    times: dict[str, list] = {"plain": [], "admm": []}
    for _ in range(rounds):
        with comp.repeat():
            for arm, stage in stage_specs(targets).items():
                times[arm].append(epoch_seconds(session, stage, epochs))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="before each repeat, wait up to S seconds for other processes to go quiet (0: no wait)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch, with warm-up, is not counted)")
    env = environment()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'model':10s} {'data':28s} {'plain s/epoch':>14s} {'ADMM s/epoch':>13s} {'ratio':>7s}")
    results, protocol_cases = {}, {}
    for name, setup, data, targets in CASES:
        comp = Competition(args.quiet_wait)
        times = measure(setup, targets, args.epochs, args.rounds, comp)
        # per round: the median of its epochs; the headline: the median over rounds (as printed)
        per_round = {arm: [statistics.median(r) for r in times[arm]] for arm in ("plain", "admm")}
        plain, admm = statistics.median(per_round["plain"]), statistics.median(per_round["admm"])
        print(f"{name:10s} {data:28s} {plain:14.3f} {admm:13.3f} {admm / plain:7.3f}")
        results[name] = {"plain_s_per_epoch": plain, "admm_s_per_epoch": admm, "ratio": admm / plain,
                         "round_ratios": spread(a / p for a, p in zip(per_round["admm"], per_round["plain"])),
                         "plain_round_medians_s": spread(per_round["plain"]),
                         "admm_round_medians_s": spread(per_round["admm"]),
                         "epochs_s": times, "competition": comp.as_dict()}
        recipe = parse_recipe({**setup, "device": "cpu", "seed": 0,
                               "stages": [{**st, "epochs": args.epochs, "eval_every": 1000}
                                          for st in stage_specs(targets).values()]}).resolved()
        protocol_cases[name] = {"data": data, "recipe": recipe}
    write(__file__, protocol={
        "epochs": args.epochs, "rounds": args.rounds, "quiet_wait_s": args.quiet_wait,
        "seed": 0, "device": "cpu", "target_ratio": 1.05,
        "timing": "wall time between the ends of consecutive epochs' last batches; epoch 1 (warm-up) dropped; "
                  "the one test evaluation after the last batch is outside; per round the median of its "
                  "epochs, the headline the median over rounds; plain and ADMM stages alternate round by "
                  "round in one Session (the model trains on); competition: per round, CPU seconds other "
                  "processes used meanwhile (/proc/stat) and the seconds waited for quiet before it",
        "cases": protocol_cases}, results=results, env=env)


if __name__ == "__main__":
    main()
