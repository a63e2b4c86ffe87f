"""Training images per second of the engine (Session.run_stage) over a plain PyTorch loop on the same
model, data and batch: what the engine's events, checks and reads cost (target: engine/plain >= 0.95).

    python benchmarks/throughput.py [--rounds 5] [--device cpu]

Each arm trains `warm` batches, then `warm + batches` (per case: long enough that the difference is
seconds); the rate is `batches` x batch size over the
difference of the two times, so setup, the first batches and the stage's closing evaluation cancel. The
arms alternate within each round (the order flips every round), so that a change in the machine's load
hits both alike; the headline is the median over rounds of the per-round ratio. Figures and every round:
benchmarks/results/throughput.json (gpu_check.py uses the same measurement on a GPU).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from admm_explorer.engine import Session
from admm_explorer.recipe import parse_recipe

# name -> (setup, batches, warm)
CASES = {
    "lenet5": ({"model": "lenet5", "dataset": "mnist-sample", "batch_size": 64}, 300, 30),
    "resnet20": ({"model": "resnet20", "dataset": "fake", "fake_size": 1280, "batch_size": 128}, 30, 10),
}


def wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_seconds(session: Session, batches: int, stage: dict | None = None) -> float:
    """Wall seconds of one stage of `batches` batches (pretrain unless `stage` says otherwise)."""
    per_epoch = len(session.data.train_batches(0))
    spec = parse_recipe({"stages": [{"kind": "pretrain", **(stage or {}), "epochs": batches / per_epoch,
                                     "eval_every": 1000}]}).stages[0]
    wait(session.device)
    start = time.perf_counter()
    session.run_stage(spec)
    wait(session.device)
    return time.perf_counter() - start


def plain_seconds(model: nn.Module, session: Session, batches: int) -> float:
    """Wall seconds of the textbook loop over the same batches (session.data), Adam as the engine's default,
    the recipe's precision and memory format, the loss read once at the end."""
    device = session.device
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=session.recipe.precision == "fp16")
    model.train()
    wait(device)
    start = time.perf_counter()
    done, epoch = 0, 0
    while done < batches:
        for x, y in session.data.train_batches(epoch):
            if done == batches:
                break
            x, y = session.inputs(x, y)
            with session.autocast():
                loss = nn.functional.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            done += 1
        epoch += 1
    float(loss.detach())
    wait(device)
    return time.perf_counter() - start


def rates(setup: dict, batches: int, warm: int, rounds: int, stage: dict | None = None) -> dict:
    """Per round: images/s of the engine and of the plain loop, and their ratio."""
    session = Session(parse_recipe({"seed": 0, **setup}))
    if session.recipe.channels_last:
        session.model.to(memory_format=torch.channels_last)
    plain = parse_recipe({**setup, "stages": []})
    torch.manual_seed(0)
    from admm_explorer.models import build_model

    model = build_model(plain.model).to(session.device)
    if plain.channels_last:
        model.to(memory_format=torch.channels_last)
    size = session.recipe.batch_size * batches
    rows = {"engine": [], "plain": []}
    arms = {"engine": lambda n: engine_seconds(session, n, stage), "plain": lambda n: plain_seconds(model, session, n)}
    for r in range(rounds):
        for arm in (("engine", "plain") if r % 2 == 0 else ("plain", "engine")):
            short, long = arms[arm](warm), arms[arm](warm + batches)
            rows[arm].append(size / (long - short))
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
        "timing": "per arm, wall time of warm+batches batches minus that of warm batches (setup, warm-up and the "
                  "stage's closing evaluation cancel); engine: Session.run_stage(pretrain), plain: a textbook "
                  "loop over the same session.data batches with Adam; arms alternate, order flipped each round; "
                  "headline: medians over rounds"}, results=results, env=env)


if __name__ == "__main__":
    main()
