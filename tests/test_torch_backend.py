"""What dlrun does differently under KERAS_BACKEND=torch.

Keras' torch trainer runs one step per call; each test pins down how dlrun handles it.
"""

from __future__ import annotations

import importlib.util
import json
import re

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
