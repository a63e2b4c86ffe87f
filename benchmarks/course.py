"""The course's run times, and what a student sees: each notebook run top to bottom, then served as a page.

    python benchmarks/course.py [--quiet-wait S] [--screenshots docs/screenshots]

1. Each notebook of notebooks/ in its student setting (as Run All in JupyterLab), then in the test suite's
   small setting (ADMM_EXPLORER_QUICK=1), alternating the two, with nbclient: seconds from kernel start to
   the last cell. Writes benchmarks/results/course.json.
2. With --screenshots: `admm-explorer dashboard NN` for each lesson in Chromium at 1280 px, a screenshot of
   the lesson's first figure once Voila has run it (docs/screenshots/course-NN.png).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from results_io import REPO, environment, wait_for_quiet, write

from admm_explorer.ui.serve import package_notebooks

sys.path.insert(0, str(REPO / "tests" / "ui"))  # browser.py: Chromium, and the server as its user starts it
from browser import chromium, server  # noqa: E402


def run_seconds(path: Path, quick: bool) -> float:
    os.environ.pop("ADMM_EXPLORER_QUICK", None)
    if quick:
        os.environ["ADMM_EXPLORER_QUICK"] = "1"  # the kernel inherits this process's environment
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3").execute()
    return time.perf_counter() - start


def screenshot(number: str, out: Path) -> float:
    """Seconds until the lesson's page showed its first figure; the shot is that figure's cell."""
    command = [sys.executable, "-m", "admm_explorer.cli", "dashboard", number, "--no-browser", "--port=0"]
    with tempfile.TemporaryDirectory() as folder, server(command, Path(folder), Path(folder) / "voila.log") as url, \
            chromium(1280, 1000) as page:
        start = time.monotonic()
        page.goto(url, timeout=600_000)
        figure = page.locator(".js-plotly-plot").first
        figure.wait_for(timeout=600_000)
        seconds = time.monotonic() - start
        time.sleep(2)  # plotly's first layout pass
        page.locator(".jp-Cell", has=figure).first.screenshot(path=str(out / f"course-{number}.png"))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="before each run, wait up to S seconds for other processes to leave the CPU")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="also shoot each lesson's page into DIR")
    args = parser.parse_args()
    env = environment()
    lessons = sorted(package_notebooks().glob("0*.ipynb"))
    seconds: dict[str, dict[str, float]] = {}
    for path in lessons:
        times = {}
        for quick in (False, True):
            wait_for_quiet(args.quiet_wait)
            times["quick" if quick else "student"] = round(run_seconds(path, quick), 1)
        seconds[path.stem] = times
        print(f"{path.stem:36s} student setting {times['student']:6.1f} s   small setting {times['quick']:6.1f} s",
              flush=True)
    pages = {}
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
        for path in lessons:
            pages[path.stem] = round(screenshot(path.stem[:2], args.screenshots), 1)
            print(f"{path.stem:36s} page showed its first figure after {pages[path.stem]:.1f} s", flush=True)
    write(__file__, protocol={
        "notebooks": [p.name for p in lessons],
        "student": "the notebook as shipped, executed top to bottom by nbclient (JupyterLab's Run All)",
        "quick": "ADMM_EXPLORER_QUICK=1, the test suite's small setting",
        "page": "admm-explorer dashboard NN in Chromium at 1280 px: goto until the first plotly figure shows "
                "(Voila runs the whole notebook first)",
        "runs": "one of each per notebook, student then small setting; noisy on this shared 2-core VM (up to 1.7x)",
        "quiet_wait_s": args.quiet_wait,
    }, results={"seconds": seconds, "page_seconds": pages,
                "total_student_s": round(sum(t["student"] for t in seconds.values()), 1),
                "total_quick_s": round(sum(t["quick"] for t in seconds.values()), 1)}, env=env)


if __name__ == "__main__":
    main()
