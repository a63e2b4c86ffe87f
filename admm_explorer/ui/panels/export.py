"""Export: checkpoint, physically shrunk model, ONNX, and the recipe `admm-explorer run` reproduces it with."""
from __future__ import annotations

import time
from html import escape
from pathlib import Path

import ipywidgets as w

from .base import Panel, button, labelled
from .setup import resolve


class ExportPanel(Panel):
    title = "Export"
    watch = ("run_started", "stage_ended")  # the recipe grows with every finished stage

    def __init__(self, controller, folder: str = "exports"):
        super().__init__(controller)
        self.folder = labelled(w.Text(value=folder), "Folder", "where the files go (relative to the folder the "
                                                               "dashboard was started in)")
        self.b_checkpoint = button("Save checkpoint", "the model, its masks and targets: a Start checkpoint for "
                                                      "the Setup panel or a recipe")
        self.b_shrunk = button("Save shrunk model", "the physically smaller model (after P-RM, or with all-zero "
                                                    "filters removed); load with admm_explorer.prm.load_shrunk")
        self.b_onnx = button("Export ONNX", "the shrunk model as ONNX, batch size free")
        self.b_recipe = button("Save recipe", "recipe.yaml: run it with admm-explorer run recipe.yaml --out DIR")
        for b, fn in ((self.b_checkpoint, self.controller.save_checkpoint), (self.b_shrunk, self.controller.save_shrunk),
                      (self.b_onnx, self.controller.export_onnx), (self.b_recipe, self.save_recipe)):
            b.on_click(self.action(lambda _, fn=fn, b=b: self.save(fn, b.description)))
        self.recipe = w.Textarea(description="Recipe", tooltip="the setup and the finished stages of this session",
                                 layout=w.Layout(width="97%", height="14em"),
                                 style={"description_width": "0"})
        self.files = w.HTML()
        self.written: list[str] = []
        self.body.children = [self.folder, w.HBox([self.b_checkpoint, self.b_shrunk, self.b_onnx, self.b_recipe],
                                                  layout=w.Layout(flex_flow="row wrap")),
                              self.files, self.recipe]
        self.locked = [self.b_checkpoint, self.b_shrunk, self.b_onnx, self.b_recipe]

    def target(self, suffix: str) -> Path:
        return resolve(self.folder.value.strip() or ".") / f"{time.strftime('%Y%m%d-%H%M%S')}{suffix}"

    def save(self, fn, what: str) -> None:
        suffix = {"Save checkpoint": "-checkpoint.pt", "Save shrunk model": "-shrunk.pt", "Export ONNX": "-model.onnx",
                  "Save recipe": "-recipe.yaml"}[what]
        path = fn(self.target(suffix))
        self.written.append(f"{path} ({path.stat().st_size / 1024:,.1f} KiB)")
        self.redraw()

    def save_recipe(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.controller.recipe_yaml())
        return path

    def render(self) -> None:
        self.recipe.value = self.controller.recipe_yaml() if self.controller.recipe is not None else ""
        self.files.value = "<br>".join(f"wrote {escape(f)}" for f in self.written[-4:])
