"""Channel spaces of a traced network: which tensors share a channel index, and which layers touch it.

A *space* is a set of channel indices that are removed together. It starts at the output channels of a
conv or linear (its rows, or filters) and takes in every tensor derived from them channel by channel
(BatchNorm, activations, pooling, dropout, depthwise convs, flatten) and every tensor added to them:
a residual add ties the spaces of its operands into one, so a channel of a residual stream belongs to
the stem, every block's output conv and every projection shortcut of that stage at once.

An *edge* is a channel-mixing layer (a conv with groups=1, or a linear) reading a tensor of a space: it
is where a removed channel must contribute exactly nothing, or exactly a constant that a bias absorbs.

A linear behind a flatten of (N, C, H, W) reads the space of the C channels, r = H*W columns per channel:
channel c owns columns c*r .. c*r + r - 1.

Whatever the walk does not understand (concatenation, grouped convs that are not depthwise, reshapes
other than a flatten, modules called twice, the network's input and its outputs) *pins* the spaces it
touches: a pinned space keeps every channel. That is conservative and always exact, and it is why
the final classifier never loses an output class.

Tracing uses torch.fx.symbolic_trace, which every network of the zoo supports.
"""
from __future__ import annotations

import math
import operator
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.node import map_arg
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn import functional as F

# channel c of the output depends only on channel c of the input, and a spatially uniform input stays
# uniform except where padding breaks it (checked numerically, see paths.py)
CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
CHANNELWISE_FUNCTIONS = {
    F.relu, F.relu6, torch.relu, F.hardtanh, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.hardsigmoid,
    torch.sigmoid, torch.tanh, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, "relu", "relu_", "sigmoid", "tanh", "contiguous", "clone",
}
ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}
FLATTENS = {torch.flatten, "flatten", "view", "reshape"}


@dataclass(frozen=True)
class Step:
    """One tensor-valued node of the traced graph, classified for the channel walk."""

    name: str
    kind: str  # input | opaque | mix | depthwise | bn | channelwise | flatten | add
    inputs: tuple[str, ...]  # tensor arguments, by node name
    module: str | None = None  # qualified module name for mix, depthwise, bn, channelwise modules
    node: fx.Node | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Edge:
    """A channel-mixing layer `module` reading tensor `node` (its columns per channel are in ChannelGraph.cols)."""

    module: str
    node: str
    padded: bool  # zero padding: a constant input is not a constant contribution at the borders
    fold: str | None  # where a constant contribution goes: "bias", the name of the BN right after, or None


@dataclass
class ChannelGraph:
    model: nn.Module
    steps: list[Step]
    space_of: dict[str, tuple[int, int]]  # tensor node -> (space, r columns per channel)
    sizes: list[int]  # channels of each space
    pinned: list[bool]
    rows: dict[str, int]  # conv/linear rows, BN channels, depthwise channels -> space
    cols: dict[str, tuple[int, int]]  # conv/linear input channels -> (space, r)
    edges: list[Edge]
    outputs: set[int]  # spaces of the network's outputs


def _is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    map_arg((node.args, node.kwargs), lambda n: found.append(n) if _is_tensor(n) else None)
    return found


def is_depthwise(m: nn.Conv2d) -> bool:
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


def zero_padded(m: nn.Module) -> bool:
    """A conv with zero padding: a constant input does not give a constant output at the borders."""
    return isinstance(m, nn.Conv2d) and (m.padding == "same" or any(p > 0 for p in m.padding))


def _kind(node: fx.Node, model: nn.Module) -> str:
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    args = _tensor_args(node)
    rank_in = len(_shape(args[0])) if args else 0
    rank_out = len(_shape(node))
    if node.op == "call_module":
        m = model.get_submodule(node.target)
        if isinstance(m, nn.Conv2d) and rank_in == 4:
            return "mix" if m.groups == 1 else "depthwise" if is_depthwise(m) else "opaque"
        if isinstance(m, nn.Linear) and rank_in == 2:
            return "mix"
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats and rank_in == 4:
            return "bn"
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1 and rank_in in (2, 4):
            return "flatten"
        if isinstance(m, CHANNELWISE_MODULES) and rank_in == rank_out and rank_in in (2, 4):
            return "channelwise"
        return "opaque"
    if node.op not in ("call_function", "call_method"):
        return "opaque"  # get_attr: a tensor the walk cannot see into
    if node.target in ADDS and not node.kwargs and len(node.args) == 2 and args:
        scalars_ok = all(isinstance(a, (int, float)) or _is_tensor(a) for a in node.args)
        same = all(_shape(a)[1:2] == _shape(node)[1:2] and len(_shape(a)) == rank_out for a in args)
        return "add" if scalars_ok and same else "opaque"
    if node.target in FLATTENS and len(args) == 1 and rank_out == 2:
        shape_in, shape_out = _shape(args[0]), _shape(node)
        flat = shape_out[0] == shape_in[0] and shape_out[1] == math.prod(shape_in[1:])
        return "flatten" if rank_in in (2, 4) and flat else "opaque"
    if node.target in CHANNELWISE_FUNCTIONS and len(args) == 1 and node.args[0] is args[0]:
        return "channelwise" if rank_in == rank_out and rank_in in (2, 4) else "opaque"
    return "opaque"


