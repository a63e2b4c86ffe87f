"""`admm-explorer dashboard` (the Explorer served by Voila) and `admm-explorer lab` (JupyterLab on the course).

Both servers listen on 127.0.0.1 only, require a random token (printed in the address), and refuse
requests whose Host header is not a loopback name, so no other web page can drive them.
"""
from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser
from contextlib import closing
from importlib import resources
from pathlib import Path

STARTUP_SECONDS = 60
PLOTLY_JS = "plotly-widget.js"  # plotly's widget bundle, served once beside the notebook (see figures.py)
# a kernel left by a closed or reloaded page (its websocket gone) is shut down after this idle time
CULL_IDLE_SECONDS = 600
MAX_KERNELS = 4  # open dashboard pages at once, each a kernel of about 1 GB


def package_notebooks() -> Path:
    """The notebooks shipped inside the package (notebooks/ in a checkout links to them)."""
    return Path(str(resources.files("admm_explorer") / "notebooks"))


def notebook() -> Path:
    return package_notebooks() / "explorer.ipynb"


def pages() -> list[str]:
    """The shipped notebooks by name: explorer and the course, 01-admm-from-scratch ... 05-reweighted-admm."""
    return sorted(p.stem for p in package_notebooks().glob("*.ipynb"))


def page_file(name: str) -> tuple[str, str | None]:
    """(the notebook file a page name means, None) or (name, a one-line error). A course notebook may be named by
    its number ("01"), its name, or its file name or path (notebooks/01-admm-from-scratch.ipynb)."""
    key = Path(name).name.removesuffix(".ipynb")
    matches = [page for page in pages() if page == key or page.startswith(f"{key}-")]
    if len(matches) == 1:
        return f"{matches[0]}.ipynb", None
    return name, f"no notebook {name!r} ships with admm_explorer; pages: {', '.join(pages())}"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def missing_kernel() -> str | None:
    """A one-line reason why no Python kernel can start here, or None (Voila would answer HTTP 500)."""
    for name in ("ipykernel", "voila", "jupyterlab", "plotly"):
        if importlib.util.find_spec(name) is None:  # found, not imported: importing voila alone takes 2 s
            return (f"{name} is not installed in {sys.prefix}; the dashboard and JupyterLab need the ui extra: "
                    "pip install -e '.[ui]' (or pip install 'admm-explorer[ui]')")
    return None


def site(folder: Path) -> None:
    """Fill `folder` with the shipped notebooks (the Explorer and the course, which link to each other) and
    plotly's widget bundle. Copies: Voila serves no file linked from outside its root.

    Every FigureWidget otherwise carries the whole 5 MB bundle in its widget state (anywidget's _esm):
    25 MB for the Explorer's five figures, parsed five times by the browser, about 5 s of page load.
    """
    import plotly

    for source in package_notebooks().glob("*.ipynb"):
        shutil.copyfile(source, folder / source.name)
    bundle = Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"
    try:
        os.link(bundle, folder / PLOTLY_JS)
    except OSError:
        shutil.copyfile(bundle, folder / PLOTLY_JS)


def voila_command(port: int, folder: Path, token: str, max_kernels: int = MAX_KERNELS,
                  cull_idle: int = CULL_IDLE_SECONDS) -> list[str]:
    # a folder: every notebook in it is a page at voila/render/NAME.ipynb (the Explain links open the course)
    return [sys.executable, "-m", "admm_explorer.ui.voila_app", str(folder), "--no-browser", f"--port={port}",
            "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", f"--Voila.token={token}",
            f"--VoilaConfiguration.file_allowlist={PLOTLY_JS.replace('.', '[.]')}",
            # the kernel imports torch and loads data before the page shows: give it time on a busy machine
            "--VoilaExecutor.timeout=300", "--VoilaExecutor.startup_timeout=120",
            "--VoilaConfiguration.show_tracebacks=False",
            f"--Dashboard.max_kernels={max_kernels}", f"--MappingKernelManager.cull_idle_timeout={cull_idle}",
            f"--MappingKernelManager.cull_interval={max(1, min(60, cull_idle // 2))}"]


def lab_command(port: int, folder: Path, token: str) -> list[str]:
    # as root (containers, CI) JupyterLab refuses to start unless told; the token and loopback still apply
    root = ["--ServerApp.allow_root=True"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
            "--ServerApp.allow_remote_access=False", *root]


