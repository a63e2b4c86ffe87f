"""What every panel shares: event dispatch, dirty-flag drawing, locking while a stage runs, control makers."""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

import ipywidgets as w

from ..explain import explain_toggle

if TYPE_CHECKING:
    from ..controller import Controller

LABEL_WIDTH = "9.2em"  # "Tolerance (points)", "Global target (×)"
FILL = "calc(100% - 4px)"  # the width that fills a box: 100% plus a widget's 2 px margins would overflow it


class Panel:
    """A titled box that records events in `on_<kind>` handlers and draws in `render`.

    Handlers run under the controller's lock in the thread that emitted the event and only record plain
    Python data (cheap: BatchEnded can come hundreds of times a second); `render` pushes it to widgets and
    runs only when a handler marked the panel dirty, at most as often as the controller flushes.
    `locked` lists the controls that need a reset (model, data, targets): disabled while a stage runs.
    """

    title = ""
    watch: tuple[str, ...] = ()  # event kinds that need a redraw but no recording

    def __init__(self, controller: Controller):
        self.controller = controller
        self.busy = False
        self.flagged: tuple | None = None  # (box, note, field) of an error shown under its field
        self.dirty = False
        self.locked: list[w.DOMWidget] = []
        self.body = w.VBox()
        head: list[w.DOMWidget] = [w.HTML(f"<b class='ae-title'>{self.title}</b>")]
        explain = explain_toggle(self.title)
        if explain:
            toggle, text = explain
            head = [w.HBox([head[0], toggle], layout=w.Layout(justify_content="space-between", align_items="center")),
                    text]
        self.widget = w.VBox([*head, self.body],
                             layout=w.Layout(border="1px solid #d0d7de", padding="6px 10px", margin="4px",
                                             min_width="0"))
        self.widget.add_class(f"ae-{type(self).__name__.lower()}")
        controller.subscribe(self)

    def on_event(self, event) -> None:
        handler = getattr(self, f"on_{event.kind}", None)
        if handler is not None:
            if handler(event) is not False:
                self.dirty = True
        elif event.kind in self.watch:
            self.dirty = True

    def on_activity(self, event) -> None:
        self.busy = event.busy

    def flush(self) -> None:
        if self.dirty:
            self.dirty = False
            for control in self.locked:
                control.disabled = self.busy
            self.render()

    def render(self) -> None:
        """Push the recorded state to the widgets (called under the controller's lock)."""

    named: tuple[tuple[str, str], ...] = ()  # (text an error names, the attribute of the field it is about)

    def action(self, fn):
        """A button/observer callback that reports its errors in the page, and shows an error that names one
        of the panel's fields (`named`) under that field too."""
        def run(*args, **kwargs):
            self.unflag()
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                from ..controller import readable

                self.flag(readable(e))
                raise
        return self.controller.guard(run)

    def flag(self, text: str) -> None:
        """`text` in red right under the first field of `named` it names; that field gets a red frame."""
        for name, attribute in self.named:
            if name in text:
                field = getattr(self, attribute)
                box = next(b for b in boxes(self.body) if field in b.children)
                note = w.HTML(f"<div class='ae-field-error'>{escape(text)}</div>",
                              layout=w.Layout(grid_column="1 / -1", width=FILL))
                children = list(box.children)
                box.children = children[:children.index(field) + 1] + [note] + children[children.index(field) + 1:]
                field.add_class("ae-invalid")
                self.flagged = (box, note, field)
                return

    def unflag(self) -> None:
        if self.flagged is not None:
            box, note, field = self.flagged
            box.children = [c for c in box.children if c is not note]
            field.remove_class("ae-invalid")
            self.flagged = None

    def redraw(self) -> None:
        """Draw now, from a user's action on the main thread (locked against the worker's flushes)."""
        self.dirty = True
        self.controller.flush()


def boxes(root: w.Widget):
    """Every container widget under root, root first."""
    if isinstance(root, w.Box):
        yield root
        for child in root.children:
            yield from boxes(child)


def labelled(widget: w.DOMWidget, description: str, tooltip: str, label_width: str = LABEL_WIDTH) -> w.DOMWidget:
    widget.description = description
    widget.tooltip = tooltip
    widget.style.description_width = label_width
    widget.layout.width = FILL
    return widget


def button(description: str, tooltip: str, style: str = "") -> w.Button:
    return w.Button(description=description, tooltip=tooltip, button_style=style,
                    layout=w.Layout(width="auto", min_width="7.5em"))


def table(header: list[str], rows: list[list[str]], caption: str = "") -> str:
    """A small HTML table (right-aligned numbers) for the HTML widget; every text is escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table class='ae-table'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
