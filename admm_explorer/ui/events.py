"""Events of the dashboard itself, delivered to the panels beside the engine's (same `kind` convention)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..engine.events import Event


@dataclass(frozen=True)
class Activity(Event):
    """A stage job began (busy) or ended, whatever its outcome; panels lock and unlock their controls."""

    kind: ClassVar[str] = "activity"
    busy: bool
    what: str  # the stage kind


@dataclass(frozen=True)
class Notice(Event):
    """An error for the page, in one readable line: a failed stage, a refused setting, a broken panel."""

    kind: ClassVar[str] = "notice"
    text: str


@dataclass(frozen=True)
class TargetsChanged(Event):
    """The Targets panel's constraints moved: layer -> LayerTarget (untargeted layers are absent)."""

    kind: ClassVar[str] = "targets_changed"
    targets: dict
    compression: float  # of the dense network if every target were met (the Targets panel's total)
