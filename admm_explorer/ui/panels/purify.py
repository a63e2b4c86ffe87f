"""P-RM: purification, unused path removal and physical shrink, with a before/after table."""
from __future__ import annotations

from html import escape

import ipywidgets as w

from ...recipe import parse_stage
from .base import Panel, button, labelled, table


def ratio(before, after) -> str:
    return f"{before / after:.2f}×" if before is not None and after else ""


class PurifyPanel(Panel):
    title = "P-RM"

    def __init__(self, controller, retrain_epochs: float = 2.0):
        super().__init__(controller)
        self.tolerance = labelled(w.FloatText(value=0.1, step=0.05),
                                  "Tolerance (points)", "accuracy purification may lose, in percentage points "
                                                        "(0.1 = 0.1 points); the sweep keeps the largest threshold up to which "
                                                        "the accuracy stays within it")
        self.retrain_epochs = labelled(w.FloatText(value=retrain_epochs, step=0.5),
                                       "Retrain epochs", "short masked retraining after purification")
        self.latency = w.Checkbox(value=True, description="Measure CPU latency (batch 1 and 64)", indent=False,
                                  tooltip="time the model before and after, on the CPU")
        self.b_purify = button("Purify (P-RM)", "remove weak filters and columns within the tolerance, then every "
                                                "channel no path uses, then shrink the model physically", "primary")
        self.b_purify.on_click(self.action(lambda _: self.controller.run(self.spec())))
        self.result = w.HTML("<i>not purified yet: prune (Run ADMM, Retrain), then Purify (P-RM)</i>")
        self.body.children = [self.tolerance, self.retrain_epochs, self.latency, self.b_purify, self.result]
        self.locked = [self.b_purify]
        self.report = None

    def spec(self):
        return parse_stage({"kind": "purify", "tolerance": self.tolerance.value / 100,
                            "retrain_epochs": self.retrain_epochs.value, "latency": self.latency.value}, "Purify")

    def on_activity(self, event) -> None:
        super().on_activity(event)
        if event.busy and event.what == "purify":
            self.report = "running"

    def on_purify_done(self, event) -> None:
        self.report = event

    def on_run_started(self, event) -> None:
        self.report = None

    def render(self) -> None:
        e = self.report
        if e is None:
            return
        if e == "running":
            self.result.value = "<i>purifying: threshold sweep, retrain, unused path removal, shrink …</i>"
            return
        b, a = e.before, e.after
        rows = [["parameters", f"{b['params']:,}", f"{a['params']:,}", ratio(b["params"], a["params"])],
                ["FLOPs (MACs)", f"{b['macs']:,}", f"{a['macs']:,}", ratio(b["macs"], a["macs"])],
                ["size", f"{b['size_bytes'] / 1024:,.1f} KiB", f"{a['size_bytes'] / 1024:,.1f} KiB",
                 ratio(b["size_bytes"], a["size_bytes"])],
                ["accuracy", f"{b['accuracy']:.2%}", f"{a['accuracy']:.2%}",
                 f"{(a['accuracy'] - b['accuracy']) * 100:+.2f} pts"]]
        if "validation_accuracy" in b:
            rows.append(["validation accuracy", f"{b['validation_accuracy']:.2%}", f"{a['validation_accuracy']:.2%}",
                         f"{(a['validation_accuracy'] - b['validation_accuracy']) * 100:+.2f} pts"])
        for key, label in (("latency_ms_b1", "latency, batch 1"), ("latency_ms_b64", "latency, batch 64")):
            if b.get(key) is not None and a.get(key) is not None:
                rows.append([label, f"{b[key]:.3f} ms", f"{a[key]:.3f} ms", ratio(b[key], a[key])])
        removed = ", ".join(f"{layer}: {n.get('filters', 0)} filters, {n.get('channels', 0)} inputs"
                            for layer, n in e.removed.items()) or "nothing"
        self.result.value = (table(["", "before", "after", "ratio"], rows) +
                             f"<div>threshold τ = {e.tau:g} (within {e.tolerance * 100:g} points on the "
                             f"{e.selected_on} set); removed: "
                             f"{escape(removed)}</div>"
                             + ("" if e.retrain_kept else "<div>the short retrain lowered the accuracy and was "
                                                          "dropped: the purified network is kept as it was</div>"))
