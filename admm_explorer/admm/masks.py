"""Hard pruning and masked training: pruned weights are exactly 0.0 and stay there (docs/algorithms.md section 1).

Masks are bool tensors of a weight's shape, True = kept, keyed by module name; the torch.nn.utils.prune
form (weight_orig * weight_mask) is supported for interchange.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from ..models import prunable_layers
from ..prm.paths import pruned_bn_channels, structured_masks_to_bn
from ..registry import lookup
from .projections import support
from .targets import TargetLike, resolve_targets


def _weight(model: nn.Module, name: str) -> nn.Parameter:
    weight = model.get_submodule(name).weight
    if not isinstance(weight, nn.Parameter):
        raise TypeError(f"layer {name!r} has no weight Parameter (is it in torch.nn.utils.prune form? "
                        "call from_prune_form first)")
    return weight


def _zero_outside(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    with torch.no_grad():
        for name, mask in masks.items():
            weight = _weight(model, name)
            weight.masked_fill_(~mask.to(weight.device, torch.bool), 0.0)


def hard_prune(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Sets every weight outside its mask to exactly +0.0, in place, and gamma and beta of every pruned
    conv filter's channel in the BatchNorm2d that reads it (structured_masks_to_bn): that channel is then
    exactly 0 after BN in train and eval mode, so masked training trains the network P-RM measures."""
    _zero_outside(model, masks)
    structured_masks_to_bn(model, masks)


class MaskGuard:
    """Keeps masked weights at exactly 0.0, and frozen weights exactly at given values, through training.

    masks: {name: bool, True = kept}. frozen: {name: (bool frozen, values)}, both of the weight's shape:
    kept weights that are frozen (quantized ones, at their levels). The BatchNorm2d gamma and beta of a
    conv filter entirely outside its mask are fixed at 0.0 too (as hard_prune leaves them), derived from
    the masks alone. While attached, a hook zeroes each fixed entry's gradient, so SGD momentum, weight
    decay and Adam moments started at zero stay zero there, and after_step(), to be called after every
    optimizer.step(), writes the fixed values back (against optimizer state left over from before the mask).
    Use as `with MaskGuard(model, masks) as guard:` or attach()/detach().
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor],
                 frozen: Optional[Mapping[str, tuple[Tensor, Tensor]]] = None):
        frozen = frozen or {}
        # (Parameter, bool fixed, values where fixed (0.0 where pruned); None: all fixed ones are 0.0)
        self._fixed: list[tuple[nn.Parameter, Tensor, Optional[Tensor]]] = []
        for name in {**masks, **frozen}:
            weight = _weight(model, name)
            mask = masks.get(name)
            fixed = (torch.zeros_like(weight, dtype=torch.bool) if mask is None
                     else ~mask.to(weight.device, torch.bool))
            values = None
            if name in frozen:
                where, at = (t.to(weight.device) for t in frozen[name])
                values = torch.where(where & ~fixed, at.to(weight.dtype).detach(), 0.0)
                fixed = fixed | where
            self._fixed.append((weight, fixed, values))
        for bn, pruned in pruned_bn_channels(model, masks).items():
            module = model.get_submodule(bn)
            self._fixed += [(p, pruned.to(p.device), None) for p in (module.weight, module.bias)]
        self._handles: list = []

    def attach(self) -> MaskGuard:
        if not self._handles:
            for weight, fixed, _ in self._fixed:
                self._handles.append(weight.register_hook(lambda g, fixed=fixed: g.masked_fill(fixed, 0.0)))
            self.after_step()
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def after_step(self) -> None:
        with torch.no_grad():
            for weight, fixed, values in self._fixed:
                if values is None:
                    weight.masked_fill_(fixed, 0.0)
                else:
                    weight.copy_(torch.where(fixed, values, weight))

    def __enter__(self) -> MaskGuard:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()


def to_prune_form(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """torch.nn.utils.prune.custom_from_mask on each layer: the modules get weight_orig and weight_mask."""
    for name, mask in masks.items():
        module = model.get_submodule(name)
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device))


def masks_from_prune_form(model: nn.Module) -> dict[str, Tensor]:
    """Bool masks of the layers in torch.nn.utils.prune form, by module name."""
    return {name: m.weight_mask.bool() for name, m in prunable_layers(model).items() if hasattr(m, "weight_mask")}


def from_prune_form(model: nn.Module) -> None:
    """Undoes to_prune_form (prune.remove): plain weight Parameters, exactly +0.0 outside the masks;
    BatchNorm is left as it is, so the outputs are those of the prune form."""
    masks = masks_from_prune_form(model)
    for name in masks:
        prune.remove(model.get_submodule(name), "weight")
    _zero_outside(model, masks)  # prune.remove leaves weight_orig * 0, which is -0.0 for negative weights


def magnitude_masks(model: nn.Module, targets: Mapping[str, TargetLike]) -> dict[str, Tensor]:
    """support(W, target) of every targeted layer: the magnitude (or structured-norm) prune to the targets."""
    layers = prunable_layers(model)
    return {name: support(layers[name].weight.detach(), target)
            for name, target in resolve_targets(model, targets).items()}


def current_sparsity(model: nn.Module, names: Optional[Iterable[str]] = None) -> dict[str, dict]:
    """{name: {"weights", "nonzero", "sparsity"}} of the given (default: all prunable) layers' weights."""
    layers = prunable_layers(model)
    out = {}
    for name in layers if names is None else names:
        weight = lookup(layers, name, "prunable layer").weight
        n, nonzero = weight.numel(), int(torch.count_nonzero(weight))
        out[name] = {"weights": n, "nonzero": nonzero, "sparsity": 1 - nonzero / n}
    return out