class _Spaces:
    """Union-find over channel spaces."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.pinned: list[bool] = []

    def new(self, size: int, pinned: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.pinned.append(pinned)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.pinned[a] = self.pinned[a] or self.pinned[b]
        return a

    def pin(self, s: int) -> None:
        self.pinned[self.find(s)] = True


def bn_after(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The BatchNorm2d module applied to `node` and nothing else, if any (the only user of the node)."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op == "call_module" and isinstance(gm.get_submodule(user.target), nn.BatchNorm2d):
        return user.target
    return None


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolic trace; leaf modules of the result are the model's own module objects (shared, not copied)."""
    return fx.symbolic_trace(model)


def channel_graph(model: nn.Module, example_input: torch.Tensor) -> ChannelGraph:
    """Trace `model` (in eval mode; it is not modified) and group its tensors' channels into spaces."""
    gm = trace(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    finally:
        model.train(was_training)

    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    spaces = _Spaces()
    of: dict[str, tuple[int, int]] = {}  # node -> (space, r) before union-find resolution
    steps: list[Step] = []
    rows: dict[str, int] = {}
    cols: dict[str, tuple[int, int]] = {}
    edges: list[Edge] = []
    outputs: list[int] = []

    for node in gm.graph.nodes:
        if node.op != "output" and not _is_tensor(node):
            continue  # sizes and shapes
        kind = _kind(node, model)
        args = _tensor_args(node)
        module = node.target if node.op == "call_module" else None
        if module is not None and calls[module] > 1 and kind in ("mix", "depthwise", "bn"):
            kind = "opaque"  # one module at two places: its channels would have to agree; keep them all
        if kind == "add" and len({of[a.name][1] for a in args}) > 1:
            kind = "opaque"  # same shape, different flattening: channels do not line up
        if kind == "output":
            outputs += [of[a.name][0] for a in args]
            for a in args:
                spaces.pin(of[a.name][0])
            continue
        steps.append(Step(node.name, kind, tuple(a.name for a in args), module, node))
        shape = _shape(node)
        if kind in ("input", "opaque"):
            for a in args:
                spaces.pin(of[a.name][0])
            of[node.name] = (spaces.new(shape[1] if len(shape) > 1 else 1, pinned=True), 1)
        elif kind == "mix":
            src = of[args[0].name]
            cols[module] = src
            of[node.name] = (spaces.new(shape[1]), 1)
            rows[module] = of[node.name][0]
            m = model.get_submodule(module)
            fold = "bias" if m.bias is not None else bn_after(gm, node)
            if fold not in (None, "bias") and (calls[fold] > 1 or not model.get_submodule(fold).track_running_stats):
                fold = None
            edges.append(Edge(module, args[0].name, zero_padded(m), fold))
        elif kind in ("depthwise", "bn", "channelwise"):
            of[node.name] = of[args[0].name]
            if kind != "channelwise":
                rows[module] = of[node.name][0]
        elif kind == "flatten":
            space, r = of[args[0].name]
            in_shape = _shape(args[0])
            of[node.name] = (space, r * math.prod(in_shape[2:]))
        elif kind == "add":
            for a in args[1:]:
                spaces.union(of[args[0].name][0], of[a.name][0])
            of[node.name] = of[args[0].name]

    # resolve union-find roots to compact indices
    roots = sorted({spaces.find(s) for s in range(len(spaces.parent))})
    index = {root: i for i, root in enumerate(roots)}
    resolve = lambda s: index[spaces.find(s)]  # noqa: E731
    return ChannelGraph(
        model=model,
        steps=steps,
        space_of={n: (resolve(s), r) for n, (s, r) in of.items()},
        sizes=[spaces.size[root] for root in roots],
        pinned=[spaces.pinned[root] for root in roots],
        rows={m: resolve(s) for m, s in rows.items()},
        cols={m: (resolve(s), r) for m, (s, r) in cols.items()},
        edges=edges,
        outputs={resolve(s) for s in outputs},
    )
