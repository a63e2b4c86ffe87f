"""Setup: model, dataset, device, start (random / checkpoint / pretrain now), seed, data folders."""
from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Callable

import ipywidgets as w
import torch

from ...data import DATASETS
from ...engine.session import resolve_device
from ...models import MODELS
from ...recipe import parse_recipe
from ...errors import UIError
from .base import Panel, button, labelled

STARTS = ["random", "checkpoint", "pretrain now"]
VALIDATION = 500  # held-out training examples by default: a tenth of the embedded sample's 5,000 digits


def base_dir() -> Path:
    """Where relative paths typed in the page are meant from: the folder `admm-explorer dashboard` ran in
    (Voila runs the kernel in the notebook's own folder, inside the installed package)."""
    return Path(os.environ.get("ADMM_EXPLORER_CWD") or Path.cwd())


def resolve(path: str) -> Path:
    """A path typed in the page, relative to base_dir(). Under `admm-explorer dashboard` it must lie inside the
    server's root folder (the folder it ran in, or its --root), symbolic links followed: whoever drives the
    page may read and write files there and nowhere else. In JupyterLab the kernel is the user's own: no limit."""
    p = Path(path).expanduser()
    p = p if p.is_absolute() else base_dir() / p
    root = os.environ.get("ADMM_EXPLORER_ROOT")
    if root and not p.resolve().is_relative_to(Path(root).resolve()):
        raise UIError(f"{path} is outside the dashboard's folder {root}; use a path inside it, or start the "
                      "dashboard with --root DIR")
    return p


