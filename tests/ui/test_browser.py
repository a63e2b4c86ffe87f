"""The Voila app in Debian's Chromium: `admm-explorer dashboard`, then a user's clicks with tiny budgets.

Screenshots go to artifacts/ui/ (CI artifacts); docs/screenshots/ holds copies chosen for the README.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from browser import CHROMIUM, chromium, points, server, set_value as set_field, stage_status, wait_stage

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
INTERACTIVE_S = 20


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, require):
    """`admm-explorer dashboard --no-browser --port 0` in a scratch folder; yields its address (with token)."""
    require(CHROMIUM.exists(), "/usr/bin/chromium is absent (apt-get install chromium)")
    require(_has_playwright(), "playwright is not installed (the test extra installs it)")
    cwd = tmp_path_factory.mktemp("dashboard")
    command = [sys.executable, "-m", "admm_explorer.cli", "dashboard", "--no-browser", "--port=0"]
    with server(command, cwd, cwd / "voila.log") as url:
        yield {"url": url, "cwd": cwd}


def _has_playwright() -> bool:
    import importlib.util

    return importlib.util.find_spec("playwright") is not None


@pytest.fixture(scope="module")
def page(dashboard):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as page:
        start = time.monotonic()
        page.goto(dashboard["url"])
        page.get_by_role("button", name="Run ADMM").wait_for(state="visible", timeout=120_000)
        page.interactive_s = time.monotonic() - start
        yield page


def set_value(page, panel: str, label: str, value) -> None:
    set_field(page.locator(f".ae-{panel}"), label, value)


def click(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()


def test_interactive_quickly(page):
    print(f"page interactive {page.interactive_s:.1f} s after loading it")
    assert page.interactive_s < INTERACTIVE_S, f"interactive after {page.interactive_s:.1f} s"
    page.screenshot(path=str(ARTIFACTS / "01-start.png"))
    assert "71.2× fewer weights" in page.locator(".ae-targetspanel").inner_text()


def test_pretrain_admm_retrain_purify(page):
    # the 1,000 held-out sample digits test faster than the 10,000 of MNIST: a new setup without them
    set_value(page, "setuppanel", "Test set folder", "")
    click(page, "Apply setup")
    page.locator(".ae-setuppanel", has_text="held-out digits").wait_for(timeout=60_000)
    for label, value in (("Pretrain epochs", 0.3), ("ADMM epochs", 0.4), ("Z/U every", 0.1),
                         ("Retrain epochs", 0.2), ("Evaluate every", 0.1)):
        set_value(page, "stagespanel", label, value)
    set_value(page, "purifypanel", "Retrain epochs", 0.1)
    click(page, "Pretrain")
    wait_stage(page, "pretrain")
    assert points(page, "accuracypanel") == [3, 3, 3, 3]  # train/test accuracy and loss every 0.1 epoch

    click(page, "Run ADMM")
    wait_stage(page, "admm")
    # a round every 0.1 epoch: 4 layers x primal, dual; rho (lines, no markers); mask flips
    assert points(page, "residualspanel") == [4] * 8 + [0] * 4 + [4] * 4
    bars = page.locator(".ae-histogrampanel .barlayer .trace path")
    assert bars.count() > 10
    assert points(page, "accuracypanel") == [7] * 4
    page.screenshot(path=str(ARTIFACTS / "02-admm.png"))

    click(page, "Retrain")
    wait_stage(page, "retrain")
    assert "71.2× fewer weights" in stage_status(page)

    click(page, "Purify (P-RM)")
    wait_stage(page, "purify")
    row = page.locator(".ae-purifypanel tr", has_text="parameters").locator("td").all_inner_texts()
    before, after = (int(cell.replace(",", "")) for cell in row[1:3])
    assert after < before  # the network shrank
    # every panel describes the shrunk network: Setup's weights, Targets' rows and its total (untargeted: the
    # compression the stage reached, against the dense network)
    assert "shrunk by P-RM from 430,500" in page.locator(".ae-setuppanel").inner_text()
    targets = page.locator(".ae-targetspanel").inner_text()
    compression = re.search(r"([\d.]+)× fewer weights", stage_status(page)).group(1)
    assert f"{compression}× fewer weights" in targets and "430,500 before P-RM" in targets
    assert "500×800" not in targets  # fc1's row shows its shrunk shape
    page.screenshot(path=str(ARTIFACTS / "03-purified.png"))


def test_a_reload_reopens_the_run_with_its_curves(page):
    """The run of the test above is a folder on disk: after a reload the Runs panel lists it, and Open brings
    back its curves, its stage status and its P-RM table."""
    accuracy = points(page, "accuracypanel")
    status = stage_status(page)
    page.reload()
    page.get_by_role("button", name="Run ADMM").wait_for(state="visible", timeout=120_000)
    runs = page.locator(".ae-runspanel")
    runs.get_by_role("cell", name="pretrain → admm → retrain → purify", exact=True).wait_for(timeout=30_000)
    assert not any(points(page, "accuracypanel"))  # a new session: nothing plotted
    click(page, "Open and continue")
    page.locator(".ae-purifypanel tr", has_text="parameters").wait_for(timeout=60_000)
    assert drawn(page, "accuracypanel", lambda p: p == accuracy) == accuracy
    assert stage_status(page) == status
    page.screenshot(path=str(ARTIFACTS / "03b-reopened.png"))


def drawn(page, panel: str, ready, timeout: float = 60) -> list[int]:
    """points() of a panel's figure once `ready(points)` holds (plotly draws after the widgets appear)."""
    deadline = time.monotonic() + timeout
    while not ready(found := points(page, panel)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return found


def test_a_new_setup_starts_clean_and_purify_needs_pruning(page):
    click(page, "Apply setup")
    page.locator(".ae-purifypanel", has_text="not purified yet").wait_for(timeout=60_000)
    assert "idle" in stage_status(page)
    targets = page.locator(".ae-sparsitypanel .barlayer .trace").first.locator("path")
    assert targets.count() == 4  # the target bars are drawn for the new session at once
    click(page, "Purify (P-RM)")
    error = page.locator(".ae-error").first
    error.wait_for(timeout=30_000)
    assert "nothing is pruned before it" in error.inner_text()
    assert page.locator(".ae-purifypanel", has_text="not purified yet").count() == 1
    click(page, "Dismiss")
    error.wait_for(state="detached", timeout=10_000)


def test_stop_registers_while_training(page):
    set_value(page, "stagespanel", "Pretrain epochs", 20)
    click(page, "Pretrain")
    deadline = time.monotonic() + 60
    while "batch" not in stage_status(page):
        assert time.monotonic() < deadline, stage_status(page)
        time.sleep(0.1)
    before = drawn(page, "accuracypanel", any)  # an evaluation plotted, then Stop
    click(page, "Stop")
    text = wait_stage(page, "pretrain", "stopped", timeout=30)
    assert "stopped" in text
    after = points(page, "accuracypanel")
    assert after[0] >= before[0]  # what was plotted stays
    page.screenshot(path=str(ARTIFACTS / "04-stopped.png"))


def test_errors_show_as_one_readable_line(page):
    page.locator(".ae-setuppanel").get_by_role("button", name="checkpoint", exact=True).click()
    set_value(page, "setuppanel", "Checkpoint", "no/such/stage.pt")
    click(page, "Apply setup")
    error = page.locator(".ae-error").first
    error.wait_for(timeout=30_000)
    assert "does not exist" in error.inner_text()
    assert "Traceback" not in page.locator("body").inner_text()
    page.screenshot(path=str(ARTIFACTS / "05-error.png"))
    click(page, "Dismiss")
    page.locator(".ae-error").first.wait_for(state="detached", timeout=10_000)


def test_typed_text_is_shown_not_run(page, dashboard):
    attack = "<img src=x onerror=\"document.title='pwned'\">"
    set_value(page, "exportpanel", "Folder", attack)
    click(page, "Save recipe")
    panel = page.locator(".ae-exportpanel")
    panel.get_by_text("wrote ").wait_for(timeout=30_000)
    assert attack in panel.inner_text() and panel.locator("img").count() == 0
    assert page.title() != "pwned"
    assert any((dashboard["cwd"] / attack).glob("*-recipe.yaml"))
    set_value(page, "exportpanel", "Folder", "../escaped")
    click(page, "Save recipe")
    error = page.locator(".ae-error").first
    error.wait_for(timeout=30_000)
    assert "outside the dashboard's folder" in error.inner_text()
    assert not (dashboard["cwd"].parent / "escaped").exists()
    click(page, "Dismiss")


def test_a_bad_number_shows_under_its_field(page):
    page.locator(".ae-setuppanel").get_by_role("button", name="random", exact=True).click()
    set_value(page, "setuppanel", "Batch size", 0)
    click(page, "Apply setup")
    note = page.locator(".ae-setuppanel .ae-field-error")
    note.wait_for(timeout=30_000)
    assert "batch_size = 0: Input should be greater than or equal to 1" in note.inner_text()
    field = page.locator(".ae-setuppanel").get_by_label("Batch size", exact=True).bounding_box()
    box = note.bounding_box()
    assert 0 <= box["y"] - (field["y"] + field["height"]) < 30  # right under the field
    page.screenshot(path=str(ARTIFACTS / "06-field-error.png"))
    click(page, "Dismiss")
    set_value(page, "setuppanel", "Batch size", 64)
    click(page, "Apply setup")
    note.wait_for(state="detached", timeout=30_000)


def written_run(runs: Path, stages: list[str], timeout: float = 30) -> dict:
    """The run under `runs` whose state.json lists `stages`. The page reports a stage's end when the engine
    emits it, a moment before the run folder writes its state, so this waits for the file."""
    from admm_explorer.engine.run import list_runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in list_runs(runs) if r["stages"] == stages]
        if found:
            return found[0]
        time.sleep(0.25)
    raise AssertionError(f"no run under {runs} lists {stages}: {[r['stages'] for r in list_runs(runs)]}")


