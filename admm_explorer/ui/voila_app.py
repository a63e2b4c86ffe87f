"""The dashboard's Voila server: `python -m admm_explorer.ui.voila_app FOLDER [Voila options]` (every notebook in FOLDER a page).

Plain Voila turns Jupyter Server's Host check off (allow_remote_access=True): a page on another site whose
name resolves to 127.0.0.1 (DNS rebinding) could then talk to it. Here the check is back on: only loopback
addresses and `localhost` are accepted as Host. Every page load starts a kernel of about 1 GB (torch, the
model, the data); `Dashboard.max_kernels` caps how many live at once, and a page over the cap gets a short
explanation (HTTP 503) instead of another kernel.
"""
from __future__ import annotations

from .imports import skip_iri_grammar

skip_iri_grammar()

import tornado.web  # noqa: E402  (after the import tweak above)
from traitlets import Integer  # noqa: E402
from voila.app import Voila  # noqa: E402
from voila.tornado.handler import TornadoVoilaHandler  # noqa: E402

FULL = """<!doctype html><title>ADMM explorer: too many open pages</title>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h2>The dashboard already runs {n} sessions</h2>
<p>Each open page holds its own Python kernel (about 1 GB). Close a dashboard tab you no longer use, or wait:
a page that was closed or reloaded lets its kernel go after {idle} of inactivity. Then reload this page.</p>
<p>To allow more at once, restart the server with <code>admm-explorer dashboard --max-kernels N</code>.</p>
</body>"""


class CappedVoilaHandler(TornadoVoilaHandler):
    @tornado.web.authenticated
    async def get(self, path=None):
        cap = self.settings["admm_explorer_max_kernels"]
        if len(self.kernel_manager.list_kernel_ids()) >= cap:
            idle = self.kernel_manager.cull_idle_timeout
            self.set_status(503)
            self.finish(FULL.format(n=cap, idle=f"{idle // 60} minutes" if idle >= 120 else f"{idle} s"))
            return
        await super().get(path)


class Dashboard(Voila):
    max_kernels = Integer(4, config=True, help="kernels (open pages) at most; a page beyond gets HTTP 503")

    def init_settings(self) -> dict:
        settings = super().init_settings()
        settings["allow_remote_access"] = False
        settings["local_hostnames"] = ["localhost"]
        settings["admm_explorer_max_kernels"] = self.max_kernels
        return settings

    def init_handlers(self) -> list:
        return [(pattern, CappedVoilaHandler if handler is TornadoVoilaHandler else handler, *rest)
                for pattern, handler, *rest in super().init_handlers()]


if __name__ == "__main__":
    Dashboard.launch_instance()
