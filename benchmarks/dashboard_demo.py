"""The classroom demo through the Explorer's buttons, defaults untouched: Pretrain, Run ADMM, Retrain, Purify (P-RM).

    python benchmarks/dashboard_demo.py [--test-root ../shared/data/mnist]

LeNet-5 on the embedded 5,000-digit sample, tested on the real 10,000-digit MNIST test set (the Setup panel
offers ../shared/data/mnist when it is there; --test-root sets another folder). Targets: 2 minutes on a
2-core CPU, >= 97% test accuracy, >= 50x fewer weights.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from admm_explorer.ui import Explorer


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
    parser.add_argument("--test-root", help="folder with the MNIST t10k IDX files (default: the Setup panel's)")
    args = parser.parse_args()
    start = time.perf_counter()
    explorer = Explorer(**({"test_root": args.test_root} if args.test_root else {}))
    log = Log()
    explorer.controller.subscribe(log)
    session = explorer.controller.session
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {session.recipe.model} on "
          f"{session.recipe.dataset}; test set: {session.data.test_description}")
    if "MNIST test set" not in session.data.test_description:
        print("warning: not the real MNIST test set; give --test-root", file=sys.stderr)
    built = time.perf_counter() - start
    s = explorer.stages
    for button in (s.b_pretrain, s.b_admm, s.b_retrain, explorer.purify.b_purify):
        button.click()
        explorer.controller.wait()
        errors = [m.text for m in explorer.notices.messages]
        if errors:
            print(f"{button.description}: {errors[-1]}", file=sys.stderr)
            return 1
    total = time.perf_counter() - start
    session = explorer.controller.session
    print(f"Explorer built in {built:.1f} s")
    for e in log.ended:
        print(f"  {e.stage_kind:9s} {e.seconds:6.1f} s   test accuracy {e.accuracy:.2%}   {e.compression:6.1f}x fewer weights")
    if log.purified is not None:
        b, a = log.purified.before, log.purified.after
        print(f"  P-RM: params {b['params']:,} -> {a['params']:,}, MACs {b['macs']:,} -> {a['macs']:,}, "
              f"accuracy {b['accuracy']:.2%} -> {a['accuracy']:.2%} (tau {log.purified.tau:g})")
    accuracy, compression = log.ended[-1].accuracy, session.compression()
    checks = {"under 2 minutes": total < 120, ">= 97% test accuracy": accuracy >= 0.97,
              ">= 50x fewer weights": compression >= 50}
    print(f"demo: {total:.1f} s, test accuracy {accuracy:.2%}, {compression:.1f}x fewer weights "
          f"({session.dense_weights:,} -> {round(session.dense_weights / compression):,} nonzero prunable weights)")
    print("; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items()))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
