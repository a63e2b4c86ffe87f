"""The default demo clicked through in Chromium, with the README's screenshots taken on the way.

    python benchmarks/dashboard_screenshots.py [--out docs/screenshots]

`admm-explorer dashboard` on a free port, then Pretrain, Run ADMM (a shot while it trains), Retrain and
Purify (P-RM) with the page's defaults; prints each stage's line from the page and the seconds it took.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from admm_explorer.ui.serve import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def status(page) -> str:
    return page.locator(".ae-stagespanel .widget-html-content").last.inner_text()


def wait_end(page, kind: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while f"{kind} finished" not in (text := status(page)):
        errors = page.locator(".ae-error").all_inner_texts()
        if errors or time.monotonic() > deadline:
            raise SystemExit(f"{kind}: {errors or text}")
        time.sleep(0.5)
    return text


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "admm_explorer.cli", "dashboard", "--no-browser",
                                f"--port={port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/\S*", process.stdout.readline()).group(0)  # token included
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1900})
            page.goto(url)
            page.get_by_role("button", name="Run ADMM").wait_for(state="visible", timeout=180_000)
            start = time.monotonic()
            for name, kind in (("Pretrain", "pretrain"), ("Run ADMM", "admm"), ("Retrain", "retrain"),
                               ("Purify (P-RM)", "purify")):
                page.get_by_role("button", name=name, exact=True).click()
                if kind == "admm":
                    while "round" not in page.locator(".ae-histogrampanel").inner_text() or \
                            page.locator(".ae-residualspanel path.point").count() < 8 * 6:
                        time.sleep(0.5)
                    page.screenshot(path=str(args.out / "explorer-admm-live.png"))
                line = wait_end(page, kind)
                print(f"{time.monotonic() - start:6.1f} s  {line}", flush=True)
            page.screenshot(path=str(args.out / "explorer-purified.png"))
            browser.close()
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
