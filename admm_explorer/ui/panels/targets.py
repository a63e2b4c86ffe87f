"""Targets: one row per prunable layer (shape, weights, FLOPs, sparsity, structure, bits), presets, live total."""
from __future__ import annotations

import math
from html import escape

import ipywidgets as w

from ...admm.targets import LayerTarget, kept_weights
from ..events import TargetsChanged
from .base import Panel, button, labelled

# Han et al. / Zhang et al. (ADMM, paper 1) LeNet-5 rates: 71.2x fewer weights
PAPER_LENET5 = {"conv1": 0.80, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93}
STRUCTURES = ["unstructured", "filter", "column", "filter+column"]
BITS = [("float", 0), ("1 (binary)", 1), ("2 (ternary)", 2)] + [(str(b), b) for b in range(3, 9)]  # 0: no quantization
COLUMNS = ["Layer", "Shape", "Weights", "FLOPs (MACs)", "Sparsity", "Structure", "Bits", "Kept"]
# the texts take what they need (a layer name up to its full length, wrapping after its dots when the panel is
# narrow; FLOPs (MACs) on two lines); the slider has the rest, at least 12.5em (an 80 px track beside its
# readout); the lists fit their longest entry ("filter+column", "2 (ternary)")
COLUMN_WIDTHS = "minmax(7.5em, max-content) auto auto min-content minmax(12.5em, 1fr) 9.6em 7.6em auto"
CELL = dict(width="auto")  # a grid item stretches over its cell; 100% plus its margins would overlap the next


