"""Fixtures shared by the stage tests."""
import pytest

from admm_explorer.engine import Session
from admm_explorer.recipe import parse_recipe


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A LeNet-5 trained for one epoch, saved as a start checkpoint."""
    from admm_explorer.engine.checkpoints import save
    from admm_explorer.engine.stages.dense import PretrainSpec

    session = Session(parse_recipe({"device": "cpu", "seed": 3}))
    session.run_stage(PretrainSpec(epochs=1, eval_every=1))
    path = tmp_path_factory.mktemp("start") / "dense.pt"
    save(session, path, 0, "pretrain")
    return path