def test_magnitude_beside_admm_from_the_same_pretrain(page, dashboard):
    """Pretrain -> Run ADMM -> Retrain; Branch after the pretrain; Magnitude: Runs compares the pipelines."""
    for label, value in (("Pretrain epochs", 0.3), ("ADMM epochs", 0.4), ("Z/U every", 0.1),
                         ("Retrain epochs", 0.2), ("Evaluate every", 0.1)):
        set_value(page, "stagespanel", label, value)
    for name in ("Pretrain", "Run ADMM", "Retrain"):
        click(page, name)
        wait_stage(page, {"Run ADMM": "admm"}.get(name, name.lower()))
    runs = page.locator(".ae-runspanel")
    admm = written_run(dashboard["cwd"] / "runs", ["pretrain", "admm", "retrain"])
    runs.get_by_label("Run", exact=True).select_option(label=admm["name"])
    runs.get_by_label("Branch after", exact=True).select_option(label="0 pretrain")
    click(page, "Branch")
    click(page, "Magnitude")
    wait_stage(page, "magnitude")
    branch = written_run(dashboard["cwd"] / "runs", ["pretrain", "magnitude"])
    runs.get_by_label("Run A", exact=True).select_option(label=admm["name"])
    runs.get_by_label("Run B", exact=True).select_option(label=branch["name"])
    runs.get_by_text("pretrain → admm → retrain vs B: pretrain → magnitude").wait_for(timeout=30_000)
    curves = drawn(page, "runspanel", lambda p: len(p) == 2 and all(p))
    assert curves[0] == curves[1]  # the same evaluations: one budget
    assert runs.locator(".barlayer .trace").count() == 2  # each pipeline's final weights
    page.screenshot(path=str(ARTIFACTS / "07-magnitude-vs-admm.png"))
