from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from admm_explorer.ui import Explorer

sys.path.insert(0, str(Path(__file__).parent))  # browser.py, shared with .ci/first_command.py

# tiny budgets: 3,500 sample digits (500 more are the validation set) in batches of 64 = 55 batches an epoch;
# evaluations on the 1,000 held-out digits
TINY = dict(pretrain_epochs=0.2, admm_epochs=0.4, update_every=0.1, retrain_epochs=0.2, eval_every=0.1)


class Recorder:
    """Every event the panels saw, in order (a panel-like subscriber of the controller)."""

    def __init__(self, explorer: Explorer):
        self.events = []
        explorer.controller.subscribe(self)

    def on_event(self, event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def of(self, kind: str) -> list:
        return [e for e in self.events if e.kind == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.of(kind)) < count:
            assert time.monotonic() < deadline, f"no {count} {kind} events within {timeout} s"
            time.sleep(0.01)


def run_stage(explorer: Explorer, button) -> None:
    """Click a stage button and wait for the stage's worker to end; no error may have been shown."""
    button.click()
    assert explorer.controller.wait(timeout=120)
    errors = [m.text for m in explorer.notices.messages]
    assert not errors, errors


@pytest.fixture
def explorer(tmp_path_factory) -> Explorer:
    return Explorer(test_root=None, batch_size=64, stages=TINY, purify_retrain_epochs=0.1,
                    runs=tmp_path_factory.mktemp("runs"))


@pytest.fixture
def recorder(explorer) -> Recorder:
    return Recorder(explorer)


@pytest.fixture
def finish():
    return run_stage
