"""Seconds from `admm-explorer dashboard` to an interactive page in Chromium (buttons and all five figures drawn).

    python benchmarks/dashboard_startup.py [--repeats 3]

Chromium (Debian's, /usr/bin/chromium) is started before the clock; the clock starts with the command.
The dashboard runs in the current directory (run this from a scratch folder: it may write there); the
figures (each repeat's printed/loaded/interactive times, the median, the 10 s target) go to
benchmarks/results/dashboard_startup.json beside this script, wherever it is run from.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_io import REPO, environment, spread, write

from admm_explorer.ui.serve import free_port

sys.path.insert(0, str(REPO / "tests" / "ui"))  # browser.py: the Chromium every browser check uses
from browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

TARGET_S = 10.0  # seconds to an interactive page


def once(browser, folder: Path) -> tuple[float, float, float]:
    """(address printed, page loaded, page interactive) in seconds since the command started."""
    port = free_port()
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "admm_explorer.cli", "dashboard", "--no-browser",
                                f"--port={port}"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        line = process.stdout.readline()
        printed = time.perf_counter() - start
        url = re.search(r"http://127\.0\.0\.1:\d+/\S*", line).group(0)
        page = browser.new_page(viewport={"width": 1600, "height": 2400})
        page.goto(url)
        loaded = time.perf_counter() - start
        page.get_by_role("button", name="Run ADMM").wait_for(state="visible", timeout=180_000)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=180_000)
        interactive = time.perf_counter() - start
        page.close()
        return printed, loaded, interactive
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = environment()
    folder = Path.cwd()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        chromium_version = browser.version
        runs = [once(browser, folder) for _ in range(args.repeats)]
        browser.close()
    for printed, loaded, interactive in runs:
        print(f"address printed {printed:5.1f} s, page loaded {loaded:5.1f} s, interactive {interactive:5.1f} s "
              f"({interactive - printed:.1f} s after the address)")
    median = statistics.median(r[2] for r in runs)
    print(f"median time to an interactive page: {median:.1f} s (target <= {TARGET_S:g} s: "
          f"{'met' if median <= TARGET_S else 'MISSED'})")
    write(__file__, protocol={
        "repeats": args.repeats,
        "dashboard_command": "python -m admm_explorer.cli dashboard --no-browser --port=<free port>",
        "cwd": str(folder), "browser": f"{CHROMIUM} (Chromium {chromium_version}), headless via Playwright, "
                                      f"started before the clock",
        "browser_args": CHROMIUM_ARGS, "viewport": [1600, 2400],
        "printed": "the command's first stdout line (the address) read",
        "loaded": "page.goto(address) returned (load event)",
        "interactive": "the Run ADMM button visible and >= 5 .js-plotly-plot figures drawn",
        "target_s": TARGET_S}, results={
        "interactive_median_s": median, "target_met": median <= TARGET_S,
        "repeats": [{"printed_s": p, "loaded_s": lo, "interactive_s": i} for p, lo, i in runs],
        "printed_s": spread(r[0] for r in runs), "loaded_s": spread(r[1] for r in runs),
        "interactive_s": spread(r[2] for r in runs)}, env=env)


if __name__ == "__main__":
    main()
