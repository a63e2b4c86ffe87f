"""Writes a benchmark's figures, with its protocol and the environment it ran in, to benchmarks/results/.

    from results_io import environment, spread, write
    env = environment()                                   # at the start: the load average then
    ...
    write(__file__, protocol={...}, results={...}, env=env)   # -> benchmarks/results/<script>.json

The docs quote figures only from these files. The path comes from this file's location, never the cwd.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent


def _git() -> dict:
    """The checkout's commit and whether it had uncommitted changes (read only; None outside git)."""
    def run(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": run("rev-parse", "HEAD"), "uncommitted_changes": None if status is None else bool(status)}


def environment() -> dict:
    """Versions, threads, CPU and the 1/5/15-minute load average now (call it when the measurement starts)."""
    import torch

    import admm_explorer

    return {"admm_explorer": admm_explorer.__version__, "torch": torch.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "device": "cpu", "load_average_at_start": list(os.getloadavg()), **_git()}


def others_cpu_s() -> float:
    """CPU seconds the machine has spent busy outside this process (and its waited-for children) since boot;
    the difference over a repeat is how much other processes competed with it (Linux /proc/stat; nan
    elsewhere). With 2 cores, a repeat of t seconds next to other load of t seconds shared the machine."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    except (OSError, ValueError):
        return float("nan")
    t = os.times()
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy - (t.user + t.system + t.children_user + t.children_system)


def wait_for_quiet(max_s: float, window_s: float = 10.0, share: float = 0.05) -> float:
    """Sleep until, over a `window_s` window, other processes used under `share` of one core (or until `max_s`
    has passed; 0: do not wait); returns the seconds waited. On a 2-core machine torch's 2 threads slow down
    by 10x and more while another process holds a core, so a repeat started in such a burst measures it."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_s:
        mark = others_cpu_s()
        time.sleep(window_s)
        if not others_cpu_s() - mark >= share * window_s:  # nan (no /proc/stat): do not wait
            break
    return time.perf_counter() - start


class Competition:
    """Per repeat: wall seconds, CPU seconds other processes used, their share of one core, and the seconds
    waited for quiet before it. with comp.repeat(): ...; comp.as_dict() for the JSON."""

    def __init__(self, quiet_wait_s: float = 0.0, contended_share: float = 0.1):
        self.quiet_wait_s, self.contended_share = quiet_wait_s, contended_share
        self.rows: list[dict] = []

    @contextlib.contextmanager
    def repeat(self):
        waited = wait_for_quiet(self.quiet_wait_s) if self.quiet_wait_s > 0 else 0.0
        mark, start = others_cpu_s(), time.perf_counter()
        yield
        wall, others = time.perf_counter() - start, others_cpu_s() - mark
        self.rows.append({"wall_s": wall, "others_cpu_s": others, "others_share": others / wall,
                          "waited_for_quiet_s": waited})

    def as_dict(self) -> dict:
        """The rows, and the repeats during which others used more than `contended_share` of a core."""
        return {"per_repeat": self.rows, "contended_share": self.contended_share,
                "contended_repeats": [i for i, r in enumerate(self.rows) if r["others_share"] > self.contended_share]}


def spread(values) -> dict:
    """Median, min, max and every value of a list of repeats."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on n independent examples: sqrt(p (1 - p) / n)."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


def accuracy_stats(values, n_test: int) -> dict:
    """{values, mean, std (sample, over seeds), binomial_se (of one run's accuracy on the n_test examples)}."""
    values = [float(v) for v in values]
    mean = statistics.mean(values)
    return {"values": values, "mean": mean, "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "binomial_se": binomial_se(mean, n_test)}


def compare(a: dict, b: dict) -> dict:
    """Whether two accuracy_stats differ beyond the noise: the difference of their means against twice its
    standard error, from the spread over seeds (std^2 / k each) and never below what one test set allows
    (sqrt(2) binomial SEs). {"difference": a - b, "noise": 2 SE, "call": "a" | "b" | "tie"}."""
    se = max(math.sqrt(a["std"] ** 2 / len(a["values"]) + b["std"] ** 2 / len(b["values"])),
             math.sqrt(a["binomial_se"] ** 2 + b["binomial_se"] ** 2))
    diff = a["mean"] - b["mean"]
    return {"difference": diff, "noise": 2 * se, "call": "tie" if abs(diff) <= 2 * se else ("a" if diff > 0 else "b")}


def write(script: str, protocol: dict, results: dict, env: dict | None = None, name: str | None = None) -> Path:
    """benchmarks/results/<name or the script's stem>.json: {script, command, finished, protocol, environment,
    results}. `env`: environment() taken at the start (the load average at the end is added)."""
    env = dict(env or environment())
    env["load_average_at_end"] = list(os.getloadavg())
    path = RESULTS / f"{name or Path(script).stem}.json"
    data = {"script": f"benchmarks/{Path(script).name}",
            "command": " ".join(["python", f"benchmarks/{Path(script).name}", *sys.argv[1:]]),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "protocol": protocol, "environment": env, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path
