"""Errors in the page: why a stage failed, a setting was refused or a panel broke, in one readable line."""
from __future__ import annotations

from collections import deque
from html import escape

import ipywidgets as w

from .base import Panel, button

STYLE = "background:#fdecea;border-left:4px solid #d93025;color:#5f1a14;padding:4px 8px;margin:2px 0"


class NoticePanel(Panel):
    """Errors stay until dismissed or until the next stage starts (the user has acted on them)."""

    def __init__(self, controller):
        super().__init__(controller)
        self.messages: deque = deque(maxlen=4)
        self.text = w.HTML(layout=w.Layout(flex="1 1 auto", width="auto"))
        self.b_dismiss = button("Dismiss", "clear these messages")
        self.b_dismiss.on_click(self.action(lambda _: (self.messages.clear(), self.redraw())))
        self.widget = w.HBox([self.text, self.b_dismiss], layout=w.Layout(display="none", align_items="flex-start",
                                                                           margin="4px"))
        self.widget.add_class("ae-notices")

    def on_notice(self, event) -> None:
        self.messages.append(event)

    def on_activity(self, event) -> None:
        super().on_activity(event)
        if event.busy:
            self.messages.clear()

    def render(self) -> None:
        self.widget.layout.display = "flex" if self.messages else "none"
        self.text.value = "".join(f"<div class='ae-error' style='{STYLE}'>{escape(m.text)}</div>"
                                  for m in self.messages)
