"""Training images per second of the engine (Session.run_stage) over a plain PyTorch loop on the same
model, data and batch: what the engine's events, checks and reads cost (target: engine/plain >= 0.95).

    python benchmarks/throughput.py [--rounds 5] [--device cpu]

Each arm trains warm + batches batches and is timed from the end of batch `warm` to the end of batch
`warm + batches` (the engine: the moments it reports those batches, after reading their figures from
the device; the plain loop: the same points, with the loss read there), so setup, warm-up and the
stage's closing evaluation are outside. The arms alternate within each round and the order flips every
round, so a change in the machine's load hits both alike; the headline is the median over rounds of the
per-round ratio. Figures and every round: benchmarks/results/throughput.json (gpu_check.py uses the
same measurement on a GPU).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from admm_explorer.engine import BatchEnded, Session
from admm_explorer.recipe import parse_recipe

# name -> (setup, batches, warm); warm and warm + batches are multiples of the GPU's log_every (25)
CASES = {
    "lenet5": ({"model": "lenet5", "dataset": "mnist-sample", "batch_size": 64}, 300, 25),
    "resnet20": ({"model": "resnet20", "dataset": "fake", "fake_size": 1280, "batch_size": 128}, 50, 25),
}


def engine_seconds(session: Session, warm: int, batches: int, stage: dict | None = None) -> float:
    """Seconds from the end of batch `warm` to the end of batch warm + batches of one stage (pretrain unless
    `stage` says otherwise), as the engine reports them (BatchEnded, emitted once a batch's figures are read)."""
    per_epoch = len(session.data.train_batches(0))
    spec = parse_recipe({"stages": [{"kind": "pretrain", **(stage or {}), "epochs": (warm + batches) / per_epoch,
                                     "eval_every": 1000}]}).stages[0]
    marks = {}

    def on_event(event):
        if isinstance(event, BatchEnded) and event.step in (warm, warm + batches):
            marks[event.step] = time.perf_counter()

    unsubscribe = session.subscribe(on_event)
    try:
        session.run_stage(spec)
    finally:
        unsubscribe()
    return marks[warm + batches] - marks[warm]


def plain_seconds(model: nn.Module, session: Session, warm: int, batches: int) -> float:
    """The same span of the textbook loop over the same batches (session.data), Adam as the engine's default,
    the recipe's precision and memory format; the loss is read only at the two marks."""
    device = session.device
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=session.recipe.precision == "fp16")
    model.train()
    marks, done, epoch = {}, 0, 0
    while done < warm + batches:
        for x, y in session.data.train_batches(epoch):
            if done == warm + batches:
                break
            x, y = session.inputs(x, y)
            with session.autocast():
                loss = nn.functional.cross_entropy(model(x).float(), y)
            done += 1
            if done in (warm, warm + batches):
                float(loss.detach())
                marks[done] = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        epoch += 1
    return marks[warm + batches] - marks[warm]


def rates(setup: dict, batches: int, warm: int, rounds: int) -> dict:
    """Per round: images/s of the engine and of the plain loop, and their ratio."""
    from admm_explorer.models import build_model

    session = Session(parse_recipe({"seed": 0, **setup}))
    torch.manual_seed(0)
    model = build_model(session.recipe.model).to(session.device)
    if session.recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    size = session.recipe.batch_size * batches
    arms = {"engine": lambda: engine_seconds(session, warm, batches),
            "plain": lambda: plain_seconds(model, session, warm, batches)}
    rows = {"engine": [], "plain": []}
    for r in range(rounds):
        for arm in (("engine", "plain") if r % 2 == 0 else ("plain", "engine")):
            rows[arm].append(size / arms[arm]())
    ratios = [e / p for e, p in zip(rows["engine"], rows["plain"])]
    return {"engine_images_per_s": statistics.median(rows["engine"]),
            "plain_images_per_s": statistics.median(rows["plain"]), "ratio": statistics.median(ratios),
            "round_ratios": ratios, "engine_per_round": rows["engine"], "plain_per_round": rows["plain"]}


def main() -> None:
    from results_io import environment, spread, write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    env = environment()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'model':10s} {'engine img/s':>13s} {'plain img/s':>12s} {'ratio':>7s} {'round ratios (min-max)':>24s}")
    results = {}
    for name, (setup, batches, warm) in CASES.items():
        row = rates({**setup, "device": args.device}, batches, warm, args.rounds)
        low, high = min(row["round_ratios"]), max(row["round_ratios"])
        print(f"{name:10s} {row['engine_images_per_s']:13.0f} {row['plain_images_per_s']:12.0f} {row['ratio']:7.3f} "
              f"{low:11.3f} - {high:.3f}")
        results[name] = {**row, "round_ratios": spread(row["round_ratios"])}
    write(__file__, protocol={
        "rounds": args.rounds, "device": args.device, "seed": 0, "target_ratio": 0.95,
        "cases": {name: {"setup": setup, "batches": batches, "warm": warm} for name, (setup, batches, warm) in CASES.items()},
        "timing": "per arm, wall time from the end of batch warm to the end of batch warm+batches of one run "
                  "(engine: Session.run_stage(pretrain), marked when it reports those batches; plain: a textbook "
                  "loop over the same session.data batches with Adam, the loss read at the two marks); arms "
                  "alternate, order flipped each round; headline: medians over rounds"}, results=results, env=env)


if __name__ == "__main__":
    main()
