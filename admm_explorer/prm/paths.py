"""Unused path removal (P-RM, paper 3), to a fixed point, exact in eval mode.

Semantics of the masked network (what "equal outputs" is measured against):
- A pruned filter (an all-zero row of a conv or linear weight) keeps its bias. Where a BatchNorm2d reads
  the conv's output directly, that channel's BN gamma and beta are zero too (`structured_masks_to_bn`;
  the hard prune sets them and MaskGuard holds them through every later stage): the channel is then
  exactly 0 after BN (and after ReLU/ReLU6), whatever the running statistics. Without it the channel
  would be the constant beta - gamma*mean/sqrt(var+eps), which is what the paper leaves to "fold into
  the next layer's bias".
- Every channel's value is tracked as a data-independent constant (spatially uniform) where it is one:
  through conv/linear rows whose every nonzero input is a foldable constant, BN in eval mode (gamma = 0
  gives beta whatever the input), activations and pooling (evaluated on a uniform map of the real
  shape, so avg-pool padding is caught), depthwise convs and residual adds.

A channel of a space (see graph.py) goes when every channel-mixing layer reading it either has an
all-zero slice for it, or reads a constant k that contributes exactly: k == 0, or the layer has no zero
padding (1x1 convs, unpadded convs like LeNet's, linear layers, anything after global pooling) and has
a bias or a BatchNorm2d right after it. The contribution k * sum(W[f, c]) is then folded into bias[f],
or subtracted from that BN's running_mean[f] (exact in eval; in training BN's batch mean absorbs it).
A constant read by a zero-padded conv is not folded (its contribution differs at the borders): such a
channel stays. Residual streams: constants are tracked per tensor, so each reader of a stream channel
sees the sum of what the producers before it wrote. The channel goes when every reader either ignores
it or sees a foldable constant: typically every producer is pruned (BN zeroed, so 0 everywhere), or no
block reads it; also, e.g., when the producers up to some block are pruned and every reader after that
block ignores the channel (the later producers' rows for it are then dead code and go too).

Removing a channel zeroes its producer rows, BN parameters, depthwise filters and consumer slices. That
can make further rows all-zero or further slices unused, so the analysis repeats to a fixed point.
At least one channel of every space is kept (the lowest-index one not yet removed), and pinned spaces
(network input and outputs, unknown ops) keep all: the classifier never loses an output class.

Columns: a pruned GEMM column (c, kh, kw) of a conv cannot shrink the conv unless the whole input
channel c is zero over every kh, kw (then the slice is all zero and the channel is unused here).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from .graph import ChannelGraph, Edge, Step, bn_after, channel_graph, trace, zero_padded


@dataclass
class Plan:
    """What `remove_unused_paths` found: channels removed per space of `graph` (graph.model is the masked copy)."""

    graph: ChannelGraph
    removed: list[torch.Tensor]  # per space: bool (channels,)

    def kept(self, space: int) -> torch.Tensor:
        return (~self.removed[space]).nonzero().flatten()

    def by_layer(self) -> dict[str, dict[str, list[int]]]:
        """{module: {"out": removed rows/channels, "in": removed input channels}} for every conv, linear, BN.

        A depthwise conv lists its channels under "out" only.

        For a linear behind a flatten, input channel c stands for columns c*r .. c*r + r - 1.
        """
        g = self.graph
        gone = lambda space: self.removed[space].nonzero().flatten().tolist()  # noqa: E731
        return {
            name: {"out": gone(g.rows[name]) if name in g.rows else [],
                   "in": gone(g.cols[name][0]) if name in g.cols else []}
            for name, m in g.model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
        }

    def masks(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`masks` with the rows and input channels this plan removes zeroed too (all kh, kw; all r columns)."""
        g, out = self.graph, {}
        for name, mask in masks.items():
            mask = mask.clone()
            if name in g.rows:
                mask[self.removed[g.rows[name]].to(mask.device)] = 0
            if name in g.cols:
                space, _ = g.cols[name]
                mask.view(mask.shape[0], g.sizes[space], -1)[:, self.removed[space].to(mask.device)] = 0
            out[name] = mask
        return out


def baked(model: nn.Module) -> nn.Module:
    """Copy of `model` with torch.nn.utils.prune reparametrizations made permanent (weight = orig * mask)."""
    pruned = [(m, hook._tensor_name) for m in model.modules() for hook in m._forward_pre_hooks.values()
              if isinstance(hook, prune.BasePruningMethod)]
    # the masked weight is a non-leaf tensor, which deepcopy refuses: hand it a detached copy
    memo = {id(getattr(m, name)): getattr(m, name).detach().clone() for m, name in pruned}
    model = copy.deepcopy(model, memo)
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(m, hook._tensor_name)
    return model


