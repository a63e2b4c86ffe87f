"""Per-layer constraints of ADMM pruning (docs/algorithms.md sections 1, 3, 4) and their resolution against a model."""
from __future__ import annotations

import math
from typing import Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from torch import nn

from ..models import PRUNABLE_TYPES, prunable_layers
from ..registry import did_you_mean
from .projections import filter_column_split, keep_count

Structure = Literal["unstructured", "filter", "column", "filter+column"]


class LayerTarget(BaseModel):
    """The constraint set S_i of one layer: a sparsity (in the given structure), a bit width, or both.

    `sparsity` is always the fraction of the layer's weights that end up zero, whatever the structure.
    "filter+column" has a rate of its own for each: `filter` (the share of GEMM rows removed) and `column`
    (the share of columns removed); its sparsity is then 1 - (1 - filter)(1 - column), and a sparsity given
    alone splits evenly (filter_column_split). `combine` says how ADMM meets the two constraints: "admm" (as
    P-RM does) keeps one Z and one U per constraint set, the penalties summed; "sequential" keeps one Z whose
    Z-step takes the best columns, then the best filters among them (not the Euclidean projection onto both).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sparsity: float | None = None
    structure: Structure = "unstructured"
    bits: int | None = None
    # filter pruning of a layer whose rows are the network's outputs removes classes: only when asked for
    prune_outputs: bool = False
    filter: float | None = None  # "filter+column" only: share of the GEMM rows removed
    column: float | None = None  # "filter+column" only: share of the GEMM columns removed
    combine: Literal["admm", "sequential"] = "admm"  # "filter+column" only

    @model_validator(mode="before")
    @classmethod
    def _filter_column_rates(cls, data):
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        rates = [k for k in ("filter", "column") if data.get(k) is not None]
        if rates and "structure" not in data:
            data["structure"] = "filter+column"  # {filter: 0.5, column: 0.7} says what it is
        if data.get("structure") != "filter+column":
            if rates:
                raise ValueError(f"{' and '.join(rates)} rates are for structure 'filter+column' only; with "
                                 f"structure {data.get('structure', 'unstructured')!r} give a sparsity")
            if data.get("combine", "admm") != "admm":
                raise ValueError("combine is for structure 'filter+column' only")
            return data
        if len(rates) == 1:
            raise ValueError(f"filter+column needs both rates: give filter and column (or a sparsity alone, "
                             f"split evenly), not {rates[0]} alone")
        for k in rates:
            r = data[k]
            if not (isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r < 1):
                raise ValueError(f"{k}={r!r} is not allowed: a {k} rate is the share of the layer's {k}s removed, "
                                 f"0 <= {k} < 1")
        s = data.get("sparsity")
        if rates:
            implied = 1 - (1 - data["filter"]) * (1 - data["column"])
            if s is not None and abs(s - implied) > 1e-9:
                raise ValueError(f"sparsity={s!r} does not match filter={data['filter']!r} and column="
                                 f"{data['column']!r} (they give {implied:.6g}): give the rates or the sparsity")
            data["sparsity"] = implied
        elif isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s < 1:
            data["filter"] = data["column"] = filter_column_split(s)
        return data

    @field_validator("sparsity")
    @classmethod
    def _sparsity_in_range(cls, s: float | None) -> float | None:
        if s is not None and not 0 <= s < 1:  # also refuses NaN
            raise ValueError(f"sparsity={s!r} is not allowed: it must satisfy 0 <= sparsity < 1 "
                             "(the fraction of the layer's weights set to zero; 1 would remove them all)")
        return s

    @field_validator("bits")
    @classmethod
    def _bits_in_range(cls, b: int | None) -> int | None:
        if b is not None and not 1 <= b <= 8:
            raise ValueError(f"bits={b!r} is not allowed: bits must be an integer from 1 to 8 "
                             "(1 binary, 2 ternary, 3..8 symmetric b-bit levels)")
        return b

    @model_validator(mode="after")
    def _consistent(self) -> LayerTarget:
        if self.sparsity is None and self.bits is None:
            raise ValueError("a layer target needs sparsity (0 <= sparsity < 1) or bits (1..8), or both; "
                             "it has neither")
        if self.structure != "unstructured" and self.sparsity is None:
            raise ValueError(f"structure={self.structure!r} needs a sparsity; "
                             "a target with bits only must use structure='unstructured'")
        if self.structure == "filter+column" and self.combine == "admm" and self.bits is not None:
            raise ValueError("bits with filter+column ADMM (one Z per constraint set) are not supported: quantize "
                             "in a later stage, or use combine: sequential (one Z)")
        return self

    def constraint_sets(self) -> tuple[LayerTarget, ...]:
        """The sets ADMM keeps a Z and a U for: the filter set and the column set of "filter+column" with
        combine "admm" (their intersection is the target), else the target itself."""
        if self.structure != "filter+column" or self.combine != "admm":
            return (self,)
        return (LayerTarget(sparsity=self.filter, structure="filter", prune_outputs=self.prune_outputs),
                LayerTarget(sparsity=self.column, structure="column"))

    def at_sparsity(self, sparsity: float) -> LayerTarget:
        """This target at another total sparsity (a progressive step): "filter+column" keeps the ratio of its
        rates' logs, so both keep fractions shrink by the same power (keep^share)."""
        if self.structure != "filter+column":
            return self.model_copy(update={"sparsity": sparsity})
        if not self.sparsity:
            return LayerTarget(sparsity=sparsity, structure=self.structure, combine=self.combine,
                               prune_outputs=self.prune_outputs, bits=self.bits)
        share = math.log1p(-sparsity) / math.log1p(-self.sparsity)
        return LayerTarget(filter=1 - (1 - self.filter) ** share, column=1 - (1 - self.column) ** share,
                           combine=self.combine, prune_outputs=self.prune_outputs, bits=self.bits)


