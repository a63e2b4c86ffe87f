"""Stages: ADMM and optimiser settings, the stage buttons, Stop, and a progress bar with ETA."""
from __future__ import annotations

import time

import ipywidgets as w

from ...recipe import parse_stage
from .base import FILL, Panel, button, labelled

# Defaults chosen for the classroom demo (pretrain -> Run ADMM -> Retrain -> Purify on lenet5/mnist-sample):
# under 2 minutes on 2 cores, >= 97% on the MNIST test set at 71x fewer weights (benchmarks/dashboard_demo.py;
# 10 pretrain epochs took over 2 minutes in all). A short pretrain costs the least: ADMM and the retrain decide the end.
DEFAULTS = dict(pretrain_epochs=6.0, admm_epochs=10.0, update_every=0.5, rho=1e-3, rho_schedule="geometric",
                rho_factor=1.3, rho_max=1.0, retrain_epochs=8.0, steps=3, candidates=1, magnitude_steps=1, optimizer="adam", lr=1e-3,
                lr_schedule="cosine", eval_every=1.0, lam=1e-5, reweighted_rho=1e-2, reweighted_x=0.0, stop_at=0.0)
ADMM_KINDS = ("admm", "progressive", "reweighted")  # stages with Z/U rounds: rho is live during their ADMM phases


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


FIELD = "8.8em"  # label width in the two-column grid
LIVE = "10.5em"  # label width of the two live sliders
# two columns of fields where both show their whole value (0.000001, geometric) beside the label, else one
FIELDS = "repeat(auto-fill, minmax(max(17em, calc(50% - 6px)), 1fr))"


def epochs_box(value: float, description: str, tooltip: str) -> w.FloatText:
    return labelled(w.FloatText(value=value, step=1.0), description, tooltip, FIELD)


