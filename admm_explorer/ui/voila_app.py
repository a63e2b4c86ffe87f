"""The dashboard's Voila server: `python -m admm_explorer.ui.voila_app NOTEBOOK [Voila options]`.

Plain Voila turns Jupyter Server's Host check off (allow_remote_access=True): a page on another site whose
name resolves to 127.0.0.1 (DNS rebinding) could then talk to it. Here the check is back on: only loopback
addresses and `localhost` are accepted as Host.
"""
from __future__ import annotations

from .imports import skip_iri_grammar

skip_iri_grammar()

from voila.app import Voila  # noqa: E402  (after the import tweak above)


class Dashboard(Voila):
    def init_settings(self) -> dict:
        settings = super().init_settings()
        settings["allow_remote_access"] = False
        settings["local_hostnames"] = ["localhost"]
        return settings


if __name__ == "__main__":
    Dashboard.launch_instance()
