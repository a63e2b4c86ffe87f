"""Model zoo: a registry of builders (name -> nn.Module) that know their input and prunable layers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import UnknownName  # noqa: F401  (re-exported: admm_explorer.models.UnknownName)
from ..registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]  # build(pretrained=False) -> fresh module
    input_shape: tuple[int, int, int]  # (C, H, W) of one sample
    num_classes: int
    description: str
    pretrained_available: bool = False


MODELS: Registry[ModelSpec] = Registry("model")


def register(spec: ModelSpec) -> ModelSpec:
    return MODELS.register(spec.name, spec)


def get_model_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


def build_model(name: str, pretrained: bool = False) -> nn.Module:
    spec = get_model_spec(name)
    if pretrained and not spec.pretrained_available:
        raise ValueError(f"model {name!r} has no pretrained weights")
    return spec.build(pretrained=pretrained)


PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d and Linear module, by module name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of each prunable layer for one sample (dense count), by module name."""
    import torch

    macs: dict[str, int] = {}
    hooks = []
    for name, m in prunable_layers(model).items():
        def hook(mod, inp, out, name=name):
            # out: (1, F, H, W) for conv, (1, F) for linear; each output element costs one weight row
            per_output = mod.weight[0].numel()
            macs[name] = int(out[0].numel() * per_output)
        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return macs


from . import cifar, imagenet, lenet  # noqa: E402,F401  (registers the zoo)
