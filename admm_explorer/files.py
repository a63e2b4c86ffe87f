"""Reading and writing the package's files: a failed write (a full disk, a kill) loses nothing already written and
says why; a file that is not what it should be is refused in one line."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import CheckpointError, WriteFailed


def read_events(path: Path) -> tuple[list[dict], bool]:
    """The complete events of a metrics.jsonl, and whether a torn last line (cut mid-write) was left out."""
    if not path.exists():
        return [], False
    text = path.read_text()
    lines = text.split("\n")
    torn = lines.pop() != ""  # the text after the last newline: empty unless a line was cut
    events = [json.loads(line) for line in lines if line]
    return events, torn


@contextmanager
def writing(path: Path, needed_bytes: int):
    """Turn a failed write of `path` into one line naming the file, the space it needed and the space left.
    Only writes go inside: torch.save reports an I/O failure as a RuntimeError ("unexpected pos ...",
    "basic_ios::clear"), so any RuntimeError in here is taken as one."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if isinstance(e, OSError) and e.strerror:
            reason = e.strerror
        elif free is not None and free < needed_bytes:
            reason = "the disk is full"
        else:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        left = "free space unknown" if free is None else f"{free / 1e6:,.1f} MB free"
        raise WriteFailed(f"could not write {path}: {reason} (it needs about {max(needed_bytes, 1) / 1e6:,.2f} MB; "
                          f"{left})") from None


def tensor_bytes(state: dict) -> int:
    """Bytes of the tensors of a state dict (what writing it needs, about)."""
    return sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` atomically (temp file + rename); a failed write removes the temp file and leaves
    the old file as it was."""
    tmp = path.with_suffix(".tmp")
    try:
        with writing(path, len(text)):
            tmp.write_text(text)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=float))


def load_weights_only(path: Path, what: str = "checkpoint"):
    """torch.load(weights_only=True) of a file we wrote; anything else (missing, truncated, a pickle with code)
    is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated or foreign files
        raise CheckpointError(f"{what} {path} is corrupt or not a {what} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
