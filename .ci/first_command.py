"""CI, before the test suite: the README's first command as a newcomer runs it, checked in Chromium.

    python .ci/first_command.py PATH/TO/admm-explorer

`admm-explorer` comes from a venv holding only the ui extra (what the README's first command installs);
this script runs in another venv holding only Playwright. It starts the dashboard, waits for the Explorer,
presses Pretrain with a tiny budget and checks that the accuracy figure gained points: the kernel is live.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ui"))
from browser import chromium, points, pretrain_briefly, server  # noqa: E402


def main(executable: str) -> int:
    with tempfile.TemporaryDirectory(prefix="first-command-") as folder:
        log = Path(folder) / "dashboard.log"
        start = time.monotonic()
        try:
            with server([executable, "dashboard", "--no-browser", "--port=0"], Path(folder), log) as url, \
                    chromium(1280, 2000) as page:
                page.goto(url)
                page.get_by_role("button", name="Pretrain", exact=True).wait_for(state="visible", timeout=180_000)
                shown = time.monotonic() - start
                before = points(page, "accuracypanel")
                after = pretrain_briefly(page)
                assert sum(before) == 0 and after == [2, 2, 2, 2], f"accuracy points {before} -> {after}"
                print(f"first command: Explorer shown {shown:.1f} s after the command; Pretrain drew {after} "
                      f"points; {time.monotonic() - start:.1f} s in all")
        except Exception:
            print(f"first command FAILED; the dashboard's log:\n{log.read_text()[-5000:]}", file=sys.stderr)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
