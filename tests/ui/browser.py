"""Debian's Chromium driven by Playwright, and a server started as its user starts it.

Shared by the browser tests and by .ci/first_command.py, which runs in a venv holding only Playwright
(no admm_explorer, no pytest), so this module imports neither.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ADDRESS = re.compile(r"http://127\.0\.0\.1:(\d+)/\S*")


@contextmanager
def server(command: list[str], cwd: Path, log: Path, env: dict | None = None):
    """Start `command` (`admm-explorer dashboard|lab --no-browser ...`) in `cwd`; yield the address it prints
    (token included). Its other output goes to `log`. It is stopped like a user's Ctrl-C, then terminated."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=out, text=True,
                                   env={**os.environ, **(env or {})})
        try:
            line = process.stdout.readline()
            match = ADDRESS.search(line)
            assert match, f"{command[0]} printed {line!r}; log: {log.read_text()[-3000:]}"
            yield match.group(0)
        finally:
            process.terminate()
            process.wait(timeout=60)


@contextmanager
def chromium(width: int = 1600, height: int = 2400):
    """A page in a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def field(root, label: str):
    return root.get_by_label(label, exact=True)


def set_value(root, label: str, value) -> None:
    box = field(root, label)
    box.fill(str(value))
    box.press("Enter")


def stage_status(root) -> str:
    return root.locator(".ae-stagespanel .widget-html-content").last.inner_text()


def wait_stage(root, kind: str, status: str = "finished", timeout: float = 120) -> str:
    """Wait for the Stages panel to report the end of a stage of this kind; fail on a shown error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = stage_status(root)
        if f"{kind} {status}" in text:
            return text
        errors = root.locator(".ae-error").all_inner_texts()
        assert not errors, f"the page shows an error: {errors}"
        time.sleep(0.25)
    raise AssertionError(f"{kind} did not end as {status!r}; status: {stage_status(root)!r}")


def points(root, panel: str) -> list[int]:
    """Markers plotted per scatter trace of a panel's figure, read from plotly's SVG."""
    traces = root.locator(f".ae-{panel} .scatterlayer .trace")
    return [traces.nth(i).locator("path.point").count() for i in range(traces.count())]


def pretrain_briefly(root, epochs: float = 0.2, every: float = 0.1) -> list[int]:
    """Press Pretrain with a tiny budget in a shown Explorer; return the accuracy figure's points per trace."""
    stages = root.locator(".ae-stagespanel")
    set_value(stages, "Pretrain epochs", epochs)
    set_value(stages, "Evaluate every", every)
    root.get_by_role("button", name="Pretrain", exact=True).click()
    wait_stage(root, "pretrain")
    return points(root, "accuracypanel")
