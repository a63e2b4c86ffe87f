"""The dashboard: ipywidgets panels over one engine Session, each panel fed by events, never the reverse.

    from admm_explorer.ui import Explorer
    Explorer()                      # in JupyterLab, or served by Voila: `admm-explorer dashboard`
"""
from __future__ import annotations

__all__ = ["Explorer"]


def __getattr__(name: str):
    # lazy: `admm-explorer dashboard` imports admm_explorer.ui.serve, which must not pay for torch
    if name == "Explorer":
        from .imports import skip_iri_grammar

        skip_iri_grammar()
        from .explorer import Explorer

        return Explorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
