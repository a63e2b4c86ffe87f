"""The dashboard: ipywidgets panels over one engine Session, each panel fed by events, never the reverse.

    from admm_explorer.ui import Explorer
    Explorer()                      # in JupyterLab, or served by Voila: `admm-explorer dashboard`
"""
from __future__ import annotations

from .explorer import Explorer

__all__ = ["Explorer"]
