"""The Explorer readable where a class sees it (issue 13.6): Voila at 1280 px (a projector) and JupyterLab 4 at
1600 px with its file browser open. Nothing is cut: every panel inside the page, every control and every cell of
Targets (all 8 columns) inside its panel, no two cells of a Targets row over each other, sliders at least 80 px,
every field, list, label and button showing its whole text; ResNet-20's long layer names stay off the Shape column.
No training: one page load per environment. Screenshots go to artifacts/ui/layout-1280.png and layout-lab-1600.png.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from admm_explorer.ui.panels.stages import DEFAULTS
from browser import CHROMIUM, chromium, server

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
COLUMNS = ["Layer", "Shape", "Weights", "FLOPs (MACs)", "Sparsity", "Structure", "Bits", "Kept"]
MIN_SLIDER = 80  # px of track: a sparsity a student can set with the mouse
LAYOUT = """(minSlider) => {
  const problems = [], count = {panels: 0, controls: 0, sliders: 0, fields: 0, rows: 0};
  const root = document.querySelector('.ae-root');
  if (!root) return {problems: ['no Explorer (.ae-root) in the page'], count};
  const box = e => e.getBoundingClientRect();
  const shown = e => { const b = box(e); return b.width > 0 && b.height > 0; };
  const px = v => parseFloat(v) || 0;
  const span = b => `[${Math.round(b.left)}, ${Math.round(b.right)}]`;
  const outside = (b, area) => b.left < area.left - 1 || b.right > area.right + 1;
  const what = e => {
    const own = e.closest('.widget-inline-hbox');
    const label = own && own.querySelector('.widget-label');
    const text = (e.matches('button') && e.textContent.trim()) || (label && label.textContent.trim()) ||
                 e.getAttribute('title') || e.textContent || e.value || e.tagName;
    return `'${text.trim().split('\\n')[0].slice(0, 40)}'`;
  };
  const ruler = document.createElement('canvas').getContext('2d');
  const textWidth = (text, e) => {
    const s = getComputedStyle(e);
    ruler.font = `${s.fontStyle} ${s.fontWeight} ${s.fontSize} ${s.fontFamily}`;
    return ruler.measureText(text).width;
  };
  // the Explorer inside the window and, in JupyterLab, inside its cell's output area
  const outputs = [...document.querySelectorAll('.jp-OutputArea-output')].filter(o => o.contains(root));
  const right = Math.min(document.documentElement.clientWidth, ...outputs.map(o => box(o).right));
  const page = box(root);
  if (page.right > right + 1) problems.push(`the Explorer ${span(page)} is cut at ${Math.round(right)}`);
  const panelName = e => [...e.classList].find(c => /^ae-\\w+panel$/.test(c));  // Panel.widget: ae-setuppanel ...
  const panels = [...root.querySelectorAll('.widget-vbox')].filter(e => panelName(e) && shown(e));
  for (const panel of panels) {
    count.panels += 1;
    const name = panelName(panel);
    const p = box(panel), s = getComputedStyle(panel);
    if (outside(p, page)) problems.push(`${name} ${span(p)} outside the page ${span(page)}`);
    const inner = {left: p.left + px(s.borderLeftWidth) + px(s.paddingLeft),
                   right: p.right - px(s.borderRightWidth) - px(s.paddingRight)};
    // every control and every cell of a grid (Targets' table, Stages' fields) inside the panel's padding
    const controls = [...panel.querySelectorAll('.widget-inline-hbox, .widget-button, .widget-toggle-button, ' +
                                                'input, select, textarea, .widget-gridbox > *')].filter(shown);
    for (const c of controls) {
      count.controls += 1;
      const b = box(c);
      if (outside(b, inner)) problems.push(`${name}: ${what(c)} ${span(b)} outside ${span(inner)}`);
    }
    for (const slider of panel.querySelectorAll('.widget-hslider')) {
      if (!shown(slider)) continue;
      count.sliders += 1;
      const track = box(slider.querySelector('.slider-container')).width;
      if (track < minSlider) problems.push(`${name}: slider ${what(slider)} is ${Math.round(track)} px wide`);
    }
    // fields and lists show their whole value (a number field keeps room for its spin buttons)
    for (const field of panel.querySelectorAll('input[type=text], input[type=number], select')) {
      if (!shown(field)) continue;
      count.fields += 1;
      const text = field.tagName === 'SELECT' ? (field.selectedOptions[0] || {}).text || ''
                                              : field.value || field.placeholder;
      const fs = getComputedStyle(field);
      const room = field.clientWidth - px(fs.paddingLeft) - px(fs.paddingRight) - (field.type === 'number' ? 16 : 0);
      const need = textWidth(text, field);
      if (need > room + 1) {
        problems.push(`${name}: ${what(field)} shows '${text}' in ${Math.round(room)} px, needs ${Math.round(need)}`);
      }
    }
    for (const e of panel.querySelectorAll('.widget-label, .widget-readout, .widget-button, .widget-toggle-button')) {
      if (shown(e) && e.scrollWidth > e.clientWidth + 1) {
        problems.push(`${name}: ${what(e)} is clipped (${e.scrollWidth} px in ${e.clientWidth})`);
      }
    }
    // text (table cells, layer names, tables, statuses) drawn inside its own box, not over its neighbour
    for (const html of panel.querySelectorAll('.widget-html-content')) {
      if (!shown(html)) continue;
      const range = document.createRange();
      range.selectNodeContents(html);
      const t = range.getBoundingClientRect(), b = box(html.closest('.widget-html'));
      if (t.width > 0 && outside(t, b)) {
        problems.push(`${name}: text '${html.textContent.trim().slice(0, 30)}' ${span(t)} spills out of ${span(b)}`);
      }
    }
  }
  // Targets: the header and a row per layer, 8 cells each, side by side without overlapping
  const grid = root.querySelector('.ae-targetspanel .widget-gridbox');
  const cells = grid ? [...grid.children] : [];
  if (cells.length === 0 || cells.length % 8) problems.push(`Targets holds ${cells.length} cells, not rows of 8`);
  for (let i = 0; i + 8 <= cells.length; i += 8) {
    count.rows += 1;
    const row = cells.slice(i, i + 8).map(box);
    for (let j = 0; j < 7; j++) {
      if (row[j].right > row[j + 1].left + 0.5 || row[j].width <= 0) {
        problems.push(`Targets '${cells[i].textContent.trim()}': column ${j + 1} ${span(row[j])} over ` +
                      `column ${j + 2} ${span(row[j + 1])}`);
      }
    }
  }
  return {problems, count, header: cells.slice(0, 8).map(c => c.textContent.trim())};
}"""


def _has_playwright() -> bool:
    import importlib.util

    return importlib.util.find_spec("playwright") is not None


@pytest.fixture(scope="module")
def ready(require):
    require(CHROMIUM.exists(), "/usr/bin/chromium is absent (apt-get install chromium)")
    require(_has_playwright(), "playwright is not installed (the test extra installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


def start(tmp_path_factory, what: str, *args: str):
    cwd = tmp_path_factory.mktemp(what)
    command = [sys.executable, "-m", "admm_explorer.cli", what, "--no-browser", "--port=0", *args]
    return server(command, cwd, cwd / f"{what}.log")


def layout_problems(page, rows: int) -> list[str]:
    """Every layout problem LAYOUT finds, and a problem too if it did not see the whole table (rows layers and
    the header) and the whole page (10 panels, a slider per row and 3 more, at least 20 fields)."""
    found = page.evaluate(LAYOUT, MIN_SLIDER)
    problems, count = list(found["problems"]), found["count"]
    if found["header"] != COLUMNS:
        problems.append(f"Targets' header is {found['header']}, not {COLUMNS}")
    if not (count["rows"] == rows + 1 and count["panels"] == 10 and count["sliders"] >= rows + 3
            and count["fields"] >= 20):
        problems.append(f"the check did not see the whole page: {count}")
    return problems


def lambda_shown(page) -> float:
    """The value the λ field shows (a small number: 0.00001 in a narrow box read 0.000); layout_problems
    measured its whole text against the box."""
    return float(page.locator(".ae-stagespanel").get_by_label("λ (reweighted)", exact=True).input_value())


def resnet20(page) -> None:
    """Setup: ResNet-20 on fake data (22 prunable layers, names up to layers.2.0.shortcut.0); Apply setup."""
    setup = page.locator(".ae-setuppanel")
    setup.get_by_label("Model", exact=True).select_option("resnet20")
    setup.get_by_label("Dataset", exact=True).select_option("fake")
    page.get_by_role("button", name="Apply setup", exact=True).click()
    page.locator(".ae-targetspanel", has_text="of 270,896 kept").wait_for(timeout=90_000)


def names_over_shapes(page) -> list[str]:
    """The layer names (their bold text's box, wrapped or not) that run into their row's Shape cell; all of
    them when the table does not hold the header and ResNet-20's 22 layers."""
    grid = page.locator(".ae-targetspanel .widget-gridbox")
    names = grid.locator(":scope > .widget-html:nth-child(8n+1) b")
    shapes = grid.locator(":scope > .widget-html:nth-child(8n+2)")
    if not names.count() == shapes.count() == 23:
        return [f"{names.count()} names and {shapes.count()} shapes, not 23 rows"]
    over = []
    for i in range(1, names.count()):
        name, shape = names.nth(i).bounding_box(), shapes.nth(i).bounding_box()
        if name["x"] + name["width"] > shape["x"] + 0.5:
            over.append(names.nth(i).inner_text())
    return over


def test_voila_at_1280(tmp_path_factory, ready):
    with start(tmp_path_factory, "dashboard") as url, chromium(1280, 2400) as page:
        page.goto(url)
        page.locator(".ae-targetspanel", has_text="71.2× fewer weights").wait_for(timeout=120_000)
        assert layout_problems(page, rows=4) == []  # LeNet-5, as a class first sees it
        assert lambda_shown(page) == DEFAULTS["lam"] < 1e-3
        resnet20(page)
        assert layout_problems(page, rows=22) == []
        assert names_over_shapes(page) == []
        page.screenshot(path=str(ARTIFACTS / "layout-1280.png"))
        # a wide screen keeps Setup, Targets and Stages side by side
        page.set_viewport_size({"width": 1920, "height": 2400})
        page.wait_for_function("() => { const [a, b, c] = ['setup', 'targets', 'stages'].map(n => "
                               "document.querySelector(`.ae-${n}panel`).getBoundingClientRect()); "
                               "return a.top === b.top && b.top === c.top && a.right <= b.left && b.right <= c.left; }",
                               timeout=10_000)
        assert layout_problems(page, rows=22) == []


def test_jupyterlab_at_1600_with_the_file_browser_open(tmp_path_factory, ready):
    with start(tmp_path_factory, "lab", "explorer") as url, chromium(1600, 2400) as page:
        assert "/lab/tree/explorer.ipynb?token=" in url
        page.goto(url)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
        browser = page.locator("#filebrowser")
        assert browser.is_visible() and browser.bounding_box()["width"] >= 200  # Lab 4 opens with it
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells").first.click()
        page.locator(".ae-targetspanel", has_text="71.2× fewer weights").wait_for(timeout=120_000)
        assert layout_problems(page, rows=4) == []
        assert lambda_shown(page) == DEFAULTS["lam"] < 1e-3
        resnet20(page)
        assert layout_problems(page, rows=22) == []
        assert names_over_shapes(page) == []
        assert browser.is_visible()
        page.screenshot(path=str(ARTIFACTS / "layout-lab-1600.png"))
