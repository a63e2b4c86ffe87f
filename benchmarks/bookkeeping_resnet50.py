"""Bookkeeping between stages on resnet50 (25.5M weights): run time outside the stages' own training and
evaluation (checkpoints, storage coding, summaries), this checkout against an earlier commit, alternated.

    python benchmarks/bookkeeping_resnet50.py [--before afec5a6] [--repeats 2]

Each arm runs the same three-stage recipe (pretrain, ADMM at 90%, retrain; one epoch each of 8 FakeData
images, so the stages themselves are short) in a fresh process; the earlier commit runs from a temporary
git worktree. Bookkeeping = run_recipe's wall time - the stages' own seconds (summary.json "stages").
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from results_io import REPO, environment, spread, write

RECIPE = {"model": "resnet50", "dataset": "fake", "fake_size": 8, "batch_size": 4, "test_batch_size": 8,
          "device": "cpu", "seed": 0,
          "stages": [{"kind": "pretrain", "epochs": 1},
                     {"kind": "admm", "epochs": 1, "update_every": 0.5, "targets": {"*": 0.9}},
                     {"kind": "retrain", "epochs": 1}]}
DRIVER = """
import json, sys, time
from admm_explorer.engine import run_recipe
recipe, out = json.loads(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
summary = run_recipe(recipe, out=out)
total = time.perf_counter() - start
stages = sum(s["seconds"] for s in summary["stages"])
print(json.dumps({"total_s": total, "stages_s": stages, "bookkeeping_s": total - stages}))
"""


def run_arm(source: Path, folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source)}
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(RECIPE), str(folder)], env=env, cwd=folder.parent,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="afec5a6", help="the commit to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    env = environment()
    with tempfile.TemporaryDirectory(prefix="bookkeeping-") as tmp:
        tmp = Path(tmp)
        old = tmp / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before], check=True,
                       capture_output=True)
        try:
            arms = {"before": [], "now": []}
            for i in range(args.repeats):  # alternated, so both arms see the same machine
                for arm, source in (("before", old), ("now", REPO)):
                    r = run_arm(source, tmp / f"{arm}-{i}")
                    arms[arm].append(r)
                    print(f"{arm:6s} run {i}: {r['total_s']:6.1f} s in all, stages {r['stages_s']:6.1f} s, "
                          f"bookkeeping {r['bookkeeping_s']:6.1f} s")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)
    results = {arm: {key: spread([r[key] for r in runs]) for key in ("total_s", "stages_s", "bookkeeping_s")}
               for arm, runs in arms.items()}
    for arm in arms:
        print(f"{arm}: bookkeeping median {results[arm]['bookkeeping_s']['median']:.1f} s of "
              f"{results[arm]['total_s']['median']:.1f} s")
    write(__file__, protocol={"recipe": RECIPE, "before_commit": args.before, "repeats": args.repeats}, results=results,
          env=env)


if __name__ == "__main__":
    main()
