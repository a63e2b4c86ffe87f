"""The Voila app's notebook and the `admm-explorer dashboard` command around it."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from admm_explorer.ui.serve import notebook, serve

REPO = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_notebook_shows_the_explorer_without_training(tmp_path):
    nb = nbformat.read(notebook(), as_version=4)
    assert len(nb.cells) == 1 and len(nb.cells[0].source.splitlines()) <= 4
    # after the app's cell: find the Explorer it built and count the stages it ran
    nb.cells.append(nbformat.v4.new_code_cell(
        "import gc\nfrom admm_explorer.ui import Explorer\n"
        "(explorer,) = [o for o in gc.get_objects() if isinstance(o, Explorer)]\n"
        "print(len(explorer.runs.runs), explorer.controller.busy, len(explorer.targets.rows))"))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert any(WIDGET_VIEW in out.get("data", {}) for out in nb.cells[0].outputs)
    assert nb.cells[1].outputs[0]["text"].split() == ["0", "False", "4"]


def test_repo_notebook_is_a_relative_link_to_the_package_data():
    link = REPO / "notebooks" / "explorer.ipynb"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == notebook().resolve()


def test_dashboard_refuses_a_port_in_use(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert serve(port=s.getsockname()[1], open_browser=False) == 2
    assert "is in use" in capsys.readouterr().err
