import pytest

from admm_explorer.engine.session import check_recipe
from admm_explorer.recipe import RecipeError, dump_recipe, load_recipe, parse_recipe


def error(data) -> str:
    with pytest.raises(RecipeError) as e:
        check_recipe(parse_recipe(data))
    return str(e.value)


def test_defaults_are_filled_in():
    recipe = parse_recipe({"stages": [{"kind": "pretrain", "epochs": 2}]})
    resolved = recipe.resolved()
    assert resolved["model"] == "lenet5" and resolved["dataset"] == "mnist-sample"
    assert resolved["stages"][0]["optimizer"] == {"name": "adam", "lr": 0.001, "momentum": 0.9,
                                                  "weight_decay": 0.0, "schedule": "none", "step_size": 10,
                                                  "gamma": 0.1}
    assert resolved["stages"][0]["epochs"] == 2


def test_round_trip(tmp_path):
    recipe = parse_recipe({"seed": 3, "stages": [{"kind": "pretrain", "epochs": 1.5}]})
    path = tmp_path / "r.yaml"
    path.write_text(dump_recipe(recipe))
    assert load_recipe(path).resolved() == recipe.resolved()


@pytest.mark.parametrize("data, expected", [
    ({"stages": [{"kind": "pretrain", "optimizer": {"lr": -1}}]},
     "stages[0].optimizer.lr = -1: Input should be greater than 0"),
    ({"stages": [{"kind": "pretrian"}]}, "stages[0].kind = 'pretrian' is not a stage kind; did you mean pretrain, retrain?"),
    ({"stages": [{"kind": "pretrain", "epoch": 3}]}, "stages[0].epoch = 3: is not a known field"),
    ({"device": "gpu"}, "device = 'gpu': String should match pattern"),
    ({"seed": -1}, "seed = -1: Input should be greater than or equal to 0"),
    ({"stages": [{"epochs": 3}]}, "stages[0]: each stage needs a kind"),
    ({"stages": {"kind": "pretrain"}}, "stages must be a list"),
    # a budget without one Z/U round would "finish" an ADMM stage that never projected
    ({"stages": [{"kind": "admm", "epochs": 0.05, "update_every": 0.5, "targets": {"fc1": 0.9}}]},
     "stages[0]: update_every = 0.5 is longer than the 0.05 ADMM epochs: no Z/U round would run"),
    ({"stages": [{"kind": "progressive", "admm_epochs": 1, "update_every": 2, "targets": {"fc1": 0.9}}]},
     "update_every = 2 is longer than the 1 ADMM epochs"),
    ({"stages": [{"kind": "reweighted", "epochs": 1, "update_every": 1.5}]},
     "update_every = 1.5 is longer than the 1 ADMM epochs"),
])
def test_field_errors_name_the_field(data, expected):
    assert expected in error(data)


def test_semantic_errors():
    assert "unknown model 'lenet-5'; did you mean lenet5" in error({"model": "lenet-5"})
    assert "unknown dataset 'cifar'; did you mean cifar10" in error({"dataset": "cifar"})
    assert "takes inputs of shape (1, 28, 28) but dataset 'cifar10' gives (3, 32, 32)" in error(
        {"model": "lenet5", "dataset": "cifar10"})
    assert "has 10 outputs but dataset 'fake' has 7 classes" in error(
        {"model": "lenet5", "dataset": "fake", "fake_classes": 7})
    assert "CUDA is not available" in error({"device": "cuda"})


def test_yaml_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [lenet5\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")
    path.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(path)


def test_filter_pruning_of_the_classifier_needs_prune_outputs():
    from admm_explorer.engine.session import check_recipe

    def stages(fc2):
        return {"stages": [{"kind": "admm", "targets": {"conv1": {"sparsity": 0.5, "structure": "filter"}, "fc2": fc2}}]}

    with pytest.raises(RecipeError, match="would remove rows of fc2"):
        check_recipe(parse_recipe(stages({"sparsity": 0.5, "structure": "filter+column"})))
    check_recipe(parse_recipe(stages({"sparsity": 0.5, "structure": "column"})))  # columns are inputs: fine
    check_recipe(parse_recipe(stages({"sparsity": 0.5, "structure": "filter", "prune_outputs": True})))
