"""Every recipe shipped in recipes/ validates completely (names, fit, targets) without running."""
from pathlib import Path

import pytest

from admm_explorer.engine.session import check_recipe
from admm_explorer.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_is_valid(path):
    recipe = load_recipe(path)
    check_recipe(recipe)
    assert recipe.stages and recipe.model == path.name.split("-")[0]


def test_recipes_are_shipped():
    assert {"lenet5-admm.yaml", "lenet5-prm.yaml", "lenet5-progressive.yaml", "lenet5-binary.yaml",
            "lenet5-pruned-3bit.yaml", "lenet5-reweighted.yaml", "resnet18-imagenet-admm.yaml",
            "resnet50-imagenet-prm.yaml"} <= {p.name for p in RECIPES}


def test_imagenet_recipes_run_data_parallel_in_bf16():
    for name in ("resnet18-imagenet-admm.yaml", "resnet50-imagenet-prm.yaml"):
        recipe = load_recipe(RECIPES[0].parent / name)
        assert (recipe.dataset, recipe.pretrained, recipe.precision, recipe.channels_last) == (
            "imagenet", True, "bf16", True)
        assert recipe.validation > 0 and "torchrun --nproc_per_node" in (RECIPES[0].parent / name).read_text()
