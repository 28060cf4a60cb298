"""What dlrun does differently under KERAS_BACKEND=torch.

Keras' torch trainer runs one step per call and cannot feed TensorFlow's SavedModel/TFLite converters;
each test pins down how dlrun handles it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from tests.conftest import write_digits, write_recipe

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")

TORCH = {"KERAS_BACKEND": "torch"}

DIGITS = """
name: digits
seed: 0
data:
  source: npz
  path: digits.npz
  inputs: {pixels: {from: x}}
  targets: {digit: {from: y, steps: [{one_hot: 10}]}}
model:
  inputs: {pixels: {shape: [64]}}
  layers:
    - {type: Dense, units: 32, activation: relu}
    - {name: digit, type: Dense, units: 10, activation: softmax}
compile:
  optimizer: adam
  loss: categorical_crossentropy
  metrics: [accuracy]
train: {epochs: 1, batch_size: 32, tensorboard: false}
"""


def test_torch_refuses_several_steps_per_call_in_one_line_and_reports_its_devices(cli, tmp_path):
    write_digits(tmp_path, n_train=200, n_test=50)
    recipe = write_recipe(tmp_path, DIGITS)
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), "--set", "compile.steps_per_execution=4",
                 env=TORCH)  # fmt: skip
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: compile.steps_per_execution: steps_per_execution 4 needs the tensorflow")
    assert "Traceback" not in result.stderr
    environment = json.loads(next((tmp_path / "runs").glob("digits/*/run.json")).read_text())["environment"]
    assert environment["backend"] == "torch" and "cpu" in environment["devices"]
    assert all(re.fullmatch(r"cpu|cuda:\d+|mps", d) for d in environment["devices"]), environment["devices"]


def test_a_tensorflow_run_evaluates_and_exports_under_torch(cli, tmp_path):
    """Trained with the 'auto' steps per call (32 under tensorflow, saved in model.keras), then loaded by torch."""
    write_digits(tmp_path, n_train=300, n_test=100)
    trained = cli("train", str(write_recipe(tmp_path, DIGITS)), "--runs", str(tmp_path / "runs"), "--json",
                  env={"KERAS_BACKEND": "tensorflow"})  # fmt: skip
    assert trained.code == 0, trained.stderr
    out = json.loads(trained.stdout)
    run = out["run"]

    evaluated = cli("eval", run, "--json", env=TORCH)
    assert evaluated.code == 0, evaluated.stderr
    for name, value in out["metrics"].items():
        assert json.loads(evaluated.stdout)["metrics"][name] == pytest.approx(value, abs=1e-5)

    exported = cli("export", run, "--format", "keras", "--json", env=TORCH)  # RUN/export/ does not exist yet
    assert exported.code == 0, exported.stderr
    assert json.loads(exported.stdout)["verified"] and Path(run, "export", "model.keras").is_file()

    for fmt in ("tflite", "savedmodel"):
        refused = cli("export", run, "--format", fmt, env=TORCH)
        assert refused.code == 2 and "Traceback" not in refused.stderr
        assert refused.stderr.strip() == (
            f"error: {fmt} export needs the tensorflow or jax backend, not torch; model.keras loads on any "
            f"backend: run KERAS_BACKEND=tensorflow dlrun export RUN --format {fmt}"
        )
