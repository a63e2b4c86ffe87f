"""Runs: every stage run in this dashboard (across setups), and two runs' curves overlaid."""
from __future__ import annotations

import ipywidgets as w
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .base import Panel, labelled, table
from .figures import FONT, EpochAxis, figure_widget, updating


class RunsPanel(Panel):
    title = "Runs"

    def __init__(self, controller):
        super().__init__(controller)
        self.runs: list[dict] = []
        self.setup = ""
        self.sessions = 0
        self.picked = False  # the user chose A/B: stop following the latest two runs
        self.syncing = False
        self.a = labelled(w.Dropdown(options=[]), "Run A", "first run to overlay (solid lines)", "3.5em")
        self.b = labelled(w.Dropdown(options=[]), "Run B", "second run to overlay (dashed lines)", "3.5em")
        for control in (self.a, self.b):
            control.observe(self.action(self.on_pick), "value")
        self.list = w.HTML("<i>no runs yet</i>")
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12)
        for col, what in ((1, "test accuracy"), (2, "train loss")):
            for name, color, dash in (("A", "#1f77b4", None), ("B", "#d62728", "dash")):
                fig.add_trace(go.Scatter(x=[], y=[], name=f"{name} {what}", mode="lines+markers",
                                         line=dict(color=color, dash=dash), marker=dict(size=5)), row=1, col=col)
        fig.update_layout(title=dict(text="Two runs overlaid", x=0.02, font=dict(size=14)), height=300, font=FONT,
                          margin=dict(l=60, r=10, t=40, b=45), template="plotly_white")
        fig.update_xaxes(title_text="epoch of the run")
        fig.update_yaxes(title_text="test accuracy", tickformat=".1%", range=[0, 1], row=1, col=1)
        fig.update_yaxes(title_text="train cross-entropy (log scale)", type="log", row=1, col=2)
        self.figure = figure_widget(fig)
        self.body.children = [self.list, w.GridBox([self.a, self.b], layout=w.Layout(
            grid_template_columns="repeat(2, minmax(0, 1fr))", grid_gap="0 12px")), self.figure]

    def on_pick(self, change) -> None:
        if not self.syncing:
            self.picked = True
            self.redraw()

    def on_run_started(self, event) -> None:
        self.sessions += 1
        self.setup = f"{event.model} · {event.dataset} (setup {self.sessions})"

    def on_stage_started(self, event) -> None:
        self.runs.append({"id": len(self.runs) + 1, "kind": event.stage_kind, "setup": self.setup,
                          "epochs": event.epochs, "status": "running", "axis": EpochAxis(), "x": [], "test": [],
                          "loss": [], "accuracy": None, "compression": None, "seconds": None})

    def on_evaluation_done(self, event) -> None:
        run = self.runs[-1]
        run["x"].append(run["axis"].at(event))
        run["test"].append(event.test_accuracy)
        run["loss"].append(event.train_loss)

    def on_stage_ended(self, event) -> None:
        self.runs[-1].update(status=event.status, accuracy=event.accuracy, compression=event.compression,
                             seconds=event.seconds)

    def on_activity(self, event) -> None:
        super().on_activity(event)
        if not event.busy and self.runs and self.runs[-1]["status"] == "running":
            self.runs[-1]["status"] = "failed"

    def label(self, run: dict) -> str:
        acc = f" · {run['accuracy']:.2%}" if run["accuracy"] is not None else ""
        return f"#{run['id']} {run['kind']}{acc} · {run['setup']}"

    def render(self) -> None:
        rows = [[f"#{r['id']}", r["kind"], f"{r['epochs']:g}", r["status"],
                 f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "",
                 f"{r['compression']:.1f}×" if r["compression"] is not None else "",
                 f"{r['seconds']:.0f} s" if r["seconds"] is not None else "", r["setup"]] for r in self.runs]
        if rows:
            self.list.value = table(["run", "stage", "epochs", "status", "test acc.", "compression", "time", "setup"],
                                    rows)
        options = [(self.label(r), i) for i, r in enumerate(self.runs)]
        self.syncing = True
        try:
            a, b = self.a.value, self.b.value
            self.a.options, self.b.options = options, options
            if not self.picked and options:
                a, b = max(len(options) - 2, 0), len(options) - 1
            self.a.value, self.b.value = a, b
        finally:
            self.syncing = False
        with updating(self.figure):
            for i, key in enumerate((self.a.value, self.b.value)):
                run = self.runs[key] if key is not None else {"x": [], "test": [], "loss": []}
                self.figure.data[i].x, self.figure.data[i].y = list(run["x"]), list(run["test"])
                self.figure.data[2 + i].x, self.figure.data[2 + i].y = list(run["x"]), list(run["loss"])
            if self.runs:
                self.figure.layout.yaxis.autorange = True
