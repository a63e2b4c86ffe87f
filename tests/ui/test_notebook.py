"""The Voila app's notebook and the `admm-explorer dashboard` command around it: token, Host check, kernel."""
from __future__ import annotations

import importlib.util
import os
import re
import socket
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
from browser import ADDRESS, server
from nbclient import NotebookClient

from admm_explorer.ui.serve import notebook, package_notebooks, page_file, serve

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


def test_repo_notebooks_are_relative_links_to_the_package_data():
    shipped = sorted(package_notebooks().glob("*.ipynb"))
    assert notebook() in shipped and len(shipped) == 6  # the Explorer and the five lessons
    for path in shipped:
        link = REPO / "notebooks" / path.name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == path.resolve()


def test_a_page_is_named_by_number_name_or_path(capsys):
    for name in ("01", "01-admm-from-scratch", "notebooks/01-admm-from-scratch.ipynb"):
        assert page_file(name) == ("01-admm-from-scratch.ipynb", None)
    assert page_file("explorer") == ("explorer.ipynb", None)
    name, error = page_file("0")  # a prefix of all five lessons is no name
    assert error and "pages: 01-admm-from-scratch, 02-pruning-lenet5" in error
    assert serve(port=0, open_browser=False, page="07") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no notebook '07' ships with admm_explorer") and len(err.splitlines()) == 1


def test_dashboard_refuses_a_port_in_use(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert serve(port=s.getsockname()[1], open_browser=False) == 2
    assert "is in use" in capsys.readouterr().err


def test_dashboard_names_a_missing_kernel_before_starting(monkeypatch, capsys):
    # the ui extra installs ipykernel; a venv without it got HTTP 500 "No Jupyter kernel" from Voila
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipykernel" else real(name, *a))
    assert serve(port=0, open_browser=False) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ipykernel is not installed") and "pip install -e '.[ui]'" in err
    assert len(err.splitlines()) == 1


def test_ui_extra_holds_what_the_servers_need_at_run_time():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", requirement)[0] for requirement in extras["ui"]}
    assert {"voila", "ipykernel", "jupyterlab", "ipywidgets", "plotly", "anywidget"} <= names


def http_status(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        return opener.open(request, timeout=120).status
    except urllib.error.HTTPError as e:
        return e.code


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_dashboard_needs_its_token_and_a_loopback_host(tmp_path):
    command = [sys.executable, "-m", "admm_explorer.cli", "dashboard", "--no-browser", "--port=0"]
    with server(command, tmp_path, tmp_path / "voila.log") as url:
        port = int(ADDRESS.search(url).group(1))
        token = url.split("?token=")[1]
        assert re.fullmatch(r"[0-9a-f]{48}", token)
        plain = f"http://127.0.0.1:{port}/"
        assert http_status(plain) == 302  # to the login page: no kernel starts without the token
        assert http_status(plain + "api/kernels/00000000-0000-0000-0000-000000000000") == 403
        assert http_status(f"{plain}?token={'0' * 48}") == 302
        # a DNS-rebinding page reaches 127.0.0.1 under its own name: refused before the token is looked at
        assert http_status(url, host=f"evil.example:{port}") == 403
        assert http_status(url, host=f"localhost:{port}") == 200
    assert "Kernel started" in (tmp_path / "voila.log").read_text()  # the one request with a token
    assert (tmp_path / "voila.log").read_text().count("Kernel started") == 1


def test_no_token_is_explicit_and_warned(tmp_path):
    command = [sys.executable, "-m", "admm_explorer.cli", "dashboard", "--no-browser", "--port=0", "--no-token"]
    with server(command, tmp_path, tmp_path / "voila.log") as url:
        assert "token" not in url
        assert http_status(url, host="evil.example") == 403  # the Host check stays
    assert "warning: --no-token" in (tmp_path / "voila.log").read_text()


def test_lab_opens_the_checkout_notebooks_or_a_copy_of_the_packaged_ones(tmp_path, monkeypatch):
    from admm_explorer.ui import serve as serve_module

    assert serve_module.lab_folder() == REPO / "notebooks"  # a checkout (pip install -e)
    monkeypatch.setattr(serve_module, "__file__", str(tmp_path / "site-packages" / "admm_explorer" / "ui" / "serve.py"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "admm-explorer-notebooks").mkdir()
    (tmp_path / "admm-explorer-notebooks" / "explorer.ipynb").write_text("mine")
    folder = serve_module.lab_folder()
    assert folder == tmp_path / "admm-explorer-notebooks"
    assert (folder / "explorer.ipynb").read_text() == "mine"  # a user's edited copy is kept
    shipped = {p.name for p in serve_module.package_notebooks().glob("*.ipynb")}
    assert shipped and {p.name for p in folder.glob("*.ipynb")} == shipped


def kernel_page(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=180) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_kernels_are_capped_and_a_closed_pages_kernel_is_culled(tmp_path):
    command = [sys.executable, "-m", "admm_explorer.cli", "dashboard", "--no-browser", "--port=0",
               "--max-kernels=1", "--cull-idle=3"]
    with server(command, tmp_path, tmp_path / "voila.log") as url:
        assert kernel_page(url)[0] == 200  # a page without its JavaScript: the kernel is never connected
        status, text = kernel_page(url)
        assert status == 503 and "already runs 1 sessions" in text and "--max-kernels" in text
        deadline = time.monotonic() + 60
        while kernel_page(url)[0] == 503:  # until the idle kernel is culled and shut down: room again
            assert time.monotonic() < deadline, "the idle kernel was not culled"
            time.sleep(1)
    log = (tmp_path / "voila.log").read_text()
    assert "Culling kernel" in log and log.count("Kernel started") == 2


def test_dashboard_refuses_a_bad_root(capsys, tmp_path):
    assert serve(port=0, open_browser=False, root=tmp_path / "missing") == 2
    assert capsys.readouterr().err.strip() == f"error: --root {tmp_path / 'missing'} is not a folder"
