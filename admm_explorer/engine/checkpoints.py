"""Stage checkpoints: plain tensors and built-in types only, so torch.load(weights_only=True) reads them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import CheckpointError
from ..files import load_weights_only, tensor_bytes, writing

if TYPE_CHECKING:
    from .session import Session

FORMAT = 1


def save(session: "Session", path: Path, stage: int, kind: str) -> Path:
    """Write atomically (temp file + rename): a crash mid-write never leaves a half checkpoint behind."""
    payload = {
        "format": FORMAT,
        "model_name": session.recipe.model,
        "stage": stage,
        "kind": kind,
        "state_dict": {k: v.detach().cpu() for k, v in session.model.state_dict().items()},
        "masks": {k: v.detach().cpu() for k, v in session.masks.items()},
        "targets": {k: t.model_dump() for k, t in session.targets.items()},
        "quantized": sorted(session.quantized),
        "arch": session.arch,
        "held_out": held_out(session),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        with writing(path, tensor_bytes(payload["state_dict"])):
            torch.save(payload, tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def held_out(session: "Session") -> dict:
    """Which training examples this session never trains on: the same triple always holds out the same
    examples (data.holdout), so a later run may validate on them only if it names the same triple."""
    data = session.data
    return {"dataset": session.recipe.dataset, "pool": data.n_train + data.n_validation,
            "validation": data.n_validation}


def check_held_out(path: Path, payload: dict, session: "Session") -> None:
    """A run with a validation set may start only from weights that never trained on it."""
    if not session.data.n_validation:
        return
    want, got = held_out(session), payload.get("held_out")
    if got != want:
        trained = ("with no record of held-out examples" if got is None else
                   f"with validation = {got['validation']} of {got['pool']} {got['dataset']} examples")
        raise CheckpointError(
            f"checkpoint {path} was trained {trained}, so it may have trained on the validation = "
            f"{want['validation']} examples this recipe holds out of {want['pool']}: start from a checkpoint of a "
            f"run with the same dataset and validation, or set validation = 0")


def read(path: Path) -> dict:
    payload = load_weights_only(path)
    if isinstance(payload, dict) and "state_dict" not in payload and all(
            isinstance(v, torch.Tensor) for v in payload.values()):
        payload = {"format": FORMAT, "state_dict": payload, "masks": {}, "targets": {}, "arch": None}
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"checkpoint {path} holds no model state_dict")
    return payload


def rebuild(payload: dict, model: nn.Module) -> nn.Module:
    """The module the checkpoint's weights belong to: the given model, or its physically shrunk form."""
    if payload.get("arch"):
        from ..prm import build_shrunk

        return build_shrunk(payload["arch"])
    return model


def check_state(path: Path, state: dict, model: nn.Module) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        if wrong:
            parts.append(f"shape {', '.join(wrong[:3])}")
        raise CheckpointError(f"checkpoint {path} does not fit this model: {'; '.join(parts)}")


def check_start(path: Path, model: nn.Module) -> bool:
    """Raises CheckpointError unless the checkpoint fits the model; True if it holds hard masks (pruned)."""
    payload = read(path)
    check_state(path, payload["state_dict"], rebuild(payload, model))
    return bool(payload.get("masks"))


def load_into(session: "Session", path: Path) -> dict:
    """Replace the session's model weights, masks, targets and quantized layers with the checkpoint's."""
    from ..admm import LayerTarget

    payload = read(path)
    check_held_out(path, payload, session)
    model = rebuild(payload, session.model)
    check_state(path, payload["state_dict"], model)
    model.load_state_dict(payload["state_dict"])
    session.model = model.to(session.device)
    session.arch = payload.get("arch")
    session.masks = {k: v.to(session.device) for k, v in payload.get("masks", {}).items()}
    session.targets = {k: LayerTarget(**t) for k, t in payload.get("targets", {}).items()}
    session.quantized = set(payload.get("quantized", []))
    return payload
