"""Live plots: residuals, weight histogram, accuracy/loss, sparsity. Plotly FigureWidgets, drawn in batches.

Every figure is built with all its traces in the constructor (one or two per layer) and afterwards only
has trace data replaced inside batch_update(): traces added to a FigureWidget later do not reliably reach
the browser (seen with plotly 7.1 under Voila). A new model (other layers) gets a new FigureWidget.
"""
from __future__ import annotations

import math
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


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b; None where either is missing (a layer without a target, a run recorded before b existed) or b = 0."""
    return a / b if a is not None and b else None


def log_ticks(values: list[float | None], most: int) -> tuple[list[float], list[str]]:
    """Tick values and labels for a log axis over `values`: the 1-2-5 steps inside their range, or the decades
    when those are more than `most` (then every k-th decade), or their two ends when no step lies inside.
    plotly labels a log axis spanning a decade or less with bare digits (2, 5) or crowds it."""
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return [], []
    lo, hi = min(values), max(values)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for steps in ((1, 2, 5), (1,)):
        ticks = [m * 10.0 ** k for k in decades for m in steps if lo <= m * 10.0 ** k <= hi]
        if len(ticks) <= most:
            break
    ticks = ticks[::math.ceil(len(ticks) / most)] if len(ticks) > most else ticks
    if len(ticks) < 2:
        ticks = sorted({lo, hi})
    return ticks, [f"{t:.3g}" for t in ticks]


# one row at the bottom of the figure, under the x axis title (in the bottom margin): at the panel's ~600 px
# the plot keeps its full width
LEGEND_BELOW = dict(orientation="h", x=0, xanchor="left", yref="container", y=0, yanchor="bottom", font=dict(size=11))


class ResidualsPanel(FigurePanel):
    """Per layer and Z/U round (rounds counted across stages), on one x axis: primal ||W - Z|| and dual
    rho ||Z - Z_prev||, absolute or normalised (by ||W|| and ||rho U||, computed by the engine); rho after
    the round; the share of Z's kept set that the round before did not keep (mask flips).

    Traces: 2i primal and 2i + 1 dual of layer i, then per layer rho (2n + i) and mask flips (3n + i).
    """

    title = "Residuals"
    SERIES = ("primal", "dual", "rho", "mask_flips", "w_norm", "rho_u_norm")
    TITLES = {False: ("ADMM residuals (solid: primal ‖W−Z‖, dotted: dual ρ‖Z−Z′‖)", "residual (log scale)"),
              True: ("Relative residuals (solid: ‖W−Z‖ / ‖W‖, dotted: ρ‖Z−Z′‖ / ‖ρU‖)",
                     "relative residual (log)")}

    def controls(self) -> list[w.DOMWidget]:
        self.scale = labelled(
            w.ToggleButtons(options=[("absolute", False), ("normalised", True)], value=False,
                            tooltips=["primal ‖W−Z‖ and dual ρ‖Z−Z′‖ as they are",
                                      "primal / ‖W‖ and dual / ‖ρU‖: layers of any size and any ρ on one scale"]),
            "Residuals", "absolute residuals, or normalised by ‖W‖ (primal) and ‖ρU‖ (dual) as in Boyd et al.'s "
                         "relative stopping criteria, so that a small layer and a large one compare")
        self.scale.style.button_width = "7em"
        self.scale.observe(self.action(lambda change: self.redraw()), "value")
        return [self.scale]

    def reset(self) -> None:
        self.rounds: list[int] = []
        self.phases: list[str] = []
        self.series: dict[str, dict[str, list]] = {}  # layer -> SERIES key -> one value (or None) per round

    def build(self) -> go.Figure:
        n = len(self.layers)
        lines = [None] * (4 * n)
        for i, layer in enumerate(self.layers):
            # one legend entry per layer (its primal): clicking it hides or shows all four of its traces
            style = dict(x=[], y=[], legendgroup=layer, showlegend=False)
            color = COLORS[i % len(COLORS)]
            solid, dotted = dict(color=color, width=1.5), dict(color=color, width=1.5, dash="dot")
            lines[2 * i] = go.Scatter(name=layer, mode="lines+markers", line=solid, marker=dict(size=5),
                                      **{**style, "showlegend": True})
            lines[2 * i + 1] = go.Scatter(name=f"{layer} dual", mode="lines+markers", line=dotted,
                                          marker=dict(size=5, symbol="x"), **style)
            lines[2 * n + i] = go.Scatter(name=f"{layer} ρ", mode="lines", line=solid, yaxis="y2", **style)
            lines[3 * n + i] = go.Scatter(name=f"{layer} mask flips", mode="lines+markers", line=solid,
                                          marker=dict(size=4), yaxis="y3", **style)
        title, y_title = self.TITLES[False]
        layout = base_layout(title, "Z/U round (all stages)", y_title)
        layout.update(height=500, legend=LEGEND_BELOW)
        layout["margin"]["b"] = 80
        small = dict(font=dict(size=11))
        # one x axis (zoom moves all three) at the bottom; residuals on top, then rho, then the flips
        layout["xaxis"].update(anchor="y3")
        layout["yaxis"].update(type="log", domain=[0.47, 1], tickmode="array")
        layout["yaxis2"] = dict(type="log", domain=[0.245, 0.405], anchor="x", tickmode="array",
                                title=dict(text="ρ after round", **small))
        layout["yaxis3"] = dict(domain=[0, 0.18], anchor="x", rangemode="tozero", tickformat=".0%",
                                title=dict(text="mask flips", **small))
        return go.Figure(data=lines, layout=layout)

    def on_admm_round(self, event) -> None:
        self.rounds.append(len(self.rounds) + 1)
        self.phases.append(f"stage {event.stage} {event.phase}, round {event.round}")
        for layer in self.layers:
            values = event.layers.get(layer) or {}
            series = self.series.setdefault(layer, {key: [] for key in self.SERIES})
            for key in self.SERIES:
                series[key].append(values.get(key))

    def render(self) -> None:
        n, normalised = len(self.layers), self.scale.value
        plotted = {"y": [], "y2": []}  # every value on each log axis, for its ticks
        with updating(self.figure):
            for i, layer in enumerate(self.layers):
                s = self.series.get(layer) or {key: [] for key in self.SERIES}
                primal, dual = s["primal"], s["dual"]
                if normalised:
                    primal = [ratio(a, b) for a, b in zip(primal, s["w_norm"])]
                    dual = [ratio(a, b) for a, b in zip(dual, s["rho_u_norm"])]
                primal, dual, rho = positive(primal), positive(dual), positive(s["rho"])
                plotted["y"] += primal + dual
                plotted["y2"] += rho
                for index, y in ((2 * i, primal), (2 * i + 1, dual), (2 * n + i, rho),
                                 (3 * n + i, list(s["mask_flips"]))):
                    trace = self.figure.data[index]
                    trace.x = list(self.rounds)
                    trace.y = y
                    trace.text = list(self.phases)
            title, y_title = self.TITLES[normalised]
            layout = self.figure.layout
            layout.title.text = title
            layout.yaxis.title.text = y_title
            layout.yaxis.tickvals, layout.yaxis.ticktext = log_ticks(plotted["y"], 6)
            layout.yaxis2.tickvals, layout.yaxis2.ticktext = log_ticks(plotted["y2"], 3)  # ~60 px tall


# the count axis is logarithmic from half a weight: the spike at 0 and the tails both read off it, and a bin
# holding one weight is a bar log10(1 / COUNT_FLOOR) = 0.3 decades tall, up to the axis' "1" line: 5% of the
# axis under fc1's largest bin after 20 default rounds (205,000 weights), where a linear axis would draw it
# 1/205,000 of the spike and log(1 + n) would label the ticks n + 1. No count lies below the floor.
COUNT_FLOOR = 0.5


class HistogramPanel(FigurePanel):
    """One layer's weights W per round, split into the part Z keeps and the part ADMM drives to zero.

    Counts arrive as bins from the engine (never raw weights); the two stacked bars add up to all of W, and
    the bins cover every weight (the engine widens them when a weight leaves their range). A layer with a
    bits target also shows Z's levels alpha * Q as dotted vertical lines (layout shapes).
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
        # per round: {"phase": (stage, phase), "round", "label", "layers": {name: (edges, w_counts, kept_counts,
        # levels)}}
        self.records: list[dict] = []
        self.follow = True
        self.x_range: list[float] | None = None  # set only when it changes: a user's zoom lasts until then

    def build(self) -> go.Figure:
        self.syncing = True
        self.layer.options = self.layers
        self.layer.value = max(self.layers, key=lambda name: self.layer_info[name]["weights"])  # the sharpest split
        self.syncing = False
        traces = [go.Bar(x=[], y=[], name="kept by Z", marker=dict(color="#1f77b4")),
                  go.Bar(x=[], y=[], name="pruned by Z (driven to 0)", marker=dict(color="#ff7f0e"))]
        layout = base_layout("Weights W at a Z/U round", "weight value", "count (log scale)", barmode="stack",
                             bargap=0)
        layout.update(height=440, legend={**LEGEND_BELOW, "traceorder": "normal"})  # as tall as Residuals beside it
        layout["margin"]["b"] = 75
        layout["yaxis"].update(type="log", range=self.count_range(1), dtick=1)  # ticks at 1, 10, 100, ...
        return go.Figure(data=traces, layout=layout)

    @staticmethod
    def count_range(top: int) -> list[float]:
        """The log axis' range (in decades) from COUNT_FLOOR to a bar of `top` weights with room above it."""
        return [math.log10(COUNT_FLOOR), math.log10(max(top, 10) * 2)]

    def on_pick(self, change) -> None:
        if not self.syncing:
            self.follow = self.round.value >= self.round.max
            self.redraw()

    def on_admm_round(self, event) -> None:
        self.records.append({
            "phase": (event.stage, event.phase), "round": event.round,
            "label": f"stage {event.stage} {event.phase}, round {event.round}",
            "layers": {name: (v["edges"], v["w_counts"], v["kept_counts"], v.get("levels"))
                       for name, v in event.layers.items()}})

    def widened(self, index: int, layer: str) -> str:
        """Where in its phase the bins of record `index` got their range, if not at the phase's first round."""
        record = self.records[index]
        top = record["layers"][layer][0][-1]
        for before in reversed(self.records[:index]):
            bins = before["layers"].get(layer)
            if before["phase"] != record["phase"] or bins is None:
                return ""
            if bins[0][-1] != top:
                return (f"; widened at round {before['round'] + 1} from ±{bins[0][-1]:.3g}: a weight left that "
                        "range")
        return ""

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
        layer = self.layer.value
        record = self.records[self.round.value - 1] if n else None
        bins = record["layers"].get(layer) if record else None
        levels = []
        if bins is None:
            self.info.value = ("<i>no ADMM round yet: run ADMM to see the weights split</i>" if not n else
                               f"<i>{escape(layer)} has no target in {record['label']}</i>")
            centres = kept = pruned = []
            width, top, x_range = None, 1, self.x_range
        else:
            edges, counts, kept, levels = bins
            levels = levels or []
            lo, hi = min([edges[0], *levels]), max([edges[-1], *levels])
            x_range = [lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo)]  # every bin and level, none on the frame
            centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            pruned = [c - k for c, k in zip(counts, kept)]
            width, top = edges[1] - edges[0], max(counts)
            shown = ("" if not levels else f"; Z's {len(levels)} levels α·Q (dotted)"
                     + (": " + ", ".join(f"{v:.3g}" for v in levels) if len(levels) <= 8 else ""))
            self.info.value = (f"{record['label']}: {sum(counts):,} weights in {escape(layer)}, Z keeps "
                               f"{sum(kept):,}; {len(counts)} bins of {width:.3g} over ±{edges[-1]:.3g}"
                               f"{self.widened(self.round.value - 1, layer)}{shown}")
        with updating(self.figure):
            for trace, y in zip(self.figure.data, (kept, pruned)):
                trace.x = centres
                trace.y = y
                trace.width = width
            self.figure.layout.yaxis.range = self.count_range(top)
            if x_range != self.x_range:
                self.x_range = self.figure.layout.xaxis.range = x_range
            self.figure.layout.shapes = [
                dict(type="line", x0=v, x1=v, xref="x", y0=0, y1=1, yref="paper", layer="above",
                     line=dict(color="#444444", width=1, dash="dot"), name="levels of Z (α·Q)",
                     legendgroup="levels", showlegend=i == 0) for i, v in enumerate(levels)]


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
