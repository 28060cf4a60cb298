"""Output hygiene: full-width tables when piped, `import` says what it wrote, no TensorFlow start-up lines,
run folders that replay from anywhere, live runs listed as running, the resume command, `show --defaults`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlrun import api
from dlrun.cli import _resume_hint, main
from dlrun.engine import liveness
from dlrun.engine.rundir import RunDir
from dlrun.errors import RecipeError
from dlrun.recipe.load import load_file
from dlrun.verbs.runs import status
from tests.conftest import RECIPES, ROOT, write_recipe

TINY_MNIST = """
name: replay
seed: 0
data:
  source: mnist
  inputs: {image: {from: x, steps: [{reshape: [784]}, {scale: {divide: 255}}]}}
  targets: {digit: {from: y, steps: [{one_hot: 10}]}}
model:
  inputs: {image: {shape: [784]}}
  layers: [{name: digit, type: Dense, units: 10, activation: softmax}]
compile: {optimizer: adam, loss: categorical_crossentropy, metrics: [accuracy]}
train: {epochs: 1, batch_size: 32, tensorboard: false}
"""


def test_a_run_folder_replays_from_any_folder_after_a_relative_data_dir(tmp_path, monkeypatch):
    """`DLRUN_DATA_DIR=../data dlrun train ...` (the README's line): the run's recipe.yaml stores the data
    file's absolute path, so it trains again from another folder without the variable."""
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    x, y = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64)
    np.savez(tmp_path / "data" / "mnist.npz", x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])
    work = tmp_path / "work"
    work.mkdir()
    recipe = write_recipe(work, TINY_MNIST)
    monkeypatch.chdir(work)
    monkeypatch.setenv("DLRUN_DATA_DIR", "../data")
    first = api.train(api.load_recipe(recipe), runs_root=work / "runs", quiet=True)
    stored = yaml.safe_load(first.run.recipe.read_text())["data"]["path"]
    assert stored == str(tmp_path / "data" / "mnist.npz")

    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("DLRUN_DATA_DIR")
    again = api.train(api.load_recipe(first.run.recipe), runs_root=elsewhere / "runs", quiet=True)
    assert again.metrics == pytest.approx(first.metrics)


def _fake_run(root, name="run", stamp="20260101-000000"):
    run = root / name / stamp
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: x\n")
    return run


def test_runs_table_keeps_whole_paths_when_piped(tmp_path, cli):
    root = tmp_path / ("a-long-folder-name-" * 5)
    run = _fake_run(root, name="some_recipe_with_a_long_name")
    result = cli("runs", str(root), env={"COLUMNS": ""})  # piped, no terminal width to fit
    assert result.code == 0, result.stderr
    assert len(str(run)) > 80
    assert any(str(run) in line for line in result.stdout.splitlines()), result.stdout


def test_a_live_run_shows_as_running_and_a_dead_one_does_not(tmp_path):
    run = RunDir(_fake_run(tmp_path))
    assert status(run) == "incomplete"
    mark = liveness.mark_live(run.path)
    try:
        assert status(run) == "running"
    finally:
        mark.close()
    assert status(run) == "incomplete" and not (run.path / liveness.LIVE_FILE).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"pid": int(dead.stdout), "host": os.uname().nodename, "start": None}
    (run.path / liveness.LIVE_FILE).write_text(json.dumps(record))
    assert status(run) == "incomplete"  # killed without cleaning up: its process is gone
    (run.path / liveness.LIVE_FILE).write_text(json.dumps({**record, "pid": os.getpid(), "host": "elsewhere"}))
    assert status(run) == "running"  # another host: a fresh heartbeat
    os.utime(run.path / liveness.LIVE_FILE, (0, 0))
    assert status(run) == "incomplete"  # ... and a stale one


def test_the_resume_command_is_printed_only_when_there_is_state(tmp_path):
    run = _fake_run(tmp_path / "my runs")
    assert _resume_hint(run, trust=False) == f"nothing to resume: {run} stopped before its first epoch ended"
    (run / "resume").mkdir()
    (run / "resume" / "state.json").write_text("{}")
    assert _resume_hint(run, trust=True) == f"resume with: dlrun train --resume '{run}' --trust"
    assert _resume_hint(None, trust=False) is None
    # a run named by --run-id: the same command again (what every process of a multi-process run is given)
    hint = _resume_hint(run, trust=False, recipe=Path("r.yaml"), run_id="nightly")
    assert hint == "resume with: dlrun train r.yaml --run-id nightly"


def test_a_recipe_named_without_its_suffix_gets_a_suggestion():
    with pytest.raises(
        RecipeError, match=r"recipe file not found: .*recipes/mnist \(did you mean .*recipes/mnist.yaml\?\)"
    ):
        load_file(RECIPES / "mnist")
    with pytest.raises(RecipeError, match=r"recipe file not found: \S*nothing_like_it$"):
        load_file(RECIPES / "nothing_like_it")


@pytest.mark.parametrize("name", ["mnist", "penguins", "transfer_xception", "resnet34"])
def test_show_defaults_prints_every_default_and_loads_back_the_same(name, tmp_path, capsys):
    assert main(["show", "--defaults", str(RECIPES / f"{name}.yaml")]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    original = api.load_recipe(RECIPES / f"{name}.yaml")
    assert shown["train"]["shuffle"] is True and "restore_best" in shown["train"]  # defaults it did not write
    assert "jit_compile" in shown["compile"] and "backend" in shown
    assert shown["compile"]["optimizer"] == original.resolved()["compile"]["optimizer"]  # as written
    if original.recipe.data is not None:
        assert "validation_split" in shown["data"]
        assert shown["data"].get("path") == original.resolved()["data"].get("path")
    again = api.load_recipe(write_recipe(tmp_path, yaml.safe_dump(shown)))
    assert again.recipe.model_dump() == original.recipe.model_dump()


def test_import_says_what_it_wrote(tmp_path, capsys):
    import keras

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="y")(inputs), name="tiny")
    model.save(tmp_path / "tiny.keras")
    assert main(["import", str(tmp_path / "tiny.keras"), "-o", str(tmp_path / "tiny.yaml")]) == 0
    assert (
        capsys.readouterr().err.strip()
        == f"wrote {tmp_path / 'tiny.yaml'} (recipe tiny); next: dlrun check {tmp_path / 'tiny.yaml'}"
    )


@pytest.mark.slow  # a fresh interpreter loading TensorFlow: ~6 s
def test_tensorflow_loads_without_start_up_lines_through_the_python_api(tmp_path):
    """absl's pre-init lines, oneDNN, cudart, cuInit: TensorFlow writes them to fd 2 whatever
    TF_CPP_MIN_LOG_LEVEL says; `import dlrun` hides them wherever TensorFlow first loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "DLRUN_VERBOSE")}
    code = "import dlrun, keras; print(float(keras.ops.sum(keras.ops.ones(3))))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3.0\n"
    assert done.stderr == ""
