"""Launched by test_distributed under torchrun: runs a recipe as `admm-explorer run` does, then saves this
rank's final weights and masks to DUMP/rank<r>.pt (outside the run folder, which only rank 0 writes), so
the test can compare the ranks with each other."""
import sys
from pathlib import Path

import torch

from admm_explorer.engine.run import run_recipe
from admm_explorer.parallel import world

recipe, out, dump = (Path(a) for a in sys.argv[1:4])
held = {}
run_recipe(recipe, out=out, on_session=lambda session: held.setdefault("session", session))
session = held["session"]
torch.save({"state": {k: v.detach().cpu() for k, v in session.model.state_dict().items()},
            "masks": {k: v.cpu() for k, v in session.masks.items()}}, dump / f"rank{world().rank}.pt")
