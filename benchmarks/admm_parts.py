"""ADMM's parts timed on their own, per epoch, against a plain epoch measured in the same run.

    python benchmarks/admm_parts.py [--epochs 3] [--repeats 3] [--calls 5]

The cases of benchmarks/epoch_time.py (lenet5 on mnist-sample, 4,000 digits, batch 64; resnet20 on
FakeData 3x32x32, 2,000 images, batch 128), each in one Session on the CPU. Every repeat runs, in this order:
a plain (pretrain) stage and an ADMM stage of `epochs` epochs each (seconds per epoch, the first epoch
dropped, as in epoch_time.py), then, on the weights the model has then, the parts of ADMM through the
engine's own functions on an ADMM object built as admm_phase builds it (the stage's targets and rho,
one warm-up round first):
  (a) penalty: ADMM.penalty() forward + backward (gradients accumulated into the weights' .grad), once per
      training batch of one epoch: the W-step's extra work (the engine adds it to the loss every batch);
  (b) histograms: ADMM.histograms(), which the engine's round_payload computes every Z/U round;
  (c) Z/U update: ADMM.update() (Z-step, U-step, rho step, residuals), once per round.
With a round every epoch (update_every 1), parts per epoch = (a) + (b) + (c), and the implied ratio is
(plain + parts) / plain; the ADMM epoch measured alongside gives the measured ratio. (b) and (c) are the
median of `calls` calls per repeat; every figure is the median over repeats (the spread is in the JSON, with
the CPU seconds other processes used during each repeat: competition).
Results: benchmarks/results/admm_parts.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from epoch_time import CASES, epoch_seconds, stage_specs
from results_io import Competition, environment, spread, write

from admm_explorer.admm import ADMM, resolve_targets
from admm_explorer.engine import Session
from admm_explorer.engine.stages.pruning import round_payload
from admm_explorer.recipe import parse_recipe


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def parts(session: Session, admm_stage: dict, calls: int) -> dict[str, float]:
    """Seconds of (a) the penalty over one epoch's batches, (b) one round's histograms, (c) one Z/U update."""
    spec = parse_recipe({"stages": [admm_stage]}).stages[0]
    targets = resolve_targets(session.model, spec.targets)
    carried = {name: m for name, m in session.masks.items() if name in targets}
    admm = ADMM(session.model, targets, rho=spec.rho, masks=carried)  # as engine.stages.pruning.admm_phase
    residuals = admm.update()  # warm-up round: U != 0 from here on, as in the middle of a stage
    round_payload(admm, residuals)
    admm.penalty().backward()
    batches = len(session.data.train_batches(0))

    def penalty_epoch():
        for _ in range(batches):
            admm.penalty().backward()

    out = {"penalty_s_per_epoch": timed(penalty_epoch),
           "histograms_s_per_round": statistics.median(timed(admm.histograms) for _ in range(calls)),
           "update_s_per_round": statistics.median(timed(admm.update) for _ in range(calls))}
    residuals = admm.update()
    out["round_payload_s_per_round"] = statistics.median(timed(lambda: round_payload(admm, residuals))
                                                         for _ in range(calls))
    session.model.zero_grad(set_to_none=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per plain and ADMM stage (the first dropped)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5, help="calls of (b) and (c) per repeat (their median counts)")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="before each repeat, wait up to S seconds for other processes to go quiet (0: no wait)")
    parser.add_argument("--models", nargs="+", default=[c[0] for c in CASES], choices=[c[0] for c in CASES])
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch, with warm-up, is not counted)")
    env = environment()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.repeats} repeats of "
          f"{args.epochs} plain + {args.epochs} ADMM epochs + the parts; one Z/U round per epoch")
    results, protocol_cases = {}, {}
    for name, setup, data, targets in CASES:
        if name not in args.models:
            continue
        session = Session(parse_recipe({**setup, "device": "cpu", "seed": 0}))
        stages = stage_specs(targets)
        reps: dict[str, list[float]] = {}
        comp = Competition(args.quiet_wait)
        for _ in range(args.repeats):
            with comp.repeat():
                for arm, stage in stages.items():
                    reps.setdefault(f"{arm}_s_per_epoch", []).append(statistics.median(
                        epoch_seconds(session, stage, args.epochs)))
                for key, value in parts(session, stages["admm"], args.calls).items():
                    reps.setdefault(key, []).append(value)
        reps["parts_s_per_epoch"] = [a + b + c for a, b, c in zip(
            reps["penalty_s_per_epoch"], reps["histograms_s_per_round"], reps["update_s_per_round"])]
        reps["implied_ratio"] = [(p + s) / p for p, s in zip(reps["plain_s_per_epoch"], reps["parts_s_per_epoch"])]
        reps["measured_ratio"] = [a / p for a, p in zip(reps["admm_s_per_epoch"], reps["plain_s_per_epoch"])]
        m = {key: statistics.median(values) for key, values in reps.items()}
        batches = len(session.data.train_batches(0))
        results[name] = {
            **{key: m[key] for key in ("penalty_s_per_epoch", "histograms_s_per_round", "update_s_per_round",
                                       "round_payload_s_per_round", "parts_s_per_epoch", "plain_s_per_epoch",
                                       "admm_s_per_epoch")},
            "penalty_ms_per_batch": m["penalty_s_per_epoch"] / batches * 1e3,
            "implied_ratio": (m["plain_s_per_epoch"] + m["parts_s_per_epoch"]) / m["plain_s_per_epoch"],
            "measured_ratio": m["admm_s_per_epoch"] / m["plain_s_per_epoch"],
            "unexplained_s_per_epoch": m["admm_s_per_epoch"] - m["plain_s_per_epoch"] - m["parts_s_per_epoch"],
            "batches_per_epoch": batches, "rounds_per_epoch": 1,
            "prunable_weights": session.dense_weights,
            "repeats": {key: spread(values) for key, values in reps.items()}, "competition": comp.as_dict()}
        recipe = parse_recipe({**setup, "device": "cpu", "seed": 0,
                               "stages": [{**st, "epochs": args.epochs, "eval_every": 1000}
                                          for st in stages.values()]}).resolved()
        protocol_cases[name] = {"data": data, "recipe": recipe}

    print(f"{'model':9s} {'penalty/epoch':>13s} {'hist/round':>10s} {'Z/U/round':>10s} {'parts/epoch':>11s} "
          f"{'plain/epoch':>11s} {'implied':>8s} {'ADMM/epoch':>10s} {'measured':>8s}")
    for name, r in results.items():
        print(f"{name:9s} {r['penalty_s_per_epoch']:12.4f}s {r['histograms_s_per_round']:9.4f}s "
              f"{r['update_s_per_round']:9.4f}s {r['parts_s_per_epoch']:10.4f}s {r['plain_s_per_epoch']:10.3f}s "
              f"{r['implied_ratio']:8.3f} {r['admm_s_per_epoch']:9.3f}s {r['measured_ratio']:8.3f}")
    print("implied = (plain + penalty + histograms + update) / plain; measured = ADMM epoch / plain epoch")
    write(__file__, protocol={
        "epochs": args.epochs, "repeats": args.repeats, "calls": args.calls, "quiet_wait_s": args.quiet_wait,
        "seed": 0, "device": "cpu",
        "update_every": 1, "timing": __doc__.split("\n\n", 2)[2].split("Results:")[0].strip(),
        "functions": {"penalty": "admm_explorer.admm.ADMM.penalty (+ .backward())",
                      "histograms": "admm_explorer.admm.ADMM.histograms",
                      "update": "admm_explorer.admm.ADMM.update",
                      "round_payload": "admm_explorer.engine.stages.pruning.round_payload (histograms included; "
                                       "not added to the parts)"},
        "cases": protocol_cases}, results=results, env=env)


if __name__ == "__main__":
    main()
