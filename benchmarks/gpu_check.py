"""The GPU checks in one script (under 5 minutes on one GPU): the CUDA test module, training images/s of
the engine and of a plain loop, ADMM epoch time over plain, the ResNet-50 Z-step, peak GPU memory, bf16
against fp32.

    python benchmarks/gpu_check.py            # on a CUDA machine: writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --smoke    # tiny sizes on any device, to check the script itself (no JSON)

images/s as throughput.py measures it (the difference of a short and a long run, so setup and the closing
evaluation cancel); FakeData at ImageNet shape goes through the DataLoader with workers, as an image
folder would.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from throughput import engine_seconds, rates

from admm_explorer.engine import Session
from admm_explorer.recipe import parse_recipe

HERE = Path(__file__).resolve().parent
# name -> (setup, batches, warm): FakeData unless MNIST; warm and warm + batches are multiples of
# log_every (25 on a GPU), where the engine reads its figures
CASES = {
    "lenet5": ({"model": "lenet5", "dataset": "mnist-sample", "batch_size": 256}, 50, 25),
    "resnet20": ({"model": "resnet20", "dataset": "fake", "fake_size": 25_600, "batch_size": 256,
                  "workers": 8}, 50, 25),
    "resnet18-cifar": ({"model": "resnet18-cifar", "dataset": "fake", "fake_size": 25_600, "batch_size": 256,
                        "workers": 8}, 50, 25),
    "resnet50": ({"model": "resnet50", "dataset": "fake", "fake_size": 6_400, "fake_shape": [3, 224, 224],
                  "batch_size": 64, "workers": 8}, 50, 25),
}
SMOKE = {"batch_size": 4, "fake_size": 32, "workers": 0, "log_every": 1}


def wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_tests() -> dict:
    """pytest -m cuda on tests/engine/test_cuda.py: its outcome line and return code."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           str(HERE.parent / "tests" / "engine" / "test_cuda.py")],
                          capture_output=True, text=True, cwd=HERE.parent, timeout=240)
    lines = done.stdout.strip().splitlines()
    return {"returncode": done.returncode, "summary": lines[-1] if lines else done.stderr[-500:]}


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def admm_over_plain(setup: dict, batches: int, warm: int) -> dict:
    """Seconds per batch of an ADMM stage (penalty every batch, a Z/U round every epoch, or twice in a stage
    shorter than an epoch: more often than training does) over a pretrain stage's, on one session, each
    timed inside its stage as throughput.py does."""
    session = Session(parse_recipe({"seed": 0, **setup}))
    update_every = min(1.0, (warm + batches) / len(session.data.train_batches(0)) / 2)
    stages = {"plain": None, "admm": {"kind": "admm", "update_every": update_every, "targets": {"*": 0.9}}}
    per_batch = {arm: engine_seconds(session, warm, batches, stage) / batches for arm, stage in stages.items()}
    return {"plain_s_per_batch": per_batch["plain"], "admm_s_per_batch": per_batch["admm"],
            "ratio": per_batch["admm"] / per_batch["plain"], "update_every_epochs": update_every}


def zstep_seconds(device: str, repeats: int) -> dict:
    """One Z/U round of ADMM on every prunable layer of ResNet-50 (25.5M weights): median seconds."""
    from admm_explorer.admm import ADMM
    from admm_explorer.models import build_model

    model = build_model("resnet50").to(device)
    admm = ADMM(model, {"*": 0.9})
    times = []
    for _ in range(repeats + 1):
        wait(torch.device(device))
        start = time.perf_counter()
        admm.update()
        wait(torch.device(device))
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times[1:]), "values": times[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device, no JSON written")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device if not args.smoke or args.device != "cuda" or torch.cuda.is_available()
                          else "cpu")
    if device.type != "cuda" and not args.smoke:
        sys.exit("error: no CUDA device here; gpu_check measures a GPU (--smoke checks the script on any device)")
    start = time.perf_counter()
    results: dict = {"device": str(device),
                     "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    results["cuda_tests"] = cuda_tests() if device.type == "cuda" else None
    results["images_per_s"] = {}
    for name, (setup, batches, warm) in CASES.items():
        setup = {**setup, "device": str(device), **(SMOKE if args.smoke else {})}
        if args.smoke:
            batches, warm = 2, 2
        row = {}
        for precision in ("fp32", "bf16"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            measured = rates({**setup, "precision": precision, "channels_last": precision == "bf16"},
                             batches, warm, 1 if args.smoke else args.rounds)
            row[precision] = {**measured, "peak_gpu_mib": peak_mib(device)}
        row["bf16_over_fp32"] = row["bf16"]["engine_images_per_s"] / row["fp32"]["engine_images_per_s"]
        results["images_per_s"][name] = row
        print(f"{name:15s} fp32 {row['fp32']['engine_images_per_s']:8.0f} img/s (plain {row['fp32']['plain_images_per_s']:8.0f})"
              f"  bf16+NHWC {row['bf16']['engine_images_per_s']:8.0f} img/s  x{row['bf16_over_fp32']:.2f}"
              f"  peak {row['fp32']['peak_gpu_mib'] or 0:.0f} MiB", flush=True)
    results["admm_over_plain"] = {}
    for name in ("resnet20", "resnet50"):
        setup, batches, warm = CASES[name]
        setup = {**setup, "device": str(device), **(SMOKE if args.smoke else {})}
        results["admm_over_plain"][name] = admm_over_plain(setup, 2 if args.smoke else batches, 2 if args.smoke else warm)
        print(f"{name:15s} ADMM/plain per batch {results['admm_over_plain'][name]['ratio']:.3f}", flush=True)
    results["resnet50_zstep"] = zstep_seconds(str(device), 1 if args.smoke else 5)
    print(f"resnet50 Z/U round {results['resnet50_zstep']['median_s']:.3f} s", flush=True)
    results["seconds"] = time.perf_counter() - start
    print(f"{results['seconds']:.0f} s in all; CUDA tests: {results['cuda_tests']}")
    if args.smoke:
        print(json.dumps({"smoke": True, "cases": list(results["images_per_s"])}))
        return
    from results_io import environment, write

    write(__file__, protocol={"rounds": args.rounds, "cases": {n: {"setup": s, "batches": b, "warm": w}
                                                               for n, (s, b, w) in CASES.items()},
                              "timing": "as benchmarks/throughput.py; bf16 runs use channels_last"},
          results=results, env=environment())


if __name__ == "__main__":
    main()
