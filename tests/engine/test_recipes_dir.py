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
    assert recipe.stages and recipe.model == "lenet5"


def test_recipes_are_shipped():
    assert {"lenet5-admm.yaml", "lenet5-prm.yaml", "lenet5-progressive.yaml", "lenet5-binary.yaml",
            "lenet5-pruned-3bit.yaml", "lenet5-reweighted.yaml"} <= {p.name for p in RECIPES}
