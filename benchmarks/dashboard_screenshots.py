"""The default demo clicked through in Chromium, with the README's screenshots taken on the way.

    python benchmarks/dashboard_screenshots.py [--out docs/screenshots]

`admm-explorer dashboard` on a free port, then Pretrain, Run ADMM (a shot while it trains), Retrain and
Purify (P-RM) with the page's defaults; prints each stage's line from the page and the seconds it took, and
writes them to benchmarks/results/dashboard_screenshots.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from results_io import REPO, environment, write

sys.path.insert(0, str(REPO / "tests" / "ui"))  # browser.py: Chromium, and the server as its user starts it
from browser import chromium, server, wait_stage  # noqa: E402

STAGES = (("Pretrain", "pretrain"), ("Run ADMM", "admm"), ("Retrain", "retrain"), ("Purify (P-RM)", "purify"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    stages = []
    command = [sys.executable, "-m", "admm_explorer.cli", "dashboard", "--no-browser", "--port=0"]
    with tempfile.TemporaryDirectory() as folder, server(command, Path(folder), Path(folder) / "voila.log") as url, \
            chromium(1600, 1900) as page:
        page.goto(url)
        page.get_by_role("button", name="Run ADMM").wait_for(state="visible", timeout=180_000)
        start = time.monotonic()
        for name, kind in STAGES:
            page.get_by_role("button", name=name, exact=True).click()
            if kind == "admm":
                while "round" not in page.locator(".ae-histogrampanel").inner_text() or \
                        page.locator(".ae-residualspanel path.point").count() < 8 * 6:
                    time.sleep(0.5)
                page.screenshot(path=str(args.out / "explorer-admm-live.png"))
            line = wait_stage(page, kind, timeout=600)
            seconds = time.monotonic() - start
            print(f"{seconds:6.1f} s  {line}", flush=True)
            stages.append({"button": name, "seconds_since_start": round(seconds, 1), "status": line})
        page.screenshot(path=str(args.out / "explorer-purified.png"))
    write(__file__, protocol={"buttons": [name for name, _ in STAGES], "settings": "the page's defaults",
                              "viewport": [1600, 1900], "screenshots": ["explorer-admm-live.png",
                                                                        "explorer-purified.png"]},
          results={"stages": stages}, env=env)


if __name__ == "__main__":
    main()
