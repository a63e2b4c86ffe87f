"""The package's one error family. Every message is one line a user can act on: what is wrong, the value,
what is allowed or what to do next. The CLI prints it as `error: ...`; the dashboard shows it in the page.

    AdmmExplorerError
    ├── RecipeError        a recipe field, a dashboard setting or a command-line option is invalid
    │   ├── UnknownName    a registry name (model, dataset, stage kind, layer) that does not exist
    │   └── CheckpointError a checkpoint is unreadable, corrupt, or does not fit the model
    ├── DataMissing        a dataset is not on disk and no download was asked for
    ├── WriteFailed        a run's file could not be written (full disk, quota); the run is resumable
    ├── StageFailed        a stage could not go on (NaN loss, divergence); the model is as before the stage
    └── UIError            the dashboard refuses a request (a stage is running, a path outside its folder)
"""
from __future__ import annotations


class AdmmExplorerError(Exception):
    """Base of every error admm_explorer raises on purpose."""


class RecipeError(AdmmExplorerError, ValueError):
    """A recipe (or a setting from the dashboard or the command line) is invalid; the message names the field."""


class UnknownName(RecipeError, KeyError):
    """A registry lookup failed; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return self.args[0]


class CheckpointError(RecipeError):
    """A checkpoint is unreadable, corrupt, or does not belong to the model."""


class DataMissing(AdmmExplorerError, FileNotFoundError):
    """A dataset is not on disk and the recipe does not allow a download."""


class WriteFailed(AdmmExplorerError, OSError):
    """Writing a run's file failed (a full disk, a quota, a removed folder); what was written stays."""

    def __str__(self) -> str:
        return self.args[0]


class StageFailed(AdmmExplorerError, RuntimeError):
    """A stage could not go on (a NaN/inf loss, a diverging run); the message says why and what to change."""


class UIError(AdmmExplorerError, RuntimeError):
    """A request the dashboard refuses (a stage is running, nothing to export yet); the message says why."""
