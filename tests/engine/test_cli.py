import subprocess
import sys

import yaml


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "admm_explorer.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_lists():
    models = cli("models")
    assert models.returncode == 0
    assert "lenet5" in models.stdout and "1x28x28 -> 10" in models.stdout and "resnet50" in models.stdout
    datasets = cli("datasets")
    assert datasets.returncode == 0 and "mnist-sample" in datasets.stdout and "fake" in datasets.stdout


def write(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def one_error_line(result):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_clear_errors(tmp_path):
    assert "did you mean lenet5" in one_error_line(cli("run", str(write(tmp_path, {"model": "lenet"})),
                                                        "--out", str(tmp_path / "o")))
    assert "did you mean cifar10" in one_error_line(cli("run", str(write(tmp_path, {"dataset": "cifar-10"})),
                                                         "--out", str(tmp_path / "o")))
    assert "takes inputs of shape" in one_error_line(
        cli("run", str(write(tmp_path, {"model": "resnet20"})), "--out", str(tmp_path / "o")))
    ok = write(tmp_path, {"stages": [{"kind": "pretrain", "epochs": 0.1}]})
    (tmp_path / "f").write_text("")
    assert "not writable" in one_error_line(cli("run", str(ok), "--out", str(tmp_path / "f" / "o")))
    missing = write(tmp_path, {"model": "resnet20", "dataset": "cifar10", "data_root": str(tmp_path / "none"),
                               "stages": [{"kind": "pretrain", "epochs": 0.1}]})
    assert "CIFAR-10 is not in" in one_error_line(cli("run", str(missing), "--out", str(tmp_path / "o2")))
    (tmp_path / "c.pt").write_bytes(b"PK\x03\x04 truncated zip")
    corrupt = write(tmp_path, {"start": str(tmp_path / "c.pt"), "stages": [{"kind": "pretrain", "epochs": 0.1}]})
    assert "corrupt" in one_error_line(cli("run", str(corrupt), "--out", str(tmp_path / "o3")))


def test_run_and_resume_from_cli(tmp_path):
    recipe = write(tmp_path, {"device": "cpu", "stages": [{"kind": "pretrain", "epochs": 0.2}]})
    done = cli("run", str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    again = cli("run", "--resume", str(tmp_path / "run"))
    assert again.returncode == 2 and "already finished" in again.stderr


def test_recipes_the_old_check_let_through_are_refused_before_any_work(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    for recipe in (empty, write(tmp_path, {"stages": []})):
        line = one_error_line(cli("run", str(recipe), "--out", str(tmp_path / "o")))
        assert "the recipe has no stages, so the run would train nothing" in line
        assert not (tmp_path / "o").exists()
    (tmp_path / "dup.yaml").write_text("seed: 1\nstages:\n  - kind: admm\n    targets: {conv1: 0.5, conv1: 0.9}\n")
    assert one_error_line(cli("run", str(tmp_path / "dup.yaml"), "--out", str(tmp_path / "o"))) == (
        f"error: {tmp_path / 'dup.yaml'}: line 4: 'conv1' is given twice in the same mapping (first on line 4); "
        "keep one")
    bits0 = write(tmp_path, {"stages": [{"kind": "admm", "targets": {"conv1": {"bits": 0}}}]})
    assert one_error_line(cli("run", str(bits0), "--out", str(tmp_path / "o"))) == (
        "error: stages[0].targets.conv1.bits = 0: bits=0 is not allowed: bits must be an integer from 1 to 8 "
        "(1 binary, 2 ternary, 3..8 symmetric b-bit levels)")
    classes = write(tmp_path, {"stages": [{"kind": "admm", "targets": {"*": {"sparsity": 0.5, "structure": "filter"}}}]})
    line = one_error_line(cli("run", str(classes), "--out", str(tmp_path / "o")))
    assert line.startswith("error: stages[0] (admm): targets.fc2: structure 'filter' would remove rows of fc2, whose "
                           "outputs are the network's outputs (its classes)")
    assert not (tmp_path / "o").exists()


def test_a_failed_stage_says_how_to_go_on(tmp_path):
    recipe = write(tmp_path, {"device": "cpu", "stages": [
        {"kind": "pretrain", "epochs": 0.1},
        {"kind": "pretrain", "epochs": 1, "optimizer": {"name": "adam", "lr": 10.0}}]})
    failed = cli("run", str(recipe), "--out", str(tmp_path / "o"), "--quiet")
    assert failed.returncode == 1
    error, hint = failed.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: stage 1 (pretrain, train): training diverged")
    out = tmp_path / "o"
    assert hint == (f"everything written so far is in {out}. To go on, fix stages[1] in {out / 'recipe.yaml'} (the "
                    f"recipe --resume reads), then: admm-explorer run --resume {out}; or start a new run from the "
                    f"last good checkpoint: start: {out / 'checkpoints' / 'stage0-pretrain.pt'}")