def pruned_bn_channels(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{BN module: bool (C,)}: for each affine BatchNorm2d that alone reads a conv of `masks`, the channels
    whose conv filter (row of the mask) is entirely pruned; only BNs with at least one such channel.

    The model is traced only when it has a BatchNorm2d and some conv a pruned filter.
    """
    rows = {name: mask.flatten(1).eq(0).all(1) for name, mask in masks.items()
            if isinstance(model.get_submodule(name), nn.Conv2d)}
    rows = {name: pruned for name, pruned in rows.items() if pruned.any()}
    if not rows or not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return {}
    gm = trace(model)
    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in rows:
            bn = bn_after(gm, node)
            if bn is not None and model.get_submodule(bn).affine:
                out[bn] = rows[node.target]
    return out


def structured_masks_to_bn(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """In place: for every all-zero row of a conv mask, zero gamma and beta of the BN that reads that conv.

    The channel is then exactly zero after BN, in train and eval mode (see the module docstring).
    Returns `model`.
    """
    with torch.no_grad():
        for bn, pruned in pruned_bn_channels(model, masks).items():
            module = model.get_submodule(bn)
            pruned = pruned.to(module.weight.device)
            module.weight[pruned] = 0
            module.bias[pruned] = 0
    return model


# ---- per-channel constants ---------------------------------------------------------------------------

def _taps(m: nn.Module, r: int) -> torch.Tensor:
    """Weight as (F, C, taps), a view: conv (F, C, kh*kw); linear behind a flatten (F, C, r)."""
    w = m.weight.detach()
    return w.flatten(2) if w.dim() == 4 else w.view(w.shape[0], -1, r)


def _bias(m: nn.Module, n: int, like: torch.Tensor) -> torch.Tensor:
    if getattr(m, "bias", None) is not None:
        return m.bias.detach()
    return torch.zeros(n, dtype=like.dtype, device=like.device)


def _foldable(k: torch.Tensor, padded: bool) -> torch.Tensor:
    """(C,) bool: a constant input channel whose contribution to a layer is exactly a constant."""
    known = ~k.isnan()
    return known & (k.eq(0) | (not padded))


def _mix_constant(m: nn.Module, k: torch.Tensor, r: int) -> torch.Tensor:
    """(F,) constants of a conv/linear output given (C,) input constants (NaN: not constant)."""
    w = _taps(m, r)
    fold = _foldable(k, zero_padded(m))
    out = w.sum(2) @ torch.where(fold, k, 0) + _bias(m, w.shape[0], w)
    out[(w.ne(0).any(2) & ~fold).any(1)] = float("nan")
    return out


def _depthwise_constant(m: nn.Conv2d, k: torch.Tensor) -> torch.Tensor:
    w = m.weight.detach().flatten(1)  # (C, kh*kw)
    fold = _foldable(k, zero_padded(m))
    out = w.sum(1) * torch.where(fold, k, 0) + _bias(m, w.shape[0], w)
    out[w.ne(0).any(1) & ~fold] = float("nan")
    return out


def _bn_constant(m: nn.BatchNorm2d, k: torch.Tensor) -> torch.Tensor:
    """Eval-mode BN of a constant; gamma == 0 gives beta whatever the input."""
    gamma = m.weight.detach() if m.affine else torch.ones_like(k)
    beta = m.bias.detach() if m.affine else torch.zeros_like(k)
    scale = gamma / torch.sqrt(m.running_var + m.eps)
    out = (k - m.running_mean) * scale + beta
    return torch.where(scale.eq(0), beta, out)


def _channelwise_constant(g: ChannelGraph, step: Step, k: torch.Tensor) -> torch.Tensor:
    """Run the op on a uniform map of its real input shape; a channel stays constant where the output is uniform."""
    node = step.node
    shape = tuple(node.args[0].meta["tensor_meta"].shape)
    r = g.space_of[step.inputs[0]][1]
    c = k.numel()
    filled = torch.nan_to_num(k, nan=0.0)
    x = filled.view(1, c, 1, 1).expand(1, *shape[1:]) if len(shape) == 4 else filled.repeat_interleave(r).view(1, -1)
    x = x.contiguous()  # in-place activations write into it
    if node.op == "call_module":
        y = g.model.get_submodule(node.target)(x)
    elif node.op == "call_method":
        y = getattr(x, node.target)(*node.args[1:], **node.kwargs)
    else:
        y = node.target(x, *node.args[1:], **node.kwargs)
    y = y.reshape(1, c, -1)[0]  # (C, positions)
    uniform = y.eq(y[:, :1]).all(1)
    return torch.where(uniform & ~k.isnan(), y[:, 0], float("nan"))


def constants(g: ChannelGraph) -> dict[str, torch.Tensor]:
    """Per tensor node: (C,) value of each channel where it is a data-independent uniform constant, else NaN."""
    m = g.model
    dtype_ref = next(m.parameters())
    k: dict[str, torch.Tensor] = {}
    for step in g.steps:
        space, r = g.space_of[step.name]
        size = g.sizes[space]
        src = k[step.inputs[0]] if step.inputs else None
        if step.kind in ("input", "opaque"):
            k[step.name] = torch.full((size,), float("nan"), dtype=dtype_ref.dtype, device=dtype_ref.device)
        elif step.kind == "mix":
            k[step.name] = _mix_constant(m.get_submodule(step.module), src, g.cols[step.module][1])
        elif step.kind == "depthwise":
            k[step.name] = _depthwise_constant(m.get_submodule(step.module), src)
        elif step.kind == "bn":
            k[step.name] = _bn_constant(m.get_submodule(step.module), src)
        elif step.kind == "channelwise":
            k[step.name] = _channelwise_constant(g, step, src)
        elif step.kind == "flatten":
            k[step.name] = src
        elif step.kind == "add":
            scalar = sum(a for a in step.node.args if isinstance(a, (int, float)))
            k[step.name] = sum(k[i] for i in step.inputs) + scalar
    return k


# ---- the fixed point -----------------------------------------------------------------------------------

def _edge_ok(g: ChannelGraph, e: Edge, k: torch.Tensor) -> torch.Tensor:
    """(C,) bool: channels this layer either ignores or sees as an exactly foldable constant."""
    w = _taps(g.model.get_submodule(e.module), g.cols[e.module][1])
    unused = ~w.ne(0).any(2).any(0)
    known = ~k.isnan()
    return unused | (known & (k.eq(0) | (not e.padded and e.fold is not None)))


def _removable(g: ChannelGraph, k: dict[str, torch.Tensor], removed: list[torch.Tensor]) -> list[torch.Tensor]:
    ok = [torch.full((n,), not pin, dtype=torch.bool) for n, pin in zip(g.sizes, g.pinned)]
    for e in g.edges:
        space = g.space_of[e.node][0]
        ok[space] &= _edge_ok(g, e, k[e.node]).cpu()
    for space, o in enumerate(ok):
        if o.all() and o.numel():
            o[(~removed[space]).nonzero()[0]] = False  # keep one
    return ok


@torch.no_grad()
def _remove(g: ChannelGraph, k: dict[str, torch.Tensor], new: list[torch.Tensor]) -> None:
    """Fold the constants of `new` channels into their readers, then zero every trace of them."""
    m = g.model
    for e in g.edges:
        space = g.space_of[e.node][0]
        idx = new[space].nonzero().flatten()
        if not idx.numel():
            continue
        layer = m.get_submodule(e.module)
        w = _taps(layer, g.cols[e.module][1])
        kc = torch.nan_to_num(k[e.node][idx.to(w.device)], nan=0.0)  # NaN only where the slice is all zero
        delta = w[:, idx].sum(2) @ kc  # (F,)
        if e.fold == "bias":
            layer.bias.add_(delta)
        elif e.fold is not None:
            m.get_submodule(e.fold).running_mean.sub_(delta)
        w[:, idx] = 0
    for name, space in g.rows.items():
        idx = new[space].nonzero().flatten()
        if not idx.numel():
            continue
        layer = m.get_submodule(name)
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean[idx] = 0
            layer.running_var[idx] = 1
        if getattr(layer, "weight", None) is not None:
            layer.weight[idx] = 0
        if getattr(layer, "bias", None) is not None:
            layer.bias[idx] = 0


def plan(model: nn.Module, example_input: torch.Tensor) -> Plan:
    """Unused path removal on a copy of `model`, to a fixed point; see the module docstring."""
    masked = baked(model)
    g = channel_graph(masked, example_input)
    was_training = masked.training
    masked.eval()  # dropout and BN as in the outputs we promise to keep
    removed = [torch.zeros(n, dtype=torch.bool) for n in g.sizes]
    while True:
        k = constants(g)
        ok = _removable(g, k, removed)
        new = [o & ~r for o, r in zip(ok, removed)]
        if not any(n.any() for n in new):
            break
        _remove(g, k, new)
        removed = [r | n for r, n in zip(removed, new)]
    masked.train(was_training)
    return Plan(g, removed)


def remove_unused_paths(model: nn.Module, example_input: torch.Tensor,
                        ) -> tuple[nn.Module, dict[str, dict[str, list[int]]]]:
    """Copy of `model` with every unused path zeroed (same outputs in eval mode), and what can go per layer.

    The returned dict maps each conv, linear and BatchNorm2d module name to {"out": [...], "in": [...]}:
    its output channels (rows) and input channels that `shrink` removes.
    """
    p = plan(model, example_input)
    return p.graph.model, p.by_layer()
