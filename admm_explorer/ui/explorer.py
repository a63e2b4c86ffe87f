"""The Explorer: the panels laid out around one Controller. `Explorer()` as a cell's last line shows it."""
from __future__ import annotations

from pathlib import Path

import ipywidgets as w

from .controller import Controller
from .panels.export import ExportPanel
from .panels.figures import AccuracyPanel, HistogramPanel, ResidualsPanel, SparsityPanel
from .panels.notices import NoticePanel
from .panels.purify import PurifyPanel
from .panels.runs import RunsPanel
from .panels.setup import SetupPanel, resolve
from .panels.stages import StagesPanel
from .panels.targets import TargetsPanel

CSS = """<style>
.ae-root { font-size: 13px; container-type: inline-size; }
.ae-root .ae-title { font-size: 15px; color: #24292f; }
.ae-root table.ae-table { border-collapse: collapse; margin: 4px 0; font-size: 12px; }
.ae-root table.ae-table th, .ae-root table.ae-table td { padding: 2px 8px; border-bottom: 1px solid #e1e4e8;
  text-align: right; white-space: nowrap; }
.ae-root table.ae-table th:first-child, .ae-root table.ae-table td:first-child { text-align: left; }
.ae-root .widget-html-content { line-height: 1.35; }
.ae-root .ae-field-error { color: #cf222e; font-size: 12px; line-height: 1.3; white-space: normal; }
.ae-root .ae-invalid input, .ae-root .ae-invalid select { border-color: #cf222e; box-shadow: 0 0 0 1px #cf222e; }
.ae-root .widget-html-content:has(> table.ae-table) { overflow-x: auto; }
/* Targets: a long layer name wraps after its dots (never over the Shape column); a narrow page scrolls the
   table inside its panel rather than cutting its last columns */
.ae-root .ae-targetspanel .widget-gridbox { overflow-x: auto; }
.ae-root .ae-targetspanel .widget-gridbox > .widget-html:nth-child(8n+1) .widget-html-content {
  overflow-wrap: anywhere; }
.ae-root .ae-targetspanel .widget-gridbox .widget-readout { min-width: 3.6em; }  /* 0.900: the track keeps the rest */
/* the Weight histogram's Layer list and Round slider share a row: short labels, the list as wide as the slider */
.ae-root .ae-histogrampanel .widget-hbox > .widget-inline-hbox { flex: 1 1 0; min-width: 0; }
.ae-root .ae-histogrampanel .widget-hbox > .widget-inline-hbox > .widget-label { width: auto !important; }
/* a toggle button is at least as wide as its text (Setup's "pretrain now") */
.ae-root .widget-toggle-button { min-width: fit-content; }
/* The page's three rows of panels follow the Explorer's own width (not the window's: JupyterLab's side bar
   takes part of it): one panel a row when narrow; Setup beside Targets over Stages from 1130 px (a projector's
   1280 px, JupyterLab at 1600 px with the file browser open); Setup, Targets and Stages side by side from
   1610 px. The minimum widths keep every column of Targets and every field of Stages whole. */
.ae-root .ae-grid { display: grid; grid-template-columns: minmax(0, 1fr); align-items: stretch; }
@container (min-width: 1130px) {
  .ae-root .ae-top { grid-template-columns: minmax(320px, 340px) minmax(790px, 1fr);
    grid-template-areas: "setup targets" "setup stages"; grid-template-rows: auto 1fr; }
  .ae-root .ae-top > .ae-setuppanel { grid-area: setup; }
  .ae-root .ae-top > .ae-targetspanel { grid-area: targets; }
  .ae-root .ae-top > .ae-stagespanel { grid-area: stages; }
  .ae-root .ae-plots { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .ae-root .ae-bottom { grid-template-columns: minmax(0, 1.3fr) minmax(0, 1fr) minmax(0, 2fr); }
}
@container (min-width: 1610px) {
  .ae-root .ae-top { grid-template-columns: minmax(320px, 1fr) minmax(790px, 2.4fr) minmax(470px, 1.5fr);
    grid-template-areas: "setup targets stages"; grid-template-rows: auto; }
}
</style>"""
HEADER = ("<h2 style='margin:4px 0'>ADMM pruning explorer</h2><div style='color:#57606a'>Pick the targets, press "
          "<b>Pretrain</b>, then <b>Run ADMM</b>: round by round the weight histogram splits into a spike at zero (the "
          "weights Z drops) and the weights Z keeps; the primal residual ‖W − Z‖ of the large layers falls as W "
          "approaches Z, and the dual residual grows with ρ. "
          "<b>Retrain</b> prunes for real; <b>Purify (P-RM)</b> shrinks the network. <b>Stop</b> ends a stage after "
          "the current batch and keeps what it computed. Each panel's <b>Explain</b> says what it shows, the "
          "equation behind it and what to look for; new to ADMM? Start with the course's "
          "<a href='01-admm-from-scratch.ipynb' target='_blank' rel='noopener'>lesson 01</a>.</div>")


def grid(name: str, children: list[w.Widget]) -> w.GridBox:
    """A row of panels; its columns are in CSS (.ae-<name>), set by the Explorer's width."""
    box = w.GridBox(children, layout=w.Layout(width="100%"))
    box.add_class("ae-grid")
    box.add_class(f"ae-{name}")
    return box


class Explorer:
    """Setup, Targets, Stages, the live plots, P-RM, Export and Runs over one engine Session.

    `recipe` fields (model, dataset, device, seed, test_root, data_root) preset the Setup panel, `stages`
    the Stages panel's settings; the default session (model and data, no training) is built at once. Each
    setup's stages are written to a run folder under `runs` (relative to the folder the dashboard was
    started in; None: nothing is written).
    """

    def __init__(self, interval: float = 0.1, stages: dict | None = None, purify_retrain_epochs: float = 2.0,
                 runs: str | Path | None = "runs", **recipe):
        c = self.controller = Controller(interval, runs=resolve(str(runs)) if runs is not None else None)
        self.notices = NoticePanel(c)
        self.stages = StagesPanel(c, **(stages or {}))
        self.setup = SetupPanel(c, pretrain=self.stages.pretrain, **recipe)
        self.targets = TargetsPanel(c)
        self.residuals = ResidualsPanel(c)
        self.histogram = HistogramPanel(c)
        self.accuracy = AccuracyPanel(c)
        self.sparsity = SparsityPanel(c)
        self.purify = PurifyPanel(c, retrain_epochs=purify_retrain_epochs)
        self.export = ExportPanel(c)
        self.runs = RunsPanel(c)
        self.widget = w.VBox([
            w.HTML(CSS + HEADER), self.notices.widget,
            grid("top", [self.setup.widget, self.targets.widget, self.stages.widget]),
            grid("plots", [self.residuals.widget, self.histogram.widget, self.accuracy.widget, self.sparsity.widget]),
            grid("bottom", [self.purify.widget, self.export.widget, self.runs.widget]),
        ], layout=w.Layout(width="100%"))
        self.widget.add_class("ae-root")
        c.guard(self.setup.apply)()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
