"""The classroom demo through the Explorer's buttons, defaults untouched: Pretrain, Run ADMM, Retrain, Purify (P-RM).

    python benchmarks/dashboard_demo.py [--test-root ../shared/data/mnist]

LeNet-5 on the embedded 5,000-digit sample, tested on the real 10,000-digit MNIST test set: --test-root
defaults to the checkout's ../shared/data/mnist when that folder is there (the Setup panel itself has no
default test set; without one it tests on 1,000 held-out sample digits). The Setup panel holds 500 training
digits out as the validation set P-RM chooses on, and every stage writes its run folder (into a temporary
runs folder here).
Targets: 2 minutes on a 2-core CPU, >= 97% test accuracy, >= 50x fewer weights.
Figures, the test set used and the recipe the buttons ran: benchmarks/results/dashboard_demo.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from results_io import Competition, environment, write

from admm_explorer.ui import Explorer

MNIST_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


class Log:
    def __init__(self):
        self.ended, self.purified = [], None

    def on_event(self, event) -> None:
        if event.kind == "stage_ended":
            self.ended.append(event)
        elif event.kind == "purify_done":
            self.purified = event

    def flush(self) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-root", default=str(MNIST_TEST) if MNIST_TEST.is_dir() else None,
                        help="folder with the MNIST t10k IDX files (default: %(default)s; none: 1,000 held-out "
                             "sample digits)")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="before starting, wait up to S seconds for other processes to go quiet (0: no wait)")
    args = parser.parse_args()
    env = environment()
    comp = Competition(args.quiet_wait)
    with comp.repeat():
        code, protocol, results = demo(args.test_root)
    write(__file__, protocol={**protocol, "quiet_wait_s": args.quiet_wait},
          results={**results, "competition": comp.as_dict()}, env=env)
    return code


def demo(test_root: str | None) -> tuple[int, dict, dict]:
    """Builds the Explorer and presses its four buttons; (exit code, protocol, results) for the JSON."""
    start = time.perf_counter()
    runs = tempfile.TemporaryDirectory()
    explorer = Explorer(runs=runs.name, **({"test_root": test_root} if test_root else {}))
    log = Log()
    explorer.controller.subscribe(log)
    session = explorer.controller.session
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {session.recipe.model} on "
          f"{session.recipe.dataset}; test set: {session.data.test_description}")
    if "MNIST test set" not in session.data.test_description:
        print("warning: not the real MNIST test set; give --test-root", file=sys.stderr)
    built = time.perf_counter() - start
    s = explorer.stages
    buttons = (s.b_pretrain, s.b_admm, s.b_retrain, explorer.purify.b_purify)
    c = explorer.controller
    protocol = {
        "buttons": [b.description for b in buttons],
        "settings": "the Explorer's defaults, untouched (Explorer(test_root=...) only)",
        "test_root": test_root, "test_set": session.data.test_description,
        "real_mnist_test_set": "MNIST test set" in session.data.test_description,
        "n_train": session.data.n_train, "n_validation": session.data.n_validation, "n_test": session.data.n_test,
        "run_folder": "written for every stage (a temporary runs folder)",
        "model": c.recipe.model, "dataset": c.recipe.dataset, "seed": c.recipe.seed,
        "targets": {"seconds": 120, "accuracy": 0.97, "compression": 50}}
    for button in buttons:
        button.click()
        c.wait()
        errors = [m.text for m in explorer.notices.messages]
        if errors:
            print(f"{button.description}: {errors[-1]}", file=sys.stderr)
            return 1, protocol, {"error": f"{button.description}: {errors[-1]}"}
    total = time.perf_counter() - start
    session = c.session
    protocol["recipe"] = c.recipe.model_copy(update={"stages": list(c.history)}).resolved()
    print(f"Explorer built in {built:.1f} s")
    for e in log.ended:
        print(f"  {e.stage_kind:9s} {e.seconds:6.1f} s   test accuracy {e.accuracy:.2%}   "
              f"{e.compression:6.1f}x fewer weights")
    purify = None
    if log.purified is not None:
        b, a = log.purified.before, log.purified.after
        print(f"  P-RM: params {b['params']:,} -> {a['params']:,}, MACs {b['macs']:,} -> {a['macs']:,}, "
              f"accuracy {b['accuracy']:.2%} -> {a['accuracy']:.2%} (tau {log.purified.tau:g})")
        purify = {"tau": log.purified.tau, "before": b, "after": a,
                  "param_compression": b["params"] / a["params"], "mac_reduction": b["macs"] / a["macs"]}
    accuracy, compression = log.ended[-1].accuracy, session.compression()
    checks = {"under 2 minutes": total < 120, ">= 97% test accuracy": accuracy >= 0.97,
              ">= 50x fewer weights": compression >= 50}
    print(f"demo: {total:.1f} s, test accuracy {accuracy:.2%}, {compression:.1f}x fewer weights "
          f"({session.dense_weights:,} -> {round(session.dense_weights / compression):,} nonzero prunable weights)")
    print("; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items()))
    results = {
        "seconds": total, "explorer_built_s": built, "accuracy": accuracy, "compression": compression,
        "dense_weights": session.dense_weights, "nonzero_weights": round(session.dense_weights / compression),
        "stages": [{"kind": e.stage_kind, "seconds": e.seconds, "accuracy": e.accuracy,
                    "compression": e.compression, "status": e.status} for e in log.ended],
        "purify": purify, "checks": checks}
    runs.cleanup()
    return (0 if all(checks.values()) else 1), protocol, results


if __name__ == "__main__":
    sys.exit(main())