def lab_folder() -> Path:
    """The course folder JupyterLab opens: notebooks/ of the checkout this package runs from; for an installed
    package, a copy of its notebooks in ./admm-explorer-notebooks (files already there are kept)."""
    checkout = Path(__file__).resolve().parents[2] / "notebooks"
    if checkout.is_dir():
        return checkout
    folder = Path.cwd() / "admm-explorer-notebooks"
    folder.mkdir(exist_ok=True)
    for source in package_notebooks().glob("*.ipynb"):
        if not (folder / source.name).exists():
            shutil.copyfile(source, folder / source.name)
    return folder


def preflight(port: int) -> tuple[int, str | None]:
    """(the port to use, an error line or None) before anything starts. Port 0 picks a free port."""
    reason = missing_kernel()
    if reason:
        return port, reason
    port = port or free_port()
    if port_taken(port):
        return port, f"port {port} on 127.0.0.1 is in use; pick another with --port N (0 = any free port)"
    return port, None


def new_token(use_token: bool) -> str:
    if use_token:
        return secrets.token_hex(24)
    print("warning: --no-token: any program or web page that can reach 127.0.0.1 on this machine can drive "
          "this server", file=sys.stderr)
    return ""


def address(port: int, path: str, token: str) -> str:
    return f"http://127.0.0.1:{port}/{path}" + (f"?token={token}" if token else "")


def serve(port: int = 8866, open_browser: bool = True, use_token: bool = True, root: Path | None = None,
          max_kernels: int = MAX_KERNELS, cull_idle: int = CULL_IDLE_SECONDS, page: str = "explorer") -> int:
    """Run the dashboard until Ctrl-C; returns the exit status. It opens on `page` (the Explorer, or a course
    notebook for students: "01"); every shipped notebook is served. Paths typed in the page stay inside `root`
    (default: the current folder)."""
    port, error = preflight(port)
    name, page_error = page_file(page)
    error = error or page_error
    if error is None and root is not None and not root.is_dir():
        error = f"--root {root} is not a folder"
    if error is None and (max_kernels < 1 or cull_idle < 1):
        error = "--max-kernels and --cull-idle must be at least 1"
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    token = new_token(use_token)
    # relative paths typed in the page (checkpoints, exports, data) mean the folder the command ran in
    env = {**os.environ, "ADMM_EXPLORER_CWD": os.getcwd(), "ADMM_EXPLORER_ROOT": str((root or Path.cwd()).resolve()),
           "ADMM_EXPLORER_PLOTLY_JS": f"/voila/files/{PLOTLY_JS}"}
    with tempfile.TemporaryDirectory(prefix="admm-explorer-") as folder:
        try:
            site(Path(folder))
        except OSError as e:
            print(f"error: cannot lay out the pages in {folder}: {e.strerror or e}", file=sys.stderr)
            return 2
        process = subprocess.Popen(voila_command(port, Path(folder), token, max_kernels, cull_idle), env=env)
        return run(process, port, address(port, f"voila/render/{name}", token), open_browser, "ADMM explorer")


def lab(port: int = 8888, open_browser: bool = True, use_token: bool = True, page: str = "01") -> int:
    """Run JupyterLab on the course folder until Ctrl-C, opened on `page` (the course's first lesson by default);
    returns the exit status."""
    port, error = preflight(port)
    name, page_error = page_file(page)
    error = error or page_error
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    token = new_token(use_token)
    folder = lab_folder()
    process = subprocess.Popen(lab_command(port, folder, token), env={**os.environ, "ADMM_EXPLORER_CWD": os.getcwd()})
    return run(process, port, address(port, f"lab/tree/{name}", token), open_browser, f"JupyterLab on {folder}")


def run(process: subprocess.Popen, port: int, url: str, open_browser: bool, what: str) -> int:
    previous = signal.signal(signal.SIGTERM, interrupt)  # being terminated is Ctrl-C: the server must go too
    try:
        if not wait_listening(process, port, STARTUP_SECONDS):
            print("error: the server did not start (see its messages above)", file=sys.stderr)
            return 1
        print(f"{what}: {url}  (Ctrl-C to stop)", flush=True)
        if open_browser:
            webbrowser.open(url)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(process)


def wait_listening(process: subprocess.Popen, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if port_taken(port):
            return True
        time.sleep(0.1)
    return False


def interrupt(signum, frame):
    raise KeyboardInterrupt


def stop(process: subprocess.Popen) -> None:
    """End the server and its kernels: SIGINT (Voila ignores SIGTERM while it serves), then kill if it hangs."""
    try:
        process.wait(3)  # after a Ctrl-C in the terminal the server got the SIGINT too and is ending on its own
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