def devices() -> list[tuple[str, str]]:
    """(label, device) of every device here: auto (and what it picks), cpu, each CUDA device with its name and
    memory, mps."""
    found = [(f"auto ({resolve_device('auto').type})", "auto"), ("cpu", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append((f"cuda:{i} {props.name}, {props.total_memory / 2**30:.0f} GiB", f"cuda:{i}"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append(("mps (Apple GPU)", "mps"))
    return found


def device_choice(name: str) -> str:
    """The Device list's entry for a recipe's device; a device this machine lacks raises the recipe's message."""
    resolve_device(name)
    return f"cuda:{torch.cuda.current_device()}" if name == "cuda" else name


class SetupPanel(Panel):
    """Apply setup starts a new session (the model is rebuilt): the Runs panel keeps the earlier runs."""

    title = "Setup"
    named = (("batch_size =", "batch_size"), ("seed =", "seed"), ("validation =", "validation"),
             ("test_root", "test_root"), ("data_root", "data_root"), ("checkpoint", "checkpoint"))

    def __init__(self, controller, pretrain: Callable[[], None], **recipe):
        super().__init__(controller)
        self.pretrain = pretrain
        # batch 32: on the 5,000-digit sample the demo's pruned LeNet-5 ends about 0.4 points higher than with 64
        r = {"model": "lenet5", "dataset": "mnist-sample", "device": "auto", "seed": 0, "batch_size": 32, **recipe}
        self.model = labelled(w.Dropdown(options=list(MODELS), value=r["model"]), "Model", "model zoo entry")
        self.dataset = labelled(w.Dropdown(options=list(DATASETS), value=r["dataset"]), "Dataset",
                                "dataset registry entry (mnist-sample ships with the package: no download)")
        self.device = labelled(w.Dropdown(options=devices(), value=device_choice(r["device"])), "Device",
                               "auto picks cuda, then mps, then cpu")
        self.precision = labelled(w.Dropdown(options=[("fp32", "fp32"), ("bf16 (autocast)", "bf16"),
                                                      ("fp16 (autocast, grad scaler)", "fp16")],
                                             value=r.get("precision", "fp32")), "Precision",
                                  "the training forward's precision; weights, the ADMM penalty, Z, U and the "
                                  "residuals stay float32")
        self.channels_last = labelled(w.Checkbox(value=r.get("channels_last", False), indent=True),
                                      "Channels last", "NHWC memory format for conv weights and inputs (faster "
                                                       "on GPUs with tensor cores)")
        self.start = labelled(w.ToggleButtons(options=STARTS, value="random", style={"button_width": "7.5em"}),
                              "Start", "random: fresh initialisation; checkpoint: load the file below; pretrain now: "
                                       "fresh initialisation, then Pretrain runs at once")
        self.start.tooltips = ["fresh initialisation from the seed", "weights, masks and targets from a checkpoint",
                               "fresh initialisation, then the Pretrain stage with the Stages settings"]
        self.checkpoint = labelled(w.Text(placeholder="path/to/stage.pt"), "Checkpoint",
                                   "a checkpoint written by a run or by Export (relative to the folder the "
                                   "dashboard was started in)")
        self.seed = labelled(w.IntText(value=r["seed"]), "Seed",
                             "initialisation and batch order")
        self.batch_size = labelled(w.IntText(value=r["batch_size"]), "Batch size",
                                   "training batch size of every stage")
        self.test_root = labelled(w.Text(value=str(r.get("test_root") or ""),
                                         placeholder="(held-out sample digits)"), "Test set folder",
                                  "mnist-sample: a folder with the MNIST t10k IDX files; with it all 5,000 sample "
                                  "digits train and the 10,000 MNIST test digits test")
        self.validation = labelled(w.IntText(value=r.get("validation", VALIDATION)), "Validation",
                                   "training examples held out (a fixed draw): P-RM chooses its threshold and keeps "
                                   "or drops its retrain on them, so the test set only reports; 0: no validation "
                                   "set (P-RM then chooses on the test set, and its table says so)")
        self.data_root = labelled(w.Text(value=str(r.get("data_root") or ""), placeholder="(~/.cache/admm_explorer)"),
                                  "Data folder", "where torchvision datasets live (mnist, cifar10, imagenet)")
        self.b_apply = button("Apply setup", "start a new session with this setup: rebuilds the model (the runs so "
                                             "far stay in Runs)", "warning")
        self.b_apply.on_click(self.action(lambda _: self.apply()))
        self.start.observe(self.action(lambda _: self.redraw()), "value")
        self.status = w.HTML()
        self.session = ""  # model, data, device and test set of the session, as HTML
        self.body.children = [self.model, self.dataset, self.device, self.precision, self.channels_last, self.start,
                              self.checkpoint, self.seed, self.batch_size, self.test_root, self.validation,
                              self.data_root, self.b_apply, self.status]
        self.locked = [self.model, self.dataset, self.device, self.precision, self.channels_last, self.start,
                       self.seed, self.batch_size, self.test_root, self.validation, self.data_root, self.b_apply]

    def recipe(self):
        start = self.start.value
        if start == "checkpoint" and not self.checkpoint.value.strip():
            raise ValueError("Start is checkpoint: give the checkpoint's path")
        data = {"model": self.model.value, "dataset": self.dataset.value, "device": self.device.value,
                "precision": self.precision.value, "channels_last": self.channels_last.value,
                "seed": self.seed.value, "batch_size": self.batch_size.value, "validation": self.validation.value,
                "start": str(resolve(self.checkpoint.value.strip())) if start == "checkpoint" else None,
                "test_root": str(resolve(self.test_root.value.strip())) if self.test_root.value.strip() else None,
                "data_root": str(resolve(self.data_root.value.strip())) if self.data_root.value.strip() else None}
        return parse_recipe(data, "setup")

    def apply(self) -> None:
        self.controller.configure(self.recipe())
        if self.start.value == "pretrain now":
            self.pretrain()

    def on_run_started(self, event) -> None:
        self.session = (f"<b>{escape(event.model)}</b> on <b>{escape(event.dataset)}</b>, device "
                        f"{escape(event.device)}<br>test set: {escape(event.test_set)}")
        self.describe(event.layers, event.dense_weights)

    def on_model_shrunk(self, event) -> None:
        self.describe(event.layers, event.dense_weights)

    def describe(self, layers: dict, dense_weights: int) -> None:
        weights = sum(layer["weights"] for layer in layers.values())
        nonzero = sum(layer["nonzero"] for layer in layers.values())
        shape = (f"{weights:,} weights, shrunk by P-RM from {dense_weights:,}" if weights < dense_weights else
                 f"{weights:,} weights")
        self.status.value = (f"{self.session}<br>{len(layers)} prunable layers, {shape}"
                             + (f"; {nonzero:,} nonzero" if nonzero < weights else ""))

    def render(self) -> None:
        self.checkpoint.disabled = self.busy or self.start.value != "checkpoint"
