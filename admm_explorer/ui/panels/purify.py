"""P-RM: purification, unused path removal and physical shrink, with a before/after table."""
from __future__ import annotations

from html import escape

import ipywidgets as w

from ...recipe import parse_stage
from .base import Panel, button, labelled, table


NOT_YET = "<i>not purified yet: prune (Run ADMM, Retrain), then Purify (P-RM)</i>"

NO_VALIDATION = ("<div style='color:#9a6700'>No validation set (Setup: Validation 0): τ and the retrain were chosen "
                 "on the test set, so the accuracy after P-RM is optimistic. Hold out training examples to choose on "
                 "them instead.</div>")


def ratio(before, after) -> str:
    return f"{before / after:.2f}×" if before is not None and after else ""


def unchanged(e) -> str:
    """Why a purify that changed nothing found nothing: the sweep's first threshold cost too much, or the
    chosen one found no weak filter, column or unused channel."""
    reference = e.before.get("validation_accuracy", e.before["accuracy"])  # what the sweep was judged against
    if not e.tau and e.sweep:
        first = e.sweep[0]
        why = (f"the smallest threshold, τ = {first['tau']:g}, already costs {(reference - first['accuracy']) * 100:.2f} "
               f"points on the {e.selected_on} set, more than the tolerance of {e.tolerance * 100:g}")
    else:
        why = f"at τ = {e.tau:g} no filter or column is weak and no channel is unused"
    return (f"{why}. The network is unchanged: {e.before['params']:,} parameters, test accuracy "
            f"{e.before['accuracy']:.2%}.")


class PurifyPanel(Panel):
    title = "P-RM"
    named = (("tolerance =", "tolerance"), ("retrain_epochs =", "retrain_epochs"))

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
        self.result = w.HTML(NOT_YET)
        self.body.children = [self.tolerance, self.retrain_epochs, self.latency, self.b_purify, self.result]
        self.locked = [self.b_purify]
        self.report = None  # the last PurifyDone of this session
        self.running = False

    def spec(self):
        return parse_stage({"kind": "purify", "tolerance": self.tolerance.value / 100,
                            "retrain_epochs": self.retrain_epochs.value, "latency": self.latency.value}, "Purify")

    def on_stage_started(self, event) -> bool:
        self.running = event.stage_kind == "purify"
        return self.running

    def on_activity(self, event) -> None:
        super().on_activity(event)
        self.running = self.running and event.busy

    def on_purify_done(self, event) -> None:
        self.report, self.running = event, False

    def on_stage_ended(self, event) -> bool:
        was, self.running = self.running, False  # also in a replayed run, which has no Activity events
        return was

    def on_run_started(self, event) -> None:
        self.report = None

    def render(self) -> None:
        e = self.report
        if self.running:
            self.result.value = "<i>purifying: threshold sweep, retrain, unused path removal, shrink …</i>"
            return
        if e is None:
            self.result.value = NOT_YET
            return
        if not e.changed:
            self.result.value = (f"<div><b>Nothing to remove</b>: {unchanged(e)}</div>"
                                 + (NO_VALIDATION if e.selected_on == "test" else ""))
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
                                                          "dropped: the purified network is kept as it was</div>")
                             + (NO_VALIDATION if e.selected_on == "test" else ""))