def short(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


class Row:
    """The controls of one layer."""

    def __init__(self, name: str, info: dict, on_change):
        self.name, self.shape = name, tuple(info["shape"])
        self.nonzero = info["nonzero"]  # weights not pruned now (hard masks hold the others at zero)
        self.sparsity = w.FloatSlider(value=0.0, min=0.0, max=0.999, step=0.001, readout_format=".3f",
                                      continuous_update=True, tooltip=f"fraction of {name}'s weights set to zero",
                                      description=f"{name} sparsity", style={"description_width": "0"},
                                      layout=CELL)
        self.structure = w.Dropdown(options=STRUCTURES, value="unstructured", description=f"{name} structure",
                                    style={"description_width": "0"}, layout=CELL,
                                    tooltip="what is removed: single weights, whole filters (GEMM rows), columns, "
                                            "or both (filter+column: filters and columns each keep "
                                            "sqrt(1 - sparsity), one Z and U per set as in P-RM; separate "
                                            "rates from a recipe)")
        self.bits = w.Dropdown(options=BITS, value=0, description=f"{name} bits", style={"description_width": "0"},
                               layout=CELL,
                               tooltip="quantize the kept weights to this many bits (float: no quantization)")
        self.kept = w.HTML()
        for control in (self.sparsity, self.structure, self.bits):
            control.observe(on_change, "value")
        # a long name (layers.2.0.shortcut.0) wraps after its dots when the Layer column is narrow
        self.cells = [w.HTML(f"<b>{escape(name).replace('.', '.<wbr>')}</b>"), w.HTML("×".join(map(str, self.shape))),
                      w.HTML(f"{info['weights']:,}"), w.HTML(short(info["macs"])),
                      self.sparsity, self.structure, self.bits, self.kept]

    def kept_by(self, target: LayerTarget | None) -> int:
        """Weights left if `target` is met: the pruned ones stay pruned (masks hold them); None: untargeted."""
        return self.nonzero if target is None else min(self.nonzero, kept_weights(self.shape, target))

    def target(self) -> LayerTarget | None:
        s, bits = round(self.sparsity.value, 6), self.bits.value or None  # 0.92, not 0.9200000000000002
        if s <= 0 and bits is None:
            return None
        if s <= 0:
            return LayerTarget(bits=bits)
        return LayerTarget(sparsity=s, structure=self.structure.value, bits=bits)


class TargetsPanel(Panel):
    """Rows describe the network as loaded: after P-RM (or from a shrunk checkpoint) the shrunk layers, whose
    targets are fractions of what is left; the total compares with the dense network the session began as."""

    title = "Targets"
    named = (("Global target (×) =", "global_x"),)

    def __init__(self, controller):
        super().__init__(controller)
        self.rows: dict[str, Row] = {}
        self.model_name = None
        self.dense_weights = 0  # prunable weights of the dense network: the total's reference
        self.syncing = False
        self.shown: dict[str, LayerTarget] = {}  # the targets last announced (TargetsChanged)
        self.uniform = labelled(w.FloatSlider(value=0.9, min=0.0, max=0.999, step=0.001, readout_format=".3f"),
                                "Uniform sparsity", "the sparsity the Uniform preset gives every layer")
        self.global_x = labelled(w.FloatText(value=50.0, step=1.0),
                                 "Global target (×)", "total compression the Global preset reaches with one "
                                                      "magnitude threshold over all layers' current weights")
        self.b_uniform = button("Uniform", "every layer gets the uniform sparsity, unstructured")
        self.b_paper = button("LeNet-5 paper rates", "conv1 0.80, conv2 0.92, fc1 0.991, fc2 0.93: 71.2× "
                                                     "(ADMM paper on LeNet-5)")
        self.b_global = button("Global", "per-layer sparsity from one magnitude threshold over all prunable "
                                         "weights, reaching the global target")
        self.b_uniform.on_click(self.action(lambda _: self.preset({n: self.uniform.value for n in self.rows})))
        self.b_paper.on_click(self.action(lambda _: self.preset(PAPER_LENET5)))
        self.b_global.on_click(self.action(
            lambda _: self.preset(self.controller.global_sparsity(self.global_x.value))))
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns=COLUMN_WIDTHS, grid_gap="2px 8px",
                                              align_items="center", width="100%"))
        self.total = w.HTML()
        self.body.children = [self.grid, self.total,
                              w.HBox([self.b_uniform, self.b_paper, self.b_global], layout=w.Layout(flex_flow="row wrap")),
                              self.uniform, self.global_x]
        self.locked = [self.uniform, self.global_x, self.b_uniform, self.b_paper, self.b_global]

    def on_run_started(self, event) -> None:
        same = event.model == self.model_name and {n: i["shape"] for n, i in event.layers.items()} == {
            n: list(r.shape) for n, r in self.rows.items()}
        self.model_name, self.dense_weights = event.model, event.dense_weights
        if same:  # keep the user's targets; announce them to the new session's panels
            for name, row in self.rows.items():
                row.nonzero = event.layers[name]["nonzero"]
            self.changed()
            return
        self.layout(event.layers)
        shrunk = sum(i["weights"] for i in event.layers.values()) < event.dense_weights
        self.preset({} if shrunk else PAPER_LENET5 if set(PAPER_LENET5) == set(self.rows) else
                    {n: 0.9 for n in self.rows})

    def on_model_shrunk(self, event) -> None:
        """P-RM shrank the layers: new rows, untargeted (Kept = what the shrunk layer keeps now)."""
        self.dense_weights = event.dense_weights
        self.layout(event.layers)
        self.preset({})

    def on_evaluation_done(self, event) -> None:
        for name, sparsity in event.sparsity.items():
            if name in self.rows:
                row = self.rows[name]
                row.nonzero = round((1 - sparsity) * math.prod(row.shape))

    def layout(self, layers: dict) -> None:
        self.rows = {name: Row(name, info, self.action(self.changed)) for name, info in layers.items()}
        header = [w.HTML(f"<b>{c}</b>") for c in COLUMNS]
        self.grid.children = header + [cell for row in self.rows.values() for cell in row.cells]

    def preset(self, sparsity: dict[str, float]) -> None:
        """Set every row at once (one TargetsChanged, not one per slider); unnamed layers become untargeted."""
        self.syncing = True
        try:
            for name, row in self.rows.items():
                row.sparsity.value = sparsity.get(name, 0.0)
                row.structure.value = "unstructured"
                row.bits.value = 0
        finally:
            self.syncing = False
        self.changed()

    def changed(self, change=None) -> None:
        if self.syncing:
            return
        targets = self.targets()
        compression = self.dense_weights / max(self.kept_for(targets), 1)
        self.controller.post(TargetsChanged(targets=targets, compression=compression))

    def targets(self) -> dict[str, LayerTarget]:
        return {name: t for name, row in self.rows.items() if (t := row.target()) is not None}

    def on_targets_changed(self, event) -> None:
        self.shown = event.targets

    def kept_for(self, targets: dict[str, LayerTarget]) -> int:
        """Prunable weights left if every one of `targets` is met (untargeted layers keep what they have)."""
        return sum(row.kept_by(targets.get(name)) for name, row in self.rows.items())

    @property
    def kept(self) -> int:
        """Prunable weights left if every announced target is met."""
        return self.kept_for(self.shown)

    @property
    def compression(self) -> float:
        """Of the dense network the session began as, if every announced target is met."""
        return self.dense_weights / max(self.kept, 1)

    def render(self) -> None:
        for name, row in self.rows.items():
            row.kept.value = f"{row.kept_by(self.shown.get(name)):,}"
            for control in (row.sparsity, row.structure, row.bits):
                control.disabled = self.busy
            row.structure.disabled = self.busy or row.sparsity.value <= 0
        weights = sum(math.prod(row.shape) for row in self.rows.values())
        shrunk = f"; {self.dense_weights:,} before P-RM" if weights < self.dense_weights else ""
        self.total.value = (f"Total if every target is met: <b>{self.compression:.1f}× fewer weights</b> "
                            f"({self.kept:,} of {weights:,} kept{shrunk})" if self.rows else "")