class StagesPanel(Panel):
    title = "Stages"
    named = (("Pretrain.epochs =", "pretrain_epochs"), ("Run ADMM.epochs =", "admm_epochs"),
             ("Reweighted.epochs =", "admm_epochs"), ("Magnitude.epochs =", "admm_epochs"),
             ("Retrain.epochs =", "retrain_epochs"), ("admm_epochs =", "admm_epochs"),
             ("retrain_epochs =", "retrain_epochs"), ("update_every =", "update_every"),
             ("Progressive.steps =", "steps"), ("Progressive.candidates =", "candidates"),
             ("Magnitude.steps =", "magnitude_steps"),
             ("eval_every =", "eval_every"), ("Reweighted.rho.init =", "reweighted_rho"), ("rho.factor =", "rho_factor"),
             ("rho.max =", "rho_max"), ("rho.init =", "rho"), ("lam =", "lam"), ("compression =", "reweighted_x"),
             ("lr =", "lr"), ("stop.", "stop_at"))

    def __init__(self, controller, **defaults):
        super().__init__(controller)
        d = {**DEFAULTS, **defaults}
        self.pretrain_epochs = epochs_box(d["pretrain_epochs"], "Pretrain epochs", "dense training budget")
        self.admm_epochs = epochs_box(d["admm_epochs"], "ADMM epochs", "W-step budget of Run ADMM (fractions allowed)")
        self.update_every = labelled(w.FloatText(value=d["update_every"], step=0.5),
                                     "Z/U every", "period of the Z- and U-updates in epochs (fractions allowed: 0.5 = "
                                                  "twice per epoch)", FIELD)
        self.rho = labelled(w.FloatLogSlider(value=d["rho"], base=10, min=-6, max=1, step=0.1, readout_format=".1e"),
                            "ρ (next ADMM)", "ADMM penalty rho. Idle (ρ (next ADMM)): where the next Run ADMM or "
                                             "Progressive starts. While one runs (ρ (live)): every layer switches "
                                             "to it at the next Z/U round", LIVE)
        self.rho_schedule = labelled(w.Dropdown(options=["constant", "geometric", "balance"], value=d["rho_schedule"]),
                                     "ρ schedule", "constant; geometric: rho × factor each round up to max; balance: "
                                                   "residual balancing (Boyd et al. 3.4.1)", FIELD)
        self.rho_factor = labelled(w.FloatText(value=d["rho_factor"], step=0.1),
                                   "ρ factor", "geometric growth of rho per Z/U round", FIELD)
        self.rho_max = labelled(w.FloatText(value=d["rho_max"], step=0.1),
                                "ρ max", "cap of rho under the geometric and balance schedules", FIELD)
        self.retrain_epochs = epochs_box(d["retrain_epochs"], "Retrain epochs",
                                         "masked retraining after the hard prune")
        self.steps = labelled(w.IntText(value=d["steps"]), "Progressive steps",
                              "Progressive: this many ADMM + retrain steps to the targets; each step runs "
                              "ADMM epochs / steps and retrain epochs / steps", FIELD)
        self.candidates = labelled(w.IntText(value=d["candidates"]), "Candidates",
                                   "Progressive: keep this many partial solutions at each step, the best on the "
                                   "validation digits (Setup: Validation); each step runs this many times from each "
                                   "one kept, so k + (steps − 1) k² steps in all. 1: one chain", FIELD)
        self.stop_at = labelled(w.FloatText(value=d["stop_at"], step=0.01), "Stop at residual",
                                "Run ADMM ends at the first Z/U round where every layer has ||W − Z|| ≤ this × ||W|| and "
                                "ρ||Z − Z′|| ≤ this × ||ρU|| (W close to Z, as paper 1 runs it); ADMM epochs is then "
                                "the most it runs. 0: run every epoch", FIELD)
        self.magnitude_steps = labelled(w.IntText(value=d["magnitude_steps"]), "Magnitude steps",
                                        "Magnitude: 1 = one-shot (prune the smallest weights to the Targets, then "
                                        "retrain); more: prune in this many steps on a geometric plan", FIELD)
        self.lam = labelled(w.FloatText(value=d["lam"], step=1e-6), "λ (reweighted)",
                            "Reweighted: the L1 weight; Z keeps a weight when |W + U| (|W + U| + 0.001) > λ / ρ "
                            "(and takes it back when it grows past that), so scale λ with ρ "
                            "(benchmarks/lenet5_admm.py: 1e-5 at a constant ρ of 0.01)", FIELD)
        self.reweighted_rho = labelled(w.FloatText(value=d["reweighted_rho"], step=1e-3), "ρ (reweighted)",
                                       "Reweighted: its own constant ρ (a growing ρ would lower its threshold round "
                                       "by round); the ρ slider is ADMM's", FIELD)
        self.reweighted_x = labelled(w.FloatText(value=d["reweighted_x"], step=10.0),
                                     "Reweighted ×", "Reweighted: compression to reach by one global magnitude "
                                                     "top-k over the targeted layers at the end (0: the Targets' "
                                                     "total); Retrain then prunes to it", FIELD)
        self.optimizer = labelled(w.Dropdown(options=["adam", "sgd"], value=d["optimizer"]), "Optimizer",
                                  "optimizer of every stage (sgd with momentum 0.9)", FIELD)
        self.lr = labelled(w.FloatLogSlider(value=d["lr"], base=10, min=-6, max=0, step=0.1, readout_format=".1e"),
                           "Learning rate (live)", "learning rate of the next stage, and of the running one from "
                                                   "its next batch", LIVE)
        self.lr_schedule = labelled(w.Dropdown(options=["none", "cosine", "step"], value=d["lr_schedule"]),
                                    "LR schedule", "per stage: cosine decays the rate to 0 over the stage's epochs", FIELD)
        self.eval_every = labelled(w.FloatText(value=d["eval_every"], step=0.5),
                                   "Evaluate every", "epochs between test-set evaluations (fractions allowed)", FIELD)
        self.b_pretrain = button("Pretrain", "dense training of the current model", "primary")
        self.b_admm = button("Run ADMM", "ADMM pruning towards the Targets", "primary")
        self.b_retrain = button("Retrain", "hard prune to the targets of the last ADMM (or to the Targets, if none "
                                           "ran), then masked retraining", "primary")
        self.b_progressive = button("Progressive", "several ADMM + retrain steps to the Targets", "primary")
        self.b_reweighted = button("Reweighted", "reweighted ADMM (our reconstruction of paper 4) on the layers that "
                                                 "have a target, their rates ignored: λ decides, or Reweighted ×",
                                   "primary")
        self.b_magnitude = button("Magnitude", "the baseline: prune the smallest weights to the Targets and retrain "
                                               "under the mask, for ADMM epochs + Retrain epochs (ADMM's budget); to "
                                               "compare whole pipelines, branch the ADMM run after its pretrain in "
                                               "Runs first", "primary")
        self.b_stop = button("Stop", "end the running stage after the current batch; everything so far is kept",
                             "danger")
        self.b_pretrain.on_click(self.action(lambda _: self.pretrain()))
        self.b_admm.on_click(self.action(lambda _: self.controller.run(self.admm_spec())))
        self.b_retrain.on_click(self.action(lambda _: self.controller.run(self.retrain_spec())))
        self.b_progressive.on_click(self.action(lambda _: self.controller.run(self.progressive_spec())))
        self.b_reweighted.on_click(self.action(lambda _: self.controller.run(self.reweighted_spec())))
        self.b_magnitude.on_click(self.action(lambda _: self.controller.run(self.magnitude_spec())))
        self.b_stop.on_click(self.action(lambda _: self.controller.stop()))
        self.rho.observe(self.action(lambda c: self.controller.set_rho(c["new"])), "value")
        self.lr.observe(self.action(lambda c: self.controller.set_lr(c["new"])), "value")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="Progress", tooltip="batches of the stage",
                                      style={"description_width": "5em", "bar_color": "#2f7ed8"},
                                      layout=w.Layout(width=FILL))
        self.status = w.HTML("<i>idle</i>")
        self.targets: dict = {}
        self.compression = 1.0  # the Targets' total: what Reweighted × 0 reaches
        self.dataset = ""
        self.pruned = False  # a pruning stage finished in this session: Retrain follows its targets
        self.stage = None
        self.b_stop.disabled = True
        grid = w.GridBox([self.pretrain_epochs, self.admm_epochs, self.retrain_epochs, self.steps, self.candidates,
                          self.update_every,
                          self.eval_every, self.optimizer, self.lr_schedule, self.rho_schedule, self.rho_factor,
                          self.rho_max, self.stop_at, self.magnitude_steps, self.reweighted_rho, self.lam,
                          self.reweighted_x],
                         layout=w.Layout(grid_template_columns=FIELDS, grid_gap="2px 12px"))
        buttons = w.HBox([self.b_pretrain, self.b_admm, self.b_retrain, self.b_progressive, self.b_reweighted,
                          self.b_magnitude, self.b_stop],
                         layout=w.Layout(flex_flow="row wrap"))
        self.body.children = [grid, self.rho, self.lr, buttons, self.progress, self.status]
        self.locked = [self.b_pretrain, self.b_admm, self.b_retrain, self.b_progressive, self.b_reweighted,
                       self.b_magnitude]

    # specs ------------------------------------------------------------------------------------------
    def optimizer_spec(self) -> dict:
        return {"name": self.optimizer.value, "lr": float(f"{self.lr.value:.3g}"), "schedule": self.lr_schedule.value}

    def rho_spec(self) -> dict:
        return {"init": float(f"{self.rho.value:.3g}"), "schedule": self.rho_schedule.value,
                "factor": self.rho_factor.value, "max": self.rho_max.value}

    def _targets(self):
        if not self.targets:
            raise ValueError("no layer has a target: give some layer a sparsity or bits in Targets")
        return dict(self.targets)

    def _pruned_layers(self) -> list[str]:
        """The layers with a sparsity target (reweighted ADMM prunes; bits-only layers are not its business)."""
        layers = [name for name, t in self._targets().items() if t.sparsity is not None]
        if not layers:
            raise ValueError("no layer has a sparsity target: give the layers Reweighted should prune a sparsity "
                             "in Targets (the value itself is ignored: λ or Reweighted × decide)")
        return layers

    def pretrain(self) -> None:
        self.controller.run(parse_stage({"kind": "pretrain", "epochs": self.pretrain_epochs.value,
                                         "optimizer": self.optimizer_spec(), "eval_every": self.eval_every.value},
                                        "Pretrain"))

    def admm_spec(self):
        return parse_stage({"kind": "admm", "epochs": self.admm_epochs.value, "update_every": self.update_every.value,
                            "rho": self.rho_spec(), "targets": self._targets(), "optimizer": self.optimizer_spec(),
                            "eval_every": self.eval_every.value,
                            "stop": {"primal": self.stop_at.value, "dual": self.stop_at.value}
                            if self.stop_at.value else None}, "Run ADMM")

    def retrain_spec(self):
        return parse_stage({"kind": "retrain", "epochs": self.retrain_epochs.value,
                            "targets": None if self.pruned else self._targets(), "optimizer": self.optimizer_spec(),
                            "eval_every": self.eval_every.value}, "Retrain")

    def progressive_spec(self):
        steps = self.steps.value
        share = 1 / max(steps, 1)  # steps < 1 is refused by the check with its own message
        return parse_stage({"kind": "progressive", "targets": self._targets(), "steps": steps,
                            "candidates": self.candidates.value,
                            "admm_epochs": self.admm_epochs.value * share,
                            "retrain_epochs": self.retrain_epochs.value * share,
                            "update_every": self.update_every.value, "rho": self.rho_spec(),
                            "optimizer": self.optimizer_spec(), "retrain_optimizer": self.optimizer_spec(),
                            "eval_every": self.eval_every.value}, "Progressive")

    def magnitude_spec(self):
        return parse_stage({"kind": "magnitude", "targets": self._targets(), "steps": self.magnitude_steps.value,
                            "epochs": self.admm_epochs.value + self.retrain_epochs.value,
                            "optimizer": self.optimizer_spec(), "eval_every": self.eval_every.value}, "Magnitude")

    def reweighted_spec(self):
        return parse_stage({"kind": "reweighted", "epochs": self.admm_epochs.value,
                            "update_every": self.update_every.value,
                            "rho": {"init": self.reweighted_rho.value, "schedule": "constant"}, "lam": self.lam.value,
                            "layers": self._pruned_layers(),
                            "compression": self.reweighted_x.value or round(self.compression, 2),
                            "optimizer": self.optimizer_spec(), "eval_every": self.eval_every.value}, "Reweighted")

    # events -----------------------------------------------------------------------------------------
    def on_run_started(self, event) -> None:
        self.pruned, self.stage, self.dataset = False, None, event.dataset

    def on_targets_changed(self, event) -> bool:
        self.targets, self.compression = event.targets, event.compression
        return False

    def on_stage_started(self, event) -> None:
        self.stage = {"kind": event.stage_kind, "index": event.stage, "total": max(event.total_batches, 1),
                      "start": time.monotonic(), "step": 0, "loss": None, "rho": None, "test": None,
                      "phase": event.stage_kind}

    def on_batch_ended(self, event) -> None:
        if "admm" not in event.phase:
            self.stage["rho"] = None  # a retrain phase has no rho
        self.stage.update(step=event.step, loss=event.loss, phase=event.phase)

    def on_admm_round(self, event) -> None:
        self.stage["rho"] = max(layer["rho"] for layer in event.layers.values())
        if event.converged:
            self.stage["converged"] = (event.round, event.epoch)

    def on_evaluation_done(self, event) -> None:
        self.stage["test"] = event.test_accuracy

    def on_candidates_ranked(self, event) -> None:
        self.stage["ranked"] = event

    def on_stage_ended(self, event) -> None:
        self.stage.update(ended=event)
        if event.status == "finished" and event.stage_kind in ("admm", "progressive", "reweighted", "magnitude",
                                                               "purify"):
            self.pruned = event.stage_kind != "purify"  # P-RM leaves no targets behind

    def on_activity(self, event) -> None:
        super().on_activity(event)
        if event.busy:
            self.stage = None

    def render(self) -> None:
        self.b_stop.disabled = not self.busy
        s = self.stage
        live = self.busy and s is not None and s["kind"] in ADMM_KINDS and s["kind"] != "reweighted"
        self.rho.description = "ρ (live)" if live else "ρ (next ADMM)"
        if s is None:
            self.status.value = f"<i>{'starting …' if self.busy else 'idle'}</i>"
            self.progress.value, self.progress.bar_style = 0, ""
            return
        self.progress.max = s["total"]
        self.progress.value = s["step"]
        elapsed = time.monotonic() - s["start"]
        end = s.get("ended")
        if end is not None:
            self.progress.bar_style = "success" if end.status == "finished" else "warning"
            stored = end.storage
            self.status.value = (f"<b>{end.stage_kind}</b> {end.status} (stage {end.stage}) in {clock(end.seconds)}: "
                                 f"test accuracy <b>{end.accuracy:.2%}</b>, {end.compression:.1f}× fewer weights"
                                 + (f", stored in {stored['compressed_bytes']:,} bytes ({stored['ratio']:.1f}× "
                                    f"smaller, {stored['bits_per_weight']:.2f} bits a weight)" if stored else "")
                                 + "".join(f"<br>{note}" for note in self.notes(end)))
            return
        if not self.busy:
            self.progress.bar_style = "danger"
            self.status.value = f"<b>{s['kind']}</b> failed (stage {s['index']}) at batch {s['step']} (see the message above)"
            return
        self.progress.bar_style = ""
        eta = elapsed / s["step"] * (s["total"] - s["step"]) if s["step"] else None
        name = s["kind"] + (f" · {s['phase']}" if s["phase"] not in (s["kind"], "train") else "")
        parts = [f"<b>{name}</b> (stage {s['index']})", f"batch {s['step']}/{s['total']}",
                 f"{clock(elapsed)} elapsed", f"ETA {clock(eta) if eta is not None else '…'}"]
        if s["loss"] is not None:
            parts.append(f"loss {s['loss']:.3f}")
        if s["test"] is not None:
            parts.append(f"test {s['test']:.2%}")
        if s["rho"] is not None:
            parts.append(f"ρ {s['rho']:.1e}")
        self.status.value = " · ".join(parts) + "".join(f"<br>{note}" for note in self.notes(s))

    def notes(self, stage) -> list[str]:
        """What the bare figures of a stage would let a class misread (`stage`: a StageEnded, or the running
        stage's record)."""
        kind = stage.stage_kind if hasattr(stage, "stage_kind") else stage["kind"]
        out = []
        if kind in ("admm", "reweighted") and getattr(stage, "compression", 1.0) < 1.5:
            out.append("<i>ADMM has not pruned yet: Z is sparse, W is not; Retrain prunes W to Z's support</i>")
        converged = (self.stage or {}).get("converged")  # the record of the stage shown
        if converged:
            out.append(f"<i>ADMM ended early, at round {converged[0]} (epoch {converged[1]:.3g}): every layer's "
                       f"residuals were within Stop at residual ({self.stop_at.value:g} of ||W|| and ||ρU||)</i>")
        ranked = (self.stage or {}).get("ranked")
        if ranked is not None:
            runs = ", ".join(f"{c['candidate']} {c['accuracy']:.2%}" + (" (kept)" if c["kept"] else "")
                             for c in ranked.ranked)
            out.append(f"<i>step {ranked.step}/{ranked.steps}, candidates on the {ranked.selected_on} set: "
                       f"{runs}</i>")
        if kind == "reweighted":
            out.append("<i>Reweighted ignores the per-layer rates: λ (and Reweighted ×) decide the sparsity</i>")
        if self.dataset == "fake":
            out.append("<i>FakeData's labels are random: its accuracy means nothing</i>")
        return out
