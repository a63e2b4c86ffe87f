"""Physical shrink: new, smaller Conv2d / BatchNorm2d / Linear modules in a copy of the model.

The result is the model's own class with some submodules replaced, so it is an ordinary nn.Module:
its state_dict saves and loads, it exports to ONNX. `save_shrunk` stores the state_dict together with
the zoo name of the base architecture and every conv/linear/BN's channel counts (plain ints), so
`load_shrunk` rebuilds it and loads the weights with torch.load(weights_only=True); nothing is pickled.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import CheckpointError
from ..files import load_weights_only
from ..models import MODELS, build_model
from .graph import is_depthwise
from .paths import Plan, plan

FORMAT = "admm_explorer.prm.shrunk/1"
RESIZABLE = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


def _channels(m: nn.Module) -> tuple[int, int]:
    """(input channels, output channels) of a resizable module."""
    if isinstance(m, nn.Conv2d):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.num_features, m.num_features


def resized(m: nn.Module, n_in: int, n_out: int) -> nn.Module:
    """A fresh module like `m` (same hyperparameters, dtype, device) with other channel counts."""
    ref = next(iter(m.state_dict().values()))
    kw = {"device": ref.device, "dtype": ref.dtype if ref.is_floating_point() else None}
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(n_in, n_out, m.kernel_size, m.stride, m.padding, m.dilation,
                         groups=n_out if is_depthwise(m) else m.groups, bias=m.bias is not None,
                         padding_mode=m.padding_mode, **kw)
    if isinstance(m, nn.Linear):
        return nn.Linear(n_in, n_out, bias=m.bias is not None, **kw)
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(n_out, m.eps, m.momentum, m.affine, m.track_running_stats, **kw)
    raise TypeError(f"cannot resize {type(m).__name__}")


def _shrunk_module(m: nn.Module, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Module:
    """`m` keeping output channels `rows` and input columns `cols` (None: all)."""
    state = {}
    for key, t in m.state_dict().items():
        if t.dim() and rows is not None:
            t = t[rows.to(t.device)]
        if key == "weight" and t.dim() >= 2 and cols is not None:
            t = t[:, cols.to(t.device)]
        state[key] = t
    n_in, n_out = _channels(m)
    n_out = n_out if rows is None else rows.numel()
    n_in = n_out if isinstance(m, nn.Conv2d) and is_depthwise(m) else (n_in if cols is None else cols.numel())
    new = resized(m, n_in, n_out)
    new.load_state_dict(state)
    return new.train(m.training)


def _kept_columns(p: Plan, space: int, r: int = 1) -> torch.Tensor | None:
    """Indices of the space's kept channels, each expanded to its r columns; None when none is removed."""
    if not p.removed[space].any():
        return None
    return (p.kept(space)[:, None] * r + torch.arange(r)).flatten()


def shrink_plan(p: Plan) -> nn.Module:
    """Replace, in the plan's masked copy (consumed), every module that loses channels by a smaller one; return it."""
    g = p.graph
    for name in sorted(set(g.rows) | set(g.cols)):
        rows = _kept_columns(p, g.rows[name]) if name in g.rows else None
        cols = _kept_columns(p, *g.cols[name]) if name in g.cols else None
        if rows is not None or cols is not None:
            g.model.set_submodule(name, _shrunk_module(g.model.get_submodule(name), rows, cols))
    return g.model


def shrink(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Physically smaller copy of `model`: equal outputs in eval mode (float rounding of folded biases aside).

    Runs unused path removal (paths.py) to a fixed point first; `model` itself is not modified.
    """
    return shrink_plan(plan(model, example_input))


def _architecture(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(_channels(m)) for name, m in model.named_modules() if isinstance(m, RESIZABLE)}


def _skeleton(model: nn.Module) -> list[tuple[str, type]]:
    return [(name, type(m)) for name, m in model.named_modules()]


def zoo_base(model: nn.Module) -> str:
    """Zoo name of the architecture `model` was shrunk from: same class and same module names and types."""
    skeleton = _skeleton(model)
    with torch.device("meta"):
        for name, spec in MODELS.items():
            if _skeleton(spec.build()) == skeleton:
                return name
    raise ValueError("model matches no architecture of the zoo; pass base=<zoo name>")


def architecture(model: nn.Module, base: str | None = None) -> dict:
    """Plain-data description of a (shrunk) zoo model: its zoo base name and every conv/linear/BN's
    (in, out) channel counts; `build_shrunk` makes an untrained module of exactly that shape."""
    return {"base": base or zoo_base(model), "channels": _architecture(model)}


def build_shrunk(arch: dict) -> nn.Module:
    model = build_model(arch["base"])
    for name, (n_in, n_out) in arch["channels"].items():
        old = model.get_submodule(name)
        if _channels(old) != (n_in, n_out):
            model.set_submodule(name, resized(old, n_in, n_out))
    return model


def save_shrunk(model: nn.Module, path: str | os.PathLike, base: str | None = None) -> None:
    """Save the state_dict with the architecture (zoo base name + channel counts), all plain data."""
    torch.save({"format": FORMAT, **architecture(model, base), "state_dict": model.state_dict()}, path)


def load_shrunk(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_shrunk` (torch.load with weights_only=True) and load its weights."""
    payload = load_weights_only(path, "shrunk model")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a shrunk model saved by save_shrunk (format "
                              f"{payload.get('format') if isinstance(payload, dict) else None!r})")
    model = build_shrunk(payload)
    model.load_state_dict(payload["state_dict"])
    return model.to(map_location)
