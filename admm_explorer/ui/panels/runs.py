"""Runs: the run folders on disk (this dashboard's and `admm-explorer run`'s), reopened or branched, and two
whole pipelines compared: accuracy over all their stages on one axis, final weights side by side."""
from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path

import ipywidgets as w
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ...engine.events import from_dict
from ...engine.run import list_runs, own_checkpoint
from ...files import load_weights_only, read_events
from .base import Panel, button, labelled, table
from .figures import COUNT_FLOOR, FONT, EpochAxis, figure_widget, updating
from .setup import resolve

SHOWN = 12  # run folders listed (newest first)
BINS = 60


def pipeline(out: Path) -> dict:
    """What the comparison draws of a run folder: test accuracy at every evaluation with x in epochs across
    all its stages, where each stage began, its prunable layers and the weights of its last checkpoint."""
    events = [e for e in map(from_dict, read_events(out / "metrics.jsonl")[0]) if e is not None]
    axis, x, accuracy, starts, layers = EpochAxis(), [], [], [], []
    for event in events:
        if event.kind == "run_started" and not layers:
            layers = list(event.layers)
        elif event.kind == "stage_started":
            starts.append((axis.last, event.stage_kind))
        elif event.kind == "evaluation_done":
            x.append(axis.at(event))
            accuracy.append(event.test_accuracy)
    done = json.loads((out / "state.json").read_text()).get("stages", [])
    weights = {}
    if done and done[-1]["checkpoint"]:
        state = load_weights_only(own_checkpoint(out, done[-1]["checkpoint"]))["state_dict"]
        weights = {name: state[f"{name}.weight"].flatten() for name in layers if f"{name}.weight" in state}
    return {"x": x, "accuracy": accuracy, "starts": starts, "layers": layers, "weights": weights,
            "stages": " → ".join(row["kind"] for row in done)}


