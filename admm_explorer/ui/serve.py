"""`admm-explorer dashboard`: serve the Explorer notebook (package data) with Voila on 127.0.0.1."""
from __future__ import annotations

import os
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


def notebook() -> Path:
    """The served notebook, from the installed package (notebooks/explorer.ipynb in a checkout links to it)."""
    return Path(str(resources.files("admm_explorer") / "notebooks" / "explorer.ipynb"))


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def site(folder: Path) -> bool:
    """Fill `folder` with a link to the notebook and plotly's widget bundle (Voila serves no file linked from
    outside its root); False where that fails, and then the page works as plain Voila would serve it.

    Every FigureWidget otherwise carries the whole 5 MB bundle in its widget state (anywidget's _esm):
    25 MB for the Explorer's five figures, parsed five times by the browser, about 5 s of page load.
    """
    import plotly

    bundle = Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"
    try:
        (folder / "explorer.ipynb").symlink_to(notebook())
        try:
            os.link(bundle, folder / PLOTLY_JS)
        except OSError:
            shutil.copyfile(bundle, folder / PLOTLY_JS)
    except OSError:
        return False
    return True


def voila_command(port: int, page: Path) -> list[str]:
    return [sys.executable, "-m", "voila", str(page), "--no-browser", f"--port={port}",
            "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", f"--VoilaConfiguration.file_allowlist=['{PLOTLY_JS.replace('.', '[.]')}']",
            # the kernel imports torch and loads data before the page shows: give it time on a busy machine
            "--VoilaExecutor.timeout=300", "--VoilaExecutor.startup_timeout=120",
            "--VoilaConfiguration.show_tracebacks=False"]


def wait_listening(process: subprocess.Popen, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if port_taken(port):
            return True
        time.sleep(0.2)
    return False


def serve(port: int = 8866, open_browser: bool = True) -> int:
    """Run Voila until Ctrl-C; returns the exit status. Port 0 picks a free port."""
    try:
        import voila  # noqa: F401
    except ImportError:
        print("error: the dashboard needs the ui extra: pip install 'admm-explorer[ui]'", file=sys.stderr)
        return 2
    port = port or free_port()
    if port_taken(port):
        print(f"error: port {port} on 127.0.0.1 is in use; pick another with --port N (0 = any free port)",
              file=sys.stderr)
        return 2
    # relative paths typed in the page (checkpoints, exports, data) mean the folder the command ran in
    env = {**os.environ, "ADMM_EXPLORER_CWD": os.getcwd()}
    with tempfile.TemporaryDirectory(prefix="admm-explorer-") as folder:
        page = notebook()
        if site(Path(folder)):
            page = Path(folder) / "explorer.ipynb"
            env["ADMM_EXPLORER_PLOTLY_JS"] = f"voila/files/{PLOTLY_JS}"
        return run(subprocess.Popen(voila_command(port, page), env=env), port, open_browser)


def run(process: subprocess.Popen, port: int, open_browser: bool) -> int:
    previous = signal.signal(signal.SIGTERM, interrupt)  # being terminated is Ctrl-C: Voila must go too
    try:
        if not wait_listening(process, port, STARTUP_SECONDS):
            print("error: Voila did not start (see its messages above)", file=sys.stderr)
            return 1
        url = f"http://127.0.0.1:{port}/"
        print(f"ADMM explorer: {url}  (Ctrl-C to stop)", flush=True)
        if open_browser:
            webbrowser.open(url)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(process)


def interrupt(signum, frame):
    raise KeyboardInterrupt


def stop(process: subprocess.Popen) -> None:
    """End Voila and its kernels: SIGINT (Voila ignores SIGTERM while it serves), then kill if it hangs."""
    try:
        process.wait(3)  # after a Ctrl-C in the terminal Voila got the SIGINT too and is ending on its own
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
