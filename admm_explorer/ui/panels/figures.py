"""Live plots: residuals, weight histogram, accuracy/loss, sparsity. Plotly FigureWidgets, drawn in batches.

Every figure is built with all its traces in the constructor (one or two per layer) and afterwards only
has trace data replaced inside batch_update(): traces added to a FigureWidget later do not reliably reach
the browser (seen with plotly 7.1 under Voila). A new model (other layers) gets a new FigureWidget.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from copy import deepcopy
from html import escape

import ipywidgets as w
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .base import Panel, labelled

COLORS = qualitative.Plotly
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=12)


def base_layout(title: str, x_title: str, y_title: str, **extra) -> dict:
    return dict(title=dict(text=title, x=0.02, font=dict(size=14)), height=330, margin=dict(l=60, r=10, t=40, b=45),
                xaxis=dict(title=dict(text=x_title)), yaxis=dict(title=dict(text=y_title)), font=FONT,
                legend=dict(font=dict(size=11)), template="plotly_white", **extra)


# a tiny ES module standing in for plotly's 5 MB widget bundle in each figure's state: it imports the bundle
# once from the page's own origin (`admm-explorer dashboard` serves it there and sets the variable)
BUNDLE_STUB = "export default (await import(new URL({path!r}, document.baseURI).href)).default;\n"


def figure_widget(figure: go.Figure) -> go.FigureWidget:
    widget = go.FigureWidget(figure)
    path = os.environ.get("ADMM_EXPLORER_PLOTLY_JS")
    if path:
        widget._esm = BUNDLE_STUB.format(path=path)
    return widget


@contextmanager
def updating(figure: go.FigureWidget):
    """batch_update, then the figure's widget state is its current data and layout too.

    plotly sends edits as one-off messages and keeps the constructor's data as the widget state; a browser
    that creates its model later (Voila fetches every widget's state when the page loads, after the notebook
    ran) would show the constructor's empty traces. plotly refreshes this state itself only when the figure
    is displayed on its own (_repr_mimebundle_), not inside a Box.
    """
    with figure.batch_update():
        yield figure
    figure._widget_data = deepcopy(figure._data)
    figure._widget_layout = deepcopy(figure._layout_obj._props)


class FigurePanel(Panel):
    """A panel whose FigureWidget depends on the model's prunable layers; rebuilt when they change."""

    def __init__(self, controller):
        super().__init__(controller)
        self.layers: list[str] = []
        self.layer_info: dict[str, dict] = {}  # layer -> shape, weights, macs
        self.figure: go.FigureWidget | None = None
        self.holder = w.Box(layout=w.Layout(width="100%"))
        self.body.children = self.controls() + [self.holder]
        self.reset()

    def controls(self) -> list[w.DOMWidget]:
        return []

    def build(self) -> go.Figure:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the recorded data (a new session)."""

    def flush(self) -> None:
        if self.figure is not None:  # none before the first session (its setup may have failed)
            super().flush()

    def on_run_started(self, event) -> None:
        self.reset()
        layers = list(event.layers)
        if layers != self.layers or self.figure is None:
            self.layers, self.layer_info = layers, event.layers
            self.figure = figure_widget(self.build())
            self.holder.children = (self.figure,)


class EpochAxis:
    """x of evaluations in epochs across stages and phases (each phase counts its epochs from 0)."""

    def __init__(self):
        self.last = 0.0
        self.phase: tuple[int, str] | None = None
        self.start = 0.0

    def at(self, event) -> float:
        if self.phase != (event.stage, event.phase):
            self.phase, self.start = (event.stage, event.phase), self.last
        self.last = self.start + event.epoch
        return self.last


def positive(values: list[float | None]) -> list[float | None]:
    """Zeros and negatives are gaps on a log axis rather than plotly warnings."""
    return [v if v is not None and v > 0 else None for v in values]


class ResidualsPanel(FigurePanel):
    """Primal ||W - Z|| and dual rho ||Z - Z_prev|| per layer and Z/U round (rounds counted across stages)."""

    title = "Residuals"

    def reset(self) -> None:
        self.rounds: list[int] = []
        self.phases: list[str] = []
        self.primal: dict[str, list] = {}
        self.dual: dict[str, list] = {}

    def build(self) -> go.Figure:
        traces = []
        for i, layer in enumerate(self.layers):
            color = COLORS[i % len(COLORS)]
            traces.append(go.Scatter(x=[], y=[], name=f"{layer} primal", legendgroup=layer, mode="lines+markers",
                                     line=dict(color=color), marker=dict(size=5)))
            traces.append(go.Scatter(x=[], y=[], name=f"{layer} dual", legendgroup=layer, mode="lines+markers",
                                     line=dict(color=color, dash="dot"), marker=dict(size=5, symbol="x")))
        layout = base_layout("ADMM residuals (solid: primal ||W−Z||, dotted: dual ρ||Z−Z′||)", "Z/U round",
                             "residual (log scale)")
        layout["yaxis"]["type"] = "log"
        return go.Figure(data=traces, layout=layout)

    def on_admm_round(self, event) -> None:
        self.rounds.append(len(self.rounds) + 1)
        self.phases.append(f"stage {event.stage} {event.phase}, round {event.round}")
        for layer in self.layers:
            values = event.layers.get(layer)
            self.primal.setdefault(layer, []).append(values["primal"] if values else None)
            self.dual.setdefault(layer, []).append(values["dual"] if values else None)

    def render(self) -> None:
        with updating(self.figure):
            for i, layer in enumerate(self.layers):
                for trace, series in ((self.figure.data[2 * i], self.primal), (self.figure.data[2 * i + 1], self.dual)):
                    trace.x = list(self.rounds)
                    trace.y = positive(series.get(layer, []))
                    trace.text = list(self.phases)


class HistogramPanel(FigurePanel):
    """One layer's weights W per round, split into the part Z keeps and the part ADMM drives to zero.

    Counts arrive as bins from the engine (never raw weights); the two stacked bars add up to all of W.
    """

    title = "Weight histogram"

    def controls(self) -> list[w.DOMWidget]:
        self.layer = labelled(w.Dropdown(options=[]), "Layer", "Whose weights to show")
        self.round = labelled(w.IntSlider(value=0, min=0, max=0, disabled=True, continuous_update=True),
                              "Round", "Z/U round to show: drag back to look at earlier rounds; at the right end "
                                       "it follows the training")
        self.info = w.HTML()
        self.follow = True
        self.syncing = False  # set while render moves the slider itself: not a user's choice
        self.layer.observe(self.action(self.on_pick), "value")
        self.round.observe(self.action(self.on_pick), "value")
        return [w.HBox([self.layer, self.round], layout=w.Layout(width="100%")), self.info]

    def reset(self) -> None:
        self.records: list[dict] = []  # per round: {"label", "layers": {name: (edges, w_counts, kept_counts)}}
        self.follow = True

    def build(self) -> go.Figure:
        self.syncing = True
        self.layer.options = self.layers
        self.layer.value = max(self.layers, key=lambda name: self.layer_info[name]["weights"])  # the sharpest split
        self.syncing = False
        traces = [go.Bar(x=[], y=[], name="kept by Z", marker=dict(color="#1f77b4")),
                  go.Bar(x=[], y=[], name="pruned by Z (driven to 0)", marker=dict(color="#ff7f0e"))]
        layout = base_layout("Weights W at a Z/U round", "weight value", "count (log scale)", barmode="stack",
                             bargap=0)
        layout["yaxis"]["type"] = "log"
        return go.Figure(data=traces, layout=layout)

    def on_pick(self, change) -> None:
        if not self.syncing:
            self.follow = self.round.value >= self.round.max
            self.redraw()

    def on_admm_round(self, event) -> None:
        self.records.append({
            "label": f"stage {event.stage} {event.phase}, round {event.round}",
            "layers": {name: (v["edges"], v["w_counts"], v["kept_counts"]) for name, v in event.layers.items()}})

    def render(self) -> None:
        self.syncing = True
        try:
            n = len(self.records)
            # the order keeps min <= max at every step (ipywidgets validates each assignment)
            if n:
                self.round.max, self.round.min = n, 1
            else:
                self.round.min, self.round.max = 0, 0
            self.round.disabled = n == 0
            if self.follow or self.round.value > n:
                self.round.value = n
        finally:
            self.syncing = False
        record = self.records[self.round.value - 1] if n else None
        bins = record["layers"].get(self.layer.value) if record else None
        if bins is None:
            self.info.value = ("<i>no ADMM round yet: run ADMM to see the weights split</i>" if not n else
                               f"<i>{escape(self.layer.value)} has no target in {record['label']}</i>")
            centres = kept = pruned = []
            width = None
        else:
            edges, counts, kept = bins
            centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            pruned = [c - k for c, k in zip(counts, kept)]
            width = edges[1] - edges[0]
            self.info.value = (f"{record['label']}: {sum(counts):,} weights in {escape(self.layer.value)}, "
                               f"Z keeps {sum(kept):,}")
        with updating(self.figure):
            for trace, y in zip(self.figure.data, (kept, pruned)):
                trace.x = centres
                trace.y = y
                trace.width = width


class AccuracyPanel(FigurePanel):
    """Train and test accuracy and loss at every evaluation, x in epochs counted across stages."""

    title = "Accuracy"

    def reset(self) -> None:
        self.x: list[float] = []
        self.series = {key: [] for key in ("train_accuracy", "test_accuracy", "train_loss", "test_loss")}
        self.stages: list[tuple[float, str]] = []  # (x where a stage began, its kind)
        self.axis = EpochAxis()

    def build(self) -> go.Figure:
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12)
        style = {"train": dict(dash="dot"), "test": dict()}
        for col, what in ((1, "accuracy"), (2, "loss")):
            for split, color in (("train", "#7f7f7f"), ("test", "#1f77b4" if what == "accuracy" else "#d62728")):
                fig.add_trace(go.Scatter(x=[], y=[], name=f"{split} {what}", mode="lines+markers",
                                         line=dict(color=color, **style[split]), marker=dict(size=5)), row=1, col=col)
        fig.update_layout(**base_layout("Accuracy and loss per evaluation", "epoch", "top-1 accuracy"))
        fig.update_xaxes(title_text="epoch (all stages)")
        fig.update_yaxes(title_text="top-1 accuracy", tickformat=".0%", range=[0, 1], row=1, col=1)
        fig.update_yaxes(title_text="cross-entropy (log scale)", type="log", row=1, col=2)
        return fig

    def on_stage_started(self, event) -> None:
        self.stages.append((self.axis.last, event.stage_kind))

    def on_evaluation_done(self, event) -> None:
        self.x.append(self.axis.at(event))
        for key, values in self.series.items():
            values.append(getattr(event, key))

    def render(self) -> None:
        with updating(self.figure):
            for trace, key in zip(self.figure.data, self.series):
                trace.x = list(self.x)
                trace.y = positive(self.series[key]) if key.endswith("loss") else list(self.series[key])
            if len(self.figure.layout.annotations) != len(self.stages):  # stage marks: only when one began
                self.figure.layout.shapes = [dict(type="line", xref=axis, yref="paper", x0=x, x1=x, y0=0, y1=1,
                                                  line=dict(color="#bbbbbb", width=1, dash="dash"))
                                             for x, _ in self.stages for axis in ("x", "x2")]
                self.figure.layout.annotations = [dict(xref="x", yref="paper", x=x, y=1.0, text=kind, showarrow=False,
                                                       xanchor="left", yanchor="bottom",
                                                       font=dict(size=10, color="#777777"))
                                                  for x, kind in self.stages]
            if self.x:
                self.figure.layout.yaxis.autorange = True


class SparsityPanel(FigurePanel):
    """Per layer: the target, Z's sparsity at the last ADMM round, and the exact zeros of W now."""

    title = "Sparsity"

    def reset(self) -> None:
        self.target: dict[str, float] = {}
        self.z: dict[str, float] = {}
        self.w: dict[str, float] = {}

    def build(self) -> go.Figure:
        traces = [go.Bar(x=self.layers, y=[None] * len(self.layers), name=name, marker=dict(color=color),
                         textposition="outside", textfont=dict(size=10))
                  for name, color in (("target", "#c7c7c7"), ("Z at last ADMM round", "#ff7f0e"),
                                      ("W exact zeros (achieved)", "#1f77b4"))]
        layout = base_layout("Target vs achieved sparsity", "layer", "fraction of weights pruned",
                             barmode="group")
        layout["yaxis"].update(range=[0, 1.12], tickformat=".0%")
        return go.Figure(data=traces, layout=layout)

    def on_targets_changed(self, event) -> None:
        self.target = {name: t.sparsity or 0.0 for name, t in event.targets.items()}

    def on_admm_round(self, event) -> None:
        self.z.update({name: v["sparsity"] for name, v in event.layers.items()})

    def on_evaluation_done(self, event) -> None:
        self.w.update(event.sparsity)

    def render(self) -> None:
        with updating(self.figure):
            for trace, values in zip(self.figure.data, (self.target, self.z, self.w)):
                trace.y = [values.get(layer) for layer in self.layers]
                trace.text = [f"{values[layer]:.1%}" if layer in values else "" for layer in self.layers]
