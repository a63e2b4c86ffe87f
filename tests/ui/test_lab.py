"""The Explorer inside JupyterLab 4, opened by `admm-explorer lab`: widgets render, plotly figures update."""
from __future__ import annotations

import sys
import time

import pytest

from browser import CHROMIUM, chromium, points, pretrain_briefly, server

pytestmark = pytest.mark.browser


def test_explorer_trains_in_jupyterlab(tmp_path, require):
    require(CHROMIUM.exists(), "/usr/bin/chromium is absent (apt-get install chromium)")
    command = [sys.executable, "-m", "admm_explorer.cli", "lab", "--no-browser", "--port=0"]
    with server(command, tmp_path, tmp_path / "lab.log") as url, chromium(1600, 1400) as page:
        assert "/lab/tree/01-admm-from-scratch.ipynb?token=" in url  # a teacher starts on the course's first lesson
        page.goto(url.replace("01-admm-from-scratch.ipynb", "explorer.ipynb"))
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)  # the kernel with admm_explorer
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells").first.click()
        page.get_by_role("button", name="Run ADMM").wait_for(state="visible", timeout=120_000)
        deadline = time.monotonic() + 30
        while page.locator(".jp-OutputArea .js-plotly-plot").count() < 5:  # every figure drawn in the output
            assert time.monotonic() < deadline, "JupyterLab did not draw the Explorer's five figures"
            time.sleep(0.2)
        assert sum(points(page, "accuracypanel")) == 0
        assert pretrain_briefly(page) == [2, 2, 2, 2]  # train/test accuracy and loss at 0.1 and 0.2 epochs