class RunsPanel(Panel):
    title = "Runs"

    def __init__(self, controller):
        super().__init__(controller)
        self.runs: list[dict] = []  # stages seen in this page (run, reopened or replayed), in order
        self.on_disk: list[dict] = []
        self.compared: dict[str, dict] = {}  # folder -> pipeline(), read again when the folder was written
        self.setup = ""
        self.test_set = ""
        self.syncing = False
        root = controller.runs
        self.folder = labelled(w.Text(value=str(root) if root is not None else ""), "Runs folder",
                               "where each setup's run folder is written from its first stage on (the same files "
                               "`admm-explorer run --out` writes); a new folder applies from the next setup", "6.5em")
        self.b_refresh = button("Refresh", "list the run folders in the runs folder again")
        self.pick = labelled(w.Dropdown(options=[]), "Run", "a run folder to open or branch", "6.5em")
        self.after = labelled(w.Dropdown(options=[]), "Branch after", "the stage after which the branch goes its "
                                                                      "own way", "6.5em")
        self.b_open = button("Open and continue", "replay the run's curves, histograms and tables, load its last "
                                                  "finished stage, and append the next stages to the same folder",
                             "info")
        self.b_branch = button("Branch", "a new run folder with the run's stages up to 'Branch after' (their "
                                         "checkpoints and curves), opened to go on another way: e.g. Magnitude "
                                         "after the pretrain that ADMM started from", "info")
        self.folder.observe(self.action(self.on_folder), "value")
        self.pick.observe(self.action(lambda _: None if self.syncing else self.redraw()), "value")
        self.b_refresh.on_click(self.action(lambda _: self.refresh()))
        self.b_open.on_click(self.action(lambda _: self.controller.open_run(self.pick.value)))
        self.b_branch.on_click(self.action(lambda _: self.controller.branch(self.pick.value, self.after.value)))
        self.disk = w.HTML()
        self.list = w.HTML("<i>no stage run in this page yet</i>")
        self.a = labelled(w.Dropdown(options=[]), "Run A", "first pipeline (blue)", "4.5em")
        self.b = labelled(w.Dropdown(options=[]), "Run B", "second pipeline (red)", "4.5em")
        self.layer = labelled(w.Dropdown(options=[]), "Layer", "whose final weights to compare", "4.5em")
        self.picked = False  # the user chose A/B: stop following the newest two runs
        for control in (self.a, self.b, self.layer):
            control.observe(self.action(self.on_pick), "value")
        fig = make_subplots(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], row_heights=[0.55, 0.45],
                            vertical_spacing=0.16, horizontal_spacing=0.1,
                            subplot_titles=("test accuracy over the whole pipeline", "A: final weights",
                                            "B: final weights"))
        for name, color, dash in (("A", "#1f77b4", None), ("B", "#d62728", "dash")):
            fig.add_trace(go.Scatter(x=[], y=[], name=f"{name} test accuracy", mode="lines+markers",
                                     line=dict(color=color, dash=dash), marker=dict(size=4)), row=1, col=1)
        for col, (name, color) in enumerate((("A", "#1f77b4"), ("B", "#d62728")), 1):
            fig.add_trace(go.Bar(x=[], y=[], name=f"{name} nonzero weights", marker=dict(color=color),
                                 showlegend=False), row=2, col=col)
        fig.update_layout(title=dict(text="Two runs compared", x=0.02, font=dict(size=14)), height=520, font=FONT,
                          margin=dict(l=60, r=10, t=60, b=45), template="plotly_white", bargap=0,
                          legend=dict(orientation="h", y=1.08, x=1, xanchor="right"))
        fig.update_xaxes(title_text="epoch (all stages of the run)", row=1, col=1)
        fig.update_yaxes(title_text="test accuracy", tickformat=".1%", row=1, col=1)
        for col in (1, 2):
            fig.update_xaxes(title_text="weight value", row=2, col=col)
            # a bin of one weight stays a visible bar: the log axis reaches down to the histogram panel's floor
            fig.update_yaxes(title_text="count (log scale)", type="log", autorangeoptions=dict(include=[COUNT_FLOOR]),
                             row=2, col=col)
        self.figure = figure_widget(fig)
        row = dict(layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.body.children = [self.folder, w.HBox([self.pick, self.b_refresh], **row),
                              w.HBox([self.b_open, self.after, self.b_branch], **row), self.disk, self.list,
                              w.GridBox([self.a, self.b, self.layer], layout=w.Layout(
                                  grid_template_columns="repeat(3, minmax(0, 1fr))", grid_gap="0 12px")),
                              self.figure]
        self.locked = [self.folder, self.pick, self.after, self.b_open, self.b_branch]
        self.refresh()

    def on_folder(self, change) -> None:
        text = self.folder.value.strip()
        self.controller.runs = resolve(text) if text else None
        self.refresh()

    def read_disk(self) -> None:
        self.on_disk = list_runs(self.controller.runs)[:SHOWN] if self.controller.runs is not None else []

    def refresh(self) -> None:
        """Read the runs folder again (also after every stage: the current run's folder changes)."""
        self.read_disk()
        self.redraw()

    def on_pick(self, change) -> None:
        if not self.syncing:
            self.picked = True
            self.redraw()

    def on_run_started(self, event) -> None:
        self.setup = f"{event.model} · {event.dataset}"
        self.test_set = event.test_set
        self.read_disk()

    def on_stage_started(self, event) -> None:
        folder = self.controller.folder
        self.runs.append({"id": len(self.runs) + 1, "kind": event.stage_kind, "stage": event.stage,
                          "run": folder.out.name if folder is not None else self.setup, "test_set": self.test_set,
                          "epochs": event.epochs, "status": "running", "accuracy": None, "compression": None,
                          "seconds": None})

    def on_stage_ended(self, event) -> None:
        self.runs[-1].update(status=event.status, accuracy=event.accuracy, compression=event.compression,
                             seconds=event.seconds)

    def on_activity(self, event) -> None:
        super().on_activity(event)
        if not event.busy:  # the stage's end is in its run folder by now
            self.read_disk()
            if self.runs and self.runs[-1]["status"] == "running":
                self.runs[-1]["status"] = "failed"

    def compare(self, folder: str | None) -> dict | None:
        """pipeline() of a listed run, cached until the folder is written again."""
        run = next((r for r in self.on_disk if str(r["folder"]) == folder), None)
        if run is None:
            return None
        cached = self.compared.get(folder)
        if cached is None or cached["time"] != run["time"]:
            cached = self.compared[folder] = {**pipeline(run["folder"]), "time": run["time"],
                                              "name": run["name"]}
        return cached

    def render(self) -> None:
        current = self.controller.folder.out if self.controller.folder is not None else None
        rows = [[r["name"] + (" (this page)" if r["folder"] == current else ""), r["model"], r["dataset"],
                 r["test_set"], " → ".join(r["stages"]) or "—", r["status"],
                 f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "",
                 f"{r['compression']:.1f}×" if r["compression"] is not None else "",
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(r["time"]))] for r in self.on_disk]
        root = self.controller.runs
        self.disk.value = (table(["run folder", "model", "data", "test set", "finished stages", "status", "test acc.",
                                  "compression", "last written"], rows) if rows else
                           f"<i>no run folder in {escape(str(root))} yet: the first stage of a setup writes one</i>"
                           if root is not None else "<i>no runs folder: nothing is written</i>")
        stages = [[f"#{r['id']}", r["kind"], f"{r['epochs']:g}", r["status"],
                   f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "",
                   f"{r['compression']:.1f}×" if r["compression"] is not None else "",
                   f"{r['seconds']:.0f} s" if r["seconds"] is not None else "", r["run"], r["test_set"]]
                  for r in self.runs]
        if stages:
            self.list.value = table(["#", "stage", "epochs", "status", "test acc.", "compression", "time", "run folder",
                                     "test set"], stages, "stages run in this page")
        folders = [(r["name"], str(r["folder"])) for r in self.on_disk]
        self.syncing = True
        try:
            chosen = self.pick.value
            self.pick.options = folders
            self.pick.value = chosen if chosen in {f for _, f in folders} else folders[0][1] if folders else None
            picked = next((r for r in self.on_disk if str(r["folder"]) == self.pick.value), None)
            after = self.after.value
            self.after.options = [(f"{i} {kind}", i + 1) for i, kind in enumerate(picked["stages"] if picked else [])]
            count = len(self.after.options)
            self.after.value = after if after is not None and after <= count else 1 if count else None
            a, b = self.a.value, self.b.value
            self.a.options, self.b.options = folders, folders
            if not self.picked and folders:
                a, b = folders[min(1, len(folders) - 1)][1], folders[0][1]  # the newest two
            self.a.value, self.b.value = (a, b) if {a, b} <= {f for _, f in folders} else (None, None)
            runs = [self.compare(self.a.value), self.compare(self.b.value)]
            layers = next((run["layers"] for run in runs if run is not None), [])
            if list(self.layer.options) != layers:
                self.layer.options = layers
                self.layer.value = max(layers, key=lambda n: runs[0]["weights"][n].numel()
                                       if runs[0] and n in runs[0]["weights"] else 0) if layers else None
        finally:
            self.syncing = False
        self.draw(runs)

    def draw(self, runs: list[dict | None]) -> None:
        layer = self.layer.value
        kept = [run["weights"][layer][run["weights"][layer] != 0] if run and layer in run["weights"] else None
                for run in runs]
        present = [k for k in kept if k is not None and k.numel()]
        low = min(float(k.min()) for k in present) if present else 0.0
        high = max(float(k.max()) for k in present) if present else 1.0
        edges = torch.linspace(low, high if high > low else low + 1, BINS + 1)  # shared: the two sides compare
        centres = ((edges[1:] + edges[:-1]) / 2).tolist()
        titles = []
        with updating(self.figure):
            for i, run in enumerate(runs):
                self.figure.data[i].x = list(run["x"]) if run else []
                self.figure.data[i].y = list(run["accuracy"]) if run else []
                bars = self.figure.data[2 + i]
                if kept[i] is None:
                    bars.x, bars.y = [], []
                    titles.append(f"{'AB'[i]}: no {layer or 'layer'} weights")
                    continue
                counts = torch.histogram(kept[i].float(), bins=edges).hist if kept[i].numel() else torch.zeros(BINS)
                bars.x, bars.y, bars.width = centres, [c or None for c in counts.tolist()], float(edges[1] - edges[0])
                total = run["weights"][layer].numel()
                titles.append(f"{'AB'[i]} {run['name']}: {layer} keeps {kept[i].numel():,} of {total:,}")
            for annotation, text in zip(self.figure.layout.annotations[1:], titles):
                annotation.text = escape(text)
            self.figure.layout.shapes = [dict(type="line", xref="x", yref="y domain", x0=x, x1=x, y0=0, y1=1,
                                              line=dict(color="#bbbbbb", width=1, dash="dash"))
                                         for run in runs if run for x, _ in run["starts"]]
            self.figure.layout.title.text = escape(" vs ".join(f"{'AB'[i]}: {run['stages']}" for i, run in
                                                               enumerate(runs) if run) or "Two runs compared")
