"""Run folders survive what happens to files: moves and copies, a second writer, a non-empty --out, a failed
write (a full disk), a line of metrics.jsonl cut by a kill."""
from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from admm_explorer.engine import BatchEnded, run_recipe
from admm_explorer.engine.run import locked
from admm_explorer.errors import RecipeError, WriteFailed
from admm_explorer.recipe import parse_recipe

STAGES = [{"kind": "pretrain", "epochs": 0.2, "eval_every": 0.1}, {"kind": "pretrain", "epochs": 0.1}]


def recipe():
    return parse_recipe({"device": "cpu", "seed": 1, "stages": STAGES})


def stopped_run(out):
    """A run stopped in its second stage: stage 0's checkpoint is written, stage 1 is not finished."""
    holder = {}

    def stop(event):
        if isinstance(event, BatchEnded) and event.stage == 1 and event.step == 3:
            holder["session"].stop()

    summary = run_recipe(recipe(), out=out, subscribers=(stop,), on_session=lambda s: holder.__setitem__("session", s))
    assert summary["status"] == "stopped"
    return out


def events(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def comparable(out):
    return [{k: v for k, v in e.items() if k not in ("time", "seconds", "checkpoint", "run_dir")}
            for e in events(out) if e["kind"] in ("evaluation_done", "stage_ended")]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    run_recipe(recipe(), out=out)
    return out


def test_a_moved_or_copied_run_resumes_from_its_own_files(tmp_path, monkeypatch, full):
    original = stopped_run(tmp_path / "original")
    state = json.loads((original / "state.json").read_text())
    assert state["stages"][0]["checkpoint"] == "checkpoints/stage0-pretrain.pt"  # relative to the run folder
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # the copy must not need anything of the original
    monkeypatch.chdir(tmp_path / "elsewhere")  # and resume from another working directory
    summary = run_recipe(None, resume="copy")
    assert summary["status"] == "finished"
    assert comparable(copy) == comparable(full)


def test_a_second_writer_is_refused_and_a_stale_lock_is_not(tmp_path):
    out = stopped_run(tmp_path / "run")
    with locked(out):  # another writer holds the run (an OS lock, as another process would)
        with pytest.raises(RecipeError, match=r"is being written by admm-explorer \(pid \d+\)"):
            run_recipe(None, resume=out)
        cli = subprocess.run([sys.executable, "-m", "admm_explorer.cli", "run", "--resume", str(out), "--quiet"],
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "is being written by" in cli.stderr
    assert (out / ".lock").exists()  # left behind, as after a kill: it does not block
    before = events(out)
    assert run_recipe(None, resume=out)["status"] == "finished"
    assert len(events(out)) > len(before)


def test_out_must_be_empty_or_new(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "model.pt").write_text("someone's file")
    with pytest.raises(RecipeError, match="is not empty and holds no run"):
        run_recipe(recipe(), out=out)
    assert [p.name for p in out.iterdir()] == ["model.pt"] and (out / "model.pt").read_text() == "someone's file"


def test_a_failed_write_says_which_file_keeps_the_run_and_resumes(tmp_path, full, monkeypatch):
    import admm_explorer.engine.checkpoints as checkpoints

    real_save = checkpoints.torch.save

    def disk_full(obj, path):
        path.write_bytes(b"partial")  # what a full disk leaves: part of the temporary file
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 104192 vs 104088")

    monkeypatch.setattr(checkpoints.torch, "save", disk_full)
    monkeypatch.setattr("admm_explorer.files.shutil.disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))  # 1 kB left
    out = tmp_path / "run"
    with pytest.raises(WriteFailed) as failure:
        run_recipe(recipe(), out=out)
    assert str(failure.value) == (f"could not write {out / 'checkpoints' / 'stage0-pretrain.pt'}: the disk is full "
                                  "(it needs about 1.72 MB; 0.0 MB free)")
    assert list((out / "checkpoints").iterdir()) == []  # no temporary file keeps the disk full
    assert json.loads((out / "state.json").read_text())["status"] == "stopped"
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert run_recipe(None, resume=out)["status"] == "finished"
    assert comparable(out) == comparable(full)


def test_a_real_write_limit_gives_one_line_and_a_resumable_run(tmp_path):
    (tmp_path / "r.yaml").write_text(json.dumps({"device": "cpu", "seed": 1, "stages": STAGES}))

    def small_files():  # files over 600 kB cannot be written: the checkpoint (1.7 MB) fails as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))

    command = [sys.executable, "-m", "admm_explorer.cli", "run"]
    cut = subprocess.run(command + ["r.yaml", "--out", "o", "--quiet"], cwd=tmp_path, capture_output=True,
                         text=True, preexec_fn=small_files, timeout=300)
    lines = cut.stderr.strip().splitlines()
    assert cut.returncode == 1 and len(lines) == 2, cut.stderr
    assert lines[0].startswith("error: could not write o/checkpoints/stage0-pretrain.pt: ")
    assert lines[1] == "everything written before is kept; free some space, then: admm-explorer run --resume o"
    assert not list((tmp_path / "o" / "checkpoints").glob("*.tmp"))
    resumed = subprocess.run(command + ["--resume", "o", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr


def test_resume_drops_a_torn_last_line_and_says_so(tmp_path, full, capsys):
    out = stopped_run(tmp_path / "run")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"kind": "admm_round", "stage": 1, "layers": {"fc1": {"pri')  # killed mid-write
    assert run_recipe(None, resume=out)["status"] == "finished"
    assert "the last line of" in capsys.readouterr().err
    assert comparable(out) == comparable(full)


class Payload:
    """A pickle that runs code when loaded without weights_only: it would create the file `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_everywhere_a_checkpoint_is_read(tmp_path):
    import torch

    from admm_explorer.errors import CheckpointError
    from admm_explorer.prm import load_shrunk

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="is corrupt or not a checkpoint"):
        run_recipe(parse_recipe({"device": "cpu", "start": str(evil), "stages": STAGES}), out=tmp_path / "a")
    with pytest.raises(CheckpointError, match="is corrupt or not a shrunk model"):
        load_shrunk(evil)
    out = stopped_run(tmp_path / "run")
    torch.save({"state_dict": Payload(marker)}, out / "checkpoints" / "stage0-pretrain.pt")
    with pytest.raises(CheckpointError, match="is corrupt or not a checkpoint"):
        run_recipe(None, resume=out)
    assert not marker.exists()


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run(tmp_path):
    long = {"device": "cpu", "seed": 1, "stages": [STAGES[0], {"kind": "pretrain", "epochs": 1}]}  # time to kill
    full = tmp_path / "full"
    run_recipe(parse_recipe(long), out=full)
    (tmp_path / "r.json").write_text(json.dumps(long))
    command = [sys.executable, "-m", "admm_explorer.cli", "run", "r.json", "--out", "o", "--quiet"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "o" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and '"stage": 1' in metrics.read_text()):  # inside the second stage
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run([sys.executable, "-m", "admm_explorer.cli", "run", "--resume", "o", "--quiet"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(tmp_path / "o") == comparable(full)
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["accuracy"] == \
        json.loads((full / "summary.json").read_text())["accuracy"]
