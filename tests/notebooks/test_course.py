"""The course in notebooks/: every notebook runs top to bottom and asserts its own lesson.

Each notebook reads ADMM_EXPLORER_QUICK=1 as "small settings" (fewer epochs, smaller sweeps); the lesson
cells (`assert ...`, written for students to read) and the hidden solution cells run in either setting.
The notebooks may use only the public API: an API change that breaks a lesson fails here.
"""
from __future__ import annotations

import ast
import importlib
import importlib.metadata as metadata
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from packaging.requirements import Requirement

from admm_explorer.ui.serve import package_notebooks

COURSE = sorted(package_notebooks().glob("0*.ipynb"))
QUICK_SECONDS = 90  # each notebook's small setting on 2 busy CPU cores (about half of it when the machine is quiet)
# what a notebook may import from the package: the documented modules (docs/api.md), names in their __all__
PUBLIC = ["admm_explorer.admm", "admm_explorer.admm.storage", "admm_explorer.data", "admm_explorer.models",
          "admm_explorer.prm", "admm_explorer.ui", "admm_explorer.engine", "admm_explorer.recipe"]
TITLES = ["01-admm-from-scratch", "02-pruning-lenet5", "03-progressive-and-quantization",
          "04-structured-pruning-and-prm", "05-reweighted-admm"]


def test_the_course_has_its_five_notebooks_in_the_package_and_in_notebooks():
    assert [p.stem for p in COURSE] == TITLES
    checkout = Path(__file__).resolve().parents[2] / "notebooks"
    for path in COURSE:
        assert (checkout / path.name).resolve() == path.resolve(), f"notebooks/{path.name} must link to the package's"


def imports(code: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every `import`/`from ... import` of admm_explorer in the code cells."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("admm_explorer"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("admm_explorer")]
    return found


def installed_by(project: str, extra: str) -> set[str]:
    """Every distribution `pip install project[extra]` brings, read from the installed metadata."""
    seen, todo = set(), [(project, (extra,))]
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras):
                todo.append((requirement.name, tuple(requirement.extras) or ("",)))
    return seen


def test_the_notebooks_need_nothing_beyond_the_ui_extra():
    """A student has `pip install -e '.[ui]'`, not the test extra: every module a lesson imports comes with it."""
    available = installed_by("admm-explorer", "ui")
    owners = metadata.packages_distributions()
    for path in COURSE:
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and not c.source.startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for module in (n.split(".")[0] for n in names):
                if module in sys.stdlib_module_names:
                    continue
                dists = {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(module, [])}
                assert dists & available, f"{path.name} imports {module}, which `pip install '.[ui]'` does not bring"


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem[:2])
def test_each_notebook_is_a_lesson_a_teacher_can_hand_out(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = nb.cells
    opening = cells[0].source
    assert cells[0].cell_type == "markdown" and opening.startswith("# "), "a title first"
    assert "What you will see" in opening and "CPU" in opening and "ADMM_EXPLORER_QUICK" not in opening
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert "ADMM_EXPLORER_QUICK" in code, "the small setting the tests use"
    assert "assert " in code, "a lesson the notebook checks"
    assert not any(c.get("outputs") for c in cells if c.cell_type == "code"), "shipped without outputs"
    assert "FigureWidget(" not in code and ".show()" not in code, "figures via admm_explorer.ui.figure_widget"
    exercises = [c for c in cells if c.cell_type == "markdown" and c.source.lstrip("# ").startswith("Exercise")]
    solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
    assert len(exercises) >= 2 and len(solutions) >= len(exercises), "exercises, each with a solution cell"
    for cell in solutions:
        assert cell.cell_type == "code" and cell.metadata.get("jupyter", {}).get("source_hidden"), \
            "solutions are hidden until the teacher reveals them"
    for module, names in imports(code):
        assert module in PUBLIC, f"{path.name} imports {module}, which is not public API"
        public = getattr(importlib.import_module(module), "__all__", None)
        for name in names:
            assert public is None or name in public, f"{path.name} imports {module}.{name}, not in its __all__"


@pytest.mark.slow
@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem[:2])
def test_each_notebook_runs_top_to_bottom_and_its_lesson_holds(path, tmp_path, monkeypatch):
    monkeypatch.setenv("ADMM_EXPLORER_QUICK", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    start = time.monotonic()
    client.execute()  # CellExecutionError names the cell and the failed assertion
    seconds = time.monotonic() - start
    assert seconds < QUICK_SECONDS, f"{path.name} took {seconds:.0f} s in its small setting"
