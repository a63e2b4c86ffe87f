"""The recipe: a YAML file describing a run (setup + stages), validated completely before any work.

Errors are RecipeError with one line naming the field, the bad value and what is allowed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import RecipeError
from .registry import did_you_mean

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OptimizerSpec(Strict):
    name: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["none", "step", "cosine"] = "none"
    step_size: int = Field(10, ge=1)  # epochs between lr drops (step schedule)
    gamma: float = Field(0.1, gt=0, le=1)  # lr factor at each drop (step schedule)


class StageSpec(Strict):
    """Fields every stage kind has; each kind adds its own (see engine.stages)."""

    kind: str
    eval_every: float = Field(1.0, gt=0)  # epochs between test-set evaluations

    def chooses(self) -> bool:
        """Whether the stage chooses between alternatives by accuracy (on the validation set, when there is one)."""
        return False


DEFAULT_VALIDATION_SHARE = 0.1  # of the training set, held out when a stage chooses and the recipe names none


class Recipe(Strict):
    model: str = "lenet5"
    pretrained: bool = False  # torchvision ImageNet weights (downloaded: only when asked)
    dataset: str = "mnist-sample"
    data_root: Path | None = None
    test_root: Path | None = None
    download: bool = False
    batch_size: int = Field(64, ge=1)
    test_batch_size: int = Field(1000, ge=1)
    # training examples held out (a fixed draw) for the stages that choose (purify's tau and its retrain): a count,
    # or a share of the training set in (0, 1); None: DEFAULT_VALIDATION_SHARE when a stage chooses, else 0;
    # 0 with a choosing stage: it chooses on the test set (and says so)
    validation: int | float | None = None
    fake_size: int = Field(1000, ge=1)
    fake_shape: tuple[int, int, int] | None = None
    fake_classes: int | None = Field(None, ge=2)
    device: str = Field("auto", pattern=DEVICE_PATTERN)  # under torchrun, cuda means each rank's own GPU
    # the training forward's precision: autocast to bfloat16 or float16 (fp16 with a gradient scaler); the
    # weights, the ADMM penalty, Z-step, U-step and residuals stay float32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False  # NHWC memory format for the model's 4-d weights and inputs (tensor cores)
    # batches between reads of the per-batch figures from the device (events, the NaN check, a stop);
    # None: every batch on the CPU (nothing to wait for), every 25 on an accelerator
    log_every: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=0)  # DataLoader processes (imagenet, fake); None: imagenet up to 8, fake 0
    seed: int = Field(0, ge=0)
    start: Path | None = None  # None = random init; else a checkpoint (.pt) written by a run or by the dashboard
    stages: list[StageSpec] = Field(default_factory=list)

    @field_validator("stages", mode="before")
    @classmethod
    def _stages(cls, stages: Any) -> list[StageSpec]:
        if not isinstance(stages, list):
            raise ValueError("must be a list of stages, each with a kind")
        return [parse_stage(s, f"stages[{i}]") for i, s in enumerate(stages)]

    @field_validator("validation")
    @classmethod
    def _validation(cls, v: int | float | None) -> int | float | None:
        if v is not None and (isinstance(v, bool) or (v < 0 if isinstance(v, int) else not 0 < v < 1)):
            raise ValueError("give a count of training examples to hold out (0, 1, 2, ...) or a share of the "
                             "training set strictly between 0 and 1")
        return v

    @model_validator(mode="after")
    def _default_validation(self) -> "Recipe":
        if self.validation is None:  # set directly: an assignment would validate the whole model again
            self.__dict__["validation"] = DEFAULT_VALIDATION_SHARE if any(s.chooses() for s in self.stages) else 0
        return self

    @field_validator("data_root", "test_root", "start")
    @classmethod
    def _absolute(cls, p: Path | None) -> Path | None:
        # relative to the working directory the run starts in; stored absolute so a resumed run finds them
        return None if p is None else p.expanduser().resolve()

    def resolved(self) -> dict:
        """The recipe with every default filled in, as plain YAML-able data."""
        data = self.model_dump(mode="json")
        data["stages"] = [s.model_dump(mode="json") for s in self.stages]
        return data


def stage_models() -> dict[str, type[StageSpec]]:
    from .engine.stages import STAGES

    return {kind: entry.spec for kind, entry in STAGES.items()}


def parse_stage(data: Any, where: str) -> StageSpec:
    if isinstance(data, StageSpec):
        return data
    if not isinstance(data, dict) or "kind" not in data:
        raise RecipeError(f"{where}: each stage needs a kind (one of {', '.join(stage_models())})")
    models = stage_models()
    kind = data["kind"]
    if kind not in models:
        raise RecipeError(f"{where}.kind = {kind!r} is not a stage kind{did_you_mean(kind, models)} (allowed: "
                          f"{', '.join(models)})")
    try:
        return models[kind].model_validate(data)
    except ValidationError as e:
        raise RecipeError(describe(e, where)) from None


# pydantic's names for the members of a union ("function-after[_consistent(), LayerTarget]", "float"): they
# mean nothing to a user, and every member reports its own error for the same field
UNION_MEMBER = re.compile(r"^(function-\w+\[.*\]|float|int|str|bool|\w*Target|\w*Spec|list\[.*\]|dict\[.*\])$")
WRONG_MEMBER = {"float_type", "float_parsing", "int_type", "int_parsing", "dict_type", "model_type",
                "model_attributes_type", "string_type", "bool_type", "bool_parsing"}


def describe(error: ValidationError, where: str = "") -> str:
    """One line per problem: 'field.path = value: what is allowed'. Of the errors a union's members give for
    one field, the one from the member the value was meant for is kept."""
    by_path: dict[str, list[dict]] = {}
    for err in error.errors():
        parts = [str(p) for p in err["loc"] if not UNION_MEMBER.match(str(p))]
        path = ".".join(parts)
        path = f"{where}.{path}" if where and path else (where or path)
        by_path.setdefault(path, []).append(err)
    lines = []
    for path, errs in by_path.items():
        if all(e["type"] in WRONG_MEMBER for e in errs) and any(p.startswith(path + ".") for p in by_path):
            continue  # a member the value was not meant for: another member's error inside the value says why
        meant = [e for e in errs if e["type"] not in WRONG_MEMBER] or errs
        if len(meant) > 1 and all(e["type"] in WRONG_MEMBER for e in meant):
            value = meant[0].get("input")
            lines.append(f"{path} = {value!r}: must be " + " or ".join(sorted({kind(e) for e in meant})))
            continue
        for err in meant[:1] if len(errs) > 1 else meant:
            value = err.get("input")
            shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" = {value!r}"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "is not a known field (check the spelling)"
            lines.append(f"{path}{shown}: {message}")
    return "; ".join(lines)


def kind(err: dict) -> str:
    return {"float_type": "a number", "float_parsing": "a number", "int_type": "an integer",
            "int_parsing": "an integer", "dict_type": "a mapping", "model_type": "a mapping",
            "model_attributes_type": "a mapping", "string_type": "a string", "bool_type": "true or false",
            "bool_parsing": "true or false"}[err["type"]]


def parse_recipe(data: dict | None, source: str = "recipe") -> Recipe:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of fields (model, dataset, stages, ...)")
    data = dict(data)
    stages = data.pop("stages", [])
    if not isinstance(stages, list):
        raise RecipeError(f"{source}: stages must be a list of stages, each with a kind")
    # stages first, each on its own, so an error names stages[i] and not the whole list
    parsed = [parse_stage(stage, f"stages[{i}]") for i, stage in enumerate(stages)]
    try:
        return Recipe.model_validate({**data, "stages": parsed})
    except ValidationError as e:
        raise RecipeError(f"{source}: {describe(e)}") from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except DuplicateKey as e:
        raise RecipeError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    return parse_recipe(data, str(path))


class DuplicateKey(yaml.YAMLError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKey(f"line {line}: {key!r} is given twice in the same mapping (first on line "
                                   f"{seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.resolved(), sort_keys=False)
