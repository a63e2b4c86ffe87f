"""Runs: the run folders on disk (this dashboard's and `admm-explorer run`'s), reopened with all their curves,
and the stages seen in this page, two of them overlaid."""
from __future__ import annotations

import time
from html import escape

import ipywidgets as w
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...engine.run import list_runs
from .base import Panel, button, labelled, table
from .figures import FONT, EpochAxis, figure_widget, updating
from .setup import resolve

SHOWN = 12  # run folders listed (newest first)


class RunsPanel(Panel):
    title = "Runs"

    def __init__(self, controller):
        super().__init__(controller)
        self.runs: list[dict] = []  # stages seen in this page (run, reopened or replayed), in order
        self.on_disk: list[dict] = []
        self.setup = ""
        self.test_set = ""
        self.picked = False  # the user chose A/B: stop following the latest two runs
        self.syncing = False
        root = controller.runs
        self.folder = labelled(w.Text(value=str(root) if root is not None else ""), "Runs folder",
                               "where each setup's run folder is written from its first stage on (the same files "
                               "`admm-explorer run --out` writes); a new folder applies from the next setup", "6.5em")
        self.b_refresh = button("Refresh", "list the run folders in the runs folder again")
        self.pick = labelled(w.Dropdown(options=[]), "Run", "a run folder to open", "6.5em")
        self.b_open = button("Open and continue", "replay the run's curves, histograms and tables, load its last "
                                                  "finished stage, and append the next stages to the same folder",
                             "info")
        self.folder.observe(self.action(self.on_folder), "value")
        self.b_refresh.on_click(self.action(lambda _: self.refresh()))
        self.b_open.on_click(self.action(lambda _: self.controller.open_run(self.pick.value)))
        self.disk = w.HTML()
        self.a = labelled(w.Dropdown(options=[]), "Stage A", "first stage to overlay (solid lines)", "4.5em")
        self.b = labelled(w.Dropdown(options=[]), "Stage B", "second stage to overlay (dashed lines)", "4.5em")
        for control in (self.a, self.b):
            control.observe(self.action(self.on_pick), "value")
        self.list = w.HTML("<i>no stage run in this page yet</i>")
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12)
        for col, what in ((1, "test accuracy"), (2, "train loss")):
            for name, color, dash in (("A", "#1f77b4", None), ("B", "#d62728", "dash")):
                fig.add_trace(go.Scatter(x=[], y=[], name=f"{name} {what}", mode="lines+markers",
                                         line=dict(color=color, dash=dash), marker=dict(size=5)), row=1, col=col)
        fig.update_layout(title=dict(text="Two stages overlaid", x=0.02, font=dict(size=14)), height=300, font=FONT,
                          margin=dict(l=60, r=10, t=40, b=45), template="plotly_white")
        fig.update_xaxes(title_text="epoch of the stage")
        fig.update_yaxes(title_text="test accuracy", tickformat=".1%", range=[0, 1], row=1, col=1)
        fig.update_yaxes(title_text="train cross-entropy (log scale)", type="log", row=1, col=2)
        self.figure = figure_widget(fig)
        self.body.children = [self.folder, w.HBox([self.pick, self.b_open, self.b_refresh],
                                                  layout=w.Layout(flex_flow="row wrap", align_items="center")),
                              self.disk, self.list,
                              w.GridBox([self.a, self.b], layout=w.Layout(
                                  grid_template_columns="repeat(2, minmax(0, 1fr))", grid_gap="0 12px")), self.figure]
        self.locked = [self.folder, self.pick, self.b_open]
        self.refresh()

    def on_folder(self, change) -> None:
        text = self.folder.value.strip()
        self.controller.runs = resolve(text) if text else None
        self.refresh()

    def refresh(self) -> None:
        """Read the runs folder again (also after every stage: the current run's folder changes)."""
        root = self.controller.runs
        self.on_disk = list_runs(root) if root is not None else []
        self.redraw()

    def on_pick(self, change) -> None:
        if not self.syncing:
            self.picked = True
            self.redraw()

    def on_run_started(self, event) -> None:
        self.setup = f"{event.model} · {event.dataset}"
        self.test_set = event.test_set
        self.on_disk = list_runs(self.controller.runs) if self.controller.runs is not None else []

    def on_stage_started(self, event) -> None:
        folder = self.controller.folder
        self.runs.append({"id": len(self.runs) + 1, "kind": event.stage_kind, "stage": event.stage,
                          "setup": folder.out.name if folder is not None else self.setup, "test_set": self.test_set,
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
        if not event.busy:  # the stage's end is in its run folder by now
            self.on_disk = list_runs(self.controller.runs) if self.controller.runs is not None else []
            if self.runs and self.runs[-1]["status"] == "running":
                self.runs[-1]["status"] = "failed"

    def label(self, run: dict) -> str:
        acc = f" · {run['accuracy']:.2%}" if run["accuracy"] is not None else ""
        return f"#{run['id']} {run['kind']}{acc} · {run['setup']}"

    def render(self) -> None:
        current = self.controller.folder.out if self.controller.folder is not None else None
        rows = [[r["name"] + (" (this page)" if r["folder"] == current else ""), r["model"], r["dataset"],
                 r["test_set"], " → ".join(r["stages"]) or "—", r["status"],
                 f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "",
                 f"{r['compression']:.1f}×" if r["compression"] is not None else "",
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(r["time"]))] for r in self.on_disk[:SHOWN]]
        root = self.controller.runs
        self.disk.value = (table(["run folder", "model", "data", "test set", "finished stages", "status", "test acc.",
                                  "compression", "last written"], rows) if rows else
                           f"<i>no run folder in {escape(str(root))} yet: the first stage of a setup writes one</i>"
                           if root is not None else "<i>no runs folder: nothing is written</i>")
        self.syncing = True
        try:
            self.pick.options = [(r["name"], str(r["folder"])) for r in self.on_disk[:SHOWN]]
        finally:
            self.syncing = False
        rows = [[f"#{r['id']}", r["kind"], f"{r['epochs']:g}", r["status"],
                 f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "",
                 f"{r['compression']:.1f}×" if r["compression"] is not None else "",
                 f"{r['seconds']:.0f} s" if r["seconds"] is not None else "", r["setup"], r["test_set"]]
                for r in self.runs]
        if rows:
            self.list.value = table(["stage", "kind", "epochs", "status", "test acc.", "compression", "time", "run",
                                     "test set"], rows)
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
