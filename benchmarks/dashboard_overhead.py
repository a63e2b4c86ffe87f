"""Seconds per ADMM epoch with the Explorer attached (headless widgets) over the engine alone (target <= 1.05).

    python benchmarks/dashboard_overhead.py [--epochs 4] [--repeats 3]

Both run the same recipe (the Explorer's default setup) and the same ADMM stage (the paper's LeNet-5 rates,
a Z/U round and a test evaluation every epoch) in a worker thread, as the Explorer does (on a busy machine
torch trains several times slower in the main thread than in another one, which would flatter the
Explorer); runs alternate so a busy machine slows both alike. The Explorer's share is its subscribers
(every batch event) and its throttled drawing, which run in the training thread.
Figures, every epoch's time and the protocol: benchmarks/results/dashboard_overhead.json.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
from results_io import Competition, environment, spread, write

from admm_explorer.engine import BatchEnded, Session, StageStarted
from admm_explorer.ui import Explorer


class EpochClock:
    """Wall time at the end of every epoch's last batch (the first epoch, with warm-up, is dropped)."""

    def __init__(self, batches_per_epoch: int):
        self.batches_per_epoch = batches_per_epoch
        self.marks: dict[int, float] = {}

    def __call__(self, event) -> None:
        if isinstance(event, StageStarted):
            self.marks = {0: time.perf_counter()}
        elif isinstance(event, BatchEnded) and event.step % self.batches_per_epoch == 0:
            self.marks[event.step // self.batches_per_epoch] = time.perf_counter()

    def epochs(self) -> list[float]:
        return [self.marks[e] - self.marks[e - 1] for e in range(2, max(self.marks) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="before each repeat, wait up to S seconds for other processes to go quiet (0: no wait)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch, with warm-up, is not counted)")
    env = environment()
    explorer = Explorer()
    explorer.stages.admm_epochs.value = args.epochs
    spec = explorer.stages.admm_spec()
    session = explorer.controller.session
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {session.recipe.model} on "
          f"{session.recipe.dataset} ({session.data.test_description}); ADMM, {args.epochs} epochs x "
          f"{args.repeats}")
    headless = Session(explorer.controller.recipe)
    clocks = {"engine": EpochClock(len(headless.data.train_batches(0))),
              "explorer": EpochClock(len(session.data.train_batches(0)))}
    headless.subscribe(clocks["engine"])
    session.subscribe(clocks["explorer"])
    times: dict[str, list[float]] = {"engine": [], "explorer": []}
    per_repeat: dict[str, list[list[float]]] = {"engine": [], "explorer": []}
    comp = Competition(args.quiet_wait)
    for _ in range(args.repeats):
        with comp.repeat():
            worker = threading.Thread(target=headless.run_stage, args=(spec,))
            worker.start()
            worker.join()
            per_repeat["engine"].append(clocks["engine"].epochs())
            explorer.stages.b_admm.click()
            explorer.controller.wait()
            per_repeat["explorer"].append(clocks["explorer"].epochs())
    for arm, repeats in per_repeat.items():
        times[arm] = [t for r in repeats for t in r]
    engine, attached = statistics.median(times["engine"]), statistics.median(times["explorer"])
    print(f"seconds per epoch (median of {len(times['engine'])}): engine {engine:.3f}, "
          f"with the Explorer {attached:.3f}")
    print(f"ratio explorer/engine: {attached / engine:.3f} (target <= 1.05)")
    repeat_ratios = [statistics.median(x) / statistics.median(e)
                     for e, x in zip(per_repeat["engine"], per_repeat["explorer"])]
    recipe = explorer.controller.recipe
    write(__file__, protocol={
        "epochs": args.epochs, "repeats": args.repeats, "quiet_wait_s": args.quiet_wait,
        "seed": recipe.seed, "model": recipe.model,
        "dataset": recipe.dataset, "test_set": session.data.test_description,
        "recipe": recipe.model_copy(update={"stages": [spec]}).resolved(),
        "interval_s": explorer.controller.interval,
        "timing": "wall time between the ends of consecutive epochs' last batches (a Z/U round and a test "
                  "evaluation every epoch included), epoch 1 of each stage dropped; both arms in a worker "
                  "thread; engine (headless Session) and Explorer (its Run ADMM button) alternate repeat by "
                  "repeat; the headline is the median over all counted epochs of an arm",
        "target_ratio": 1.05}, results={
        "engine_s_per_epoch": engine, "explorer_s_per_epoch": attached, "ratio": attached / engine,
        "repeat_ratios": spread(repeat_ratios), "engine_epochs_s": spread(times["engine"]),
        "explorer_epochs_s": spread(times["explorer"]), "per_repeat_s": per_repeat,
        "competition": comp.as_dict()}, env=env)


if __name__ == "__main__":
    main()