TargetLike = Union[LayerTarget, Mapping[str, object], float]


def _as_target(layer: str, spec: TargetLike) -> LayerTarget:
    if isinstance(spec, LayerTarget):
        return spec
    try:
        if isinstance(spec, Mapping):
            return LayerTarget.model_validate(dict(spec))
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return LayerTarget(sparsity=spec)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'target'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"target of layer {layer!r} {dict(spec) if isinstance(spec, Mapping) else spec!r}: "
                         f"{problems}") from err
    raise TypeError(f"target of layer {layer!r} is a {type(spec).__name__}: allowed are a sparsity "
                    "(float), a dict such as {'sparsity': 0.9, 'structure': 'filter'}, or a LayerTarget")


def resolve_targets(model: nn.Module, targets: Mapping[str, TargetLike]) -> dict[str, LayerTarget]:
    """One LayerTarget per targeted prunable layer, in the model's layer order.

    A float x means LayerTarget(sparsity=x); the key "*" applies to every prunable layer not named
    explicitly. Raises ValueError for a name that is not a module of the model (with close matches),
    for a module that is not a Conv2d/Linear, and for invalid targets (naming the layer).
    """
    layers = prunable_layers(model)
    known = ", ".join(layers)
    modules = dict(model.named_modules())
    for name in targets:
        if name == "*" or name in layers:
            continue
        if name in modules:
            raise ValueError(f"layer {name!r} is a {type(modules[name]).__name__}, which cannot be pruned: "
                             f"only {' and '.join(t.__name__ for t in PRUNABLE_TYPES)} layers can "
                             f"(prunable layers: {known})")
        raise ValueError(f"unknown layer {name!r} in targets{did_you_mean(name, layers)} (prunable layers: {known})")
    default = _as_target("*", targets["*"]) if "*" in targets else None
    resolved = {}
    for name in layers:
        if name in targets:
            resolved[name] = _as_target(name, targets[name])
        elif default is not None:
            resolved[name] = default
    return resolved


def kept_weights(shape: tuple[int, ...], target: LayerTarget) -> int:
    """Weights a tensor of this shape keeps when its target is met exactly (all of them without sparsity)."""
    numel = math.prod(shape)
    s = target.sparsity
    if s is None:
        return numel
    rows, cols = shape[0], numel // shape[0]  # GEMM view: filters x (C*kh*kw) or out x in
    if target.structure == "unstructured":
        return keep_count(numel, s)
    if target.structure == "filter":
        return keep_count(rows, s) * cols
    if target.structure == "column":
        return rows * keep_count(cols, s)
    return keep_count(rows, target.filter) * keep_count(cols, target.column)


def compression(model: nn.Module, targets: Mapping[str, TargetLike]) -> float:
    """All prunable weights / weights kept if every target were met exactly (untargeted layers stay dense)."""
    resolved = resolve_targets(model, targets)
    total = kept = 0
    for name, layer in prunable_layers(model).items():
        shape = tuple(layer.weight.shape)
        total += math.prod(shape)
        kept += kept_weights(shape, resolved[name]) if name in resolved else math.prod(shape)
    return total / kept
