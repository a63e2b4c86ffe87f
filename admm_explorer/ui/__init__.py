"""The dashboard: ipywidgets panels over one engine Session, each panel fed by events, never the reverse.

    from admm_explorer.ui import Explorer
    Explorer()                      # in JupyterLab, or served by Voila: `admm-explorer dashboard`

`figure_widget(go.Figure(...))` and `with updating(figure): ...` are the two plot helpers the panels and the
course notebooks share: a FigureWidget that Voila shows light, and edits that a page loaded later still sees.
"""
from __future__ import annotations

__all__ = ["Explorer", "figure_widget", "updating"]


def __getattr__(name: str):
    # lazy: `admm-explorer dashboard` imports admm_explorer.ui.serve, which must not pay for torch
    if name in __all__:
        from .imports import skip_iri_grammar

        skip_iri_grammar()  # before plotly imports nbformat: about 3.5 s less per kernel
        if name == "Explorer":
            from .explorer import Explorer

            return Explorer
        from .panels import figures

        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
