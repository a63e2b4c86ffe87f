"""The README's first lines are the two set-up commands, and its Python example runs as written."""
import re
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
API = REPO / "docs" / "api.md"


def test_setup_commands_first():
    first, second = README.read_text().splitlines()[:2]
    assert first.strip() == "pip install -e '.[ui]' && admm-explorer dashboard"
    assert second.strip() == "pip install -e '.[test]' && python -m pytest"


def test_python_example_runs(capsys):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["0", "1", "2"]  # one residual line per epoch
    model, masks = scope["model"], scope["masks"]
    kept = {name: int(mask.sum()) for name, mask in masks.items()}
    assert kept == {"conv1": 100, "conv2": 2000, "fc1": 3600, "fc2": 350}  # paper 1's rates, exactly
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert torch.count_nonzero(w[~mask]) == 0  # still zero after masked retraining


def test_reweighted_and_quantization_example_runs(capsys):
    first = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    second = re.search(r"```python\n(.*?)```", API.read_text(), re.S).group(1)  # continues the README's example
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(first, "README.md", "exec"), scope)  # the model the README has trained and pruned so far
    exec(compile(second, "README.md", "exec"), scope)
    model, masks = scope["model"], scope["masks"]
    assert sum(int(m.sum()) for m in masks.values()) == round(430_500 / 300)  # exactly the global budget
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert torch.count_nonzero(w[~mask]) == 0  # pruned stay 0.0
        assert w[mask].abs().unique().numel() == 1  # kept: +-alpha
    printed = capsys.readouterr().out.splitlines()[-1].split()
    assert printed[1] == "bytes" and int(printed[0]) < 431_080 * 4 / 100
