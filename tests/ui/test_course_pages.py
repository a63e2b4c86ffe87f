"""The course as pages for a class: the Explorer's Explain opens lesson 01 served by Voila, and its rho slider
re-runs the toy ADMM and redraws the iterates. Screenshots go to artifacts/ui/ (docs/screenshots/ holds copies)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from browser import CHROMIUM, chromium, server

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
# the x, y of every trace named W, Z or W + U, read from plotly's own figure object in the page
ITERATES = """() => {
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const traces = (plot.data || []).filter(t => ['W', 'Z', 'W + U'].includes(t.name));
    if (traces.length === 3) return traces.map(t => [t.name, Array.from(t.x), Array.from(t.y)]);
  }
  return null;
}"""


def iterates(page, timeout: float = 120) -> list:
    deadline = time.monotonic() + timeout
    while (found := page.evaluate(ITERATES)) is None:
        assert time.monotonic() < deadline, "no figure with the traces W, Z and W + U"
        time.sleep(0.5)
    return found


def test_explain_opens_lesson_01_whose_rho_slider_redraws_the_iterates(tmp_path, require):
    require(CHROMIUM.exists(), "/usr/bin/chromium is absent (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "admm_explorer.cli", "dashboard", "--no-browser", "--port=0"]
    with server(command, tmp_path, tmp_path / "voila.log") as url, chromium(1280, 1400) as page:
        page.goto(url)
        page.get_by_role("button", name="Run ADMM").wait_for(state="visible", timeout=120_000)
        residuals = page.locator(".ae-residualspanel")
        residuals.get_by_role("button", name="Explain").click()
        residuals.locator(".ae-explain mjx-container").first.wait_for(timeout=30_000)  # LaTeX typeset by MathJax
        assert "Look for:" in residuals.locator(".ae-explain").inner_text()
        page.screenshot(path=str(ARTIFACTS / "course-explain.png"))

        with page.context.expect_page() as opened:
            residuals.locator(".ae-explain a").click()
        lesson = opened.value
        lesson.set_viewport_size({"width": 1280, "height": 1400})
        lesson.wait_for_load_state(timeout=180_000)  # Voila runs the notebook before the page is complete
        assert lesson.url.split("?")[0].endswith("/voila/render/01-admm-from-scratch.ipynb")
        before = iterates(lesson)
        slider = lesson.locator(".widget-slider", has=lesson.get_by_text("rho", exact=True))
        slider.scroll_into_view_if_needed()
        lesson.screenshot(path=str(ARTIFACTS / "course-01-toy.png"))
        handle = slider.locator(".noUi-handle").first
        box = handle.bounding_box()
        lesson.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        lesson.mouse.down()
        lesson.mouse.move(box["x"] - 25, box["y"] + box["height"] / 2, steps=5)  # a smaller rho
        lesson.mouse.up()
        deadline = time.monotonic() + 60
        while (after := iterates(lesson)) == before:  # the kernel re-ran ADMM and the figure took the new path
            assert time.monotonic() < deadline, "moving rho did not redraw the iterates"
            time.sleep(0.25)
        assert [name for name, *_ in after] == [name for name, *_ in before]
        assert "ρ = 3," not in lesson.locator(".js-plotly-plot .gtitle").first.text_content()  # the title names the new rho
        lesson.screenshot(path=str(ARTIFACTS / "course-01-rho-moved.png"))
