"""train.data_on_device: arrays on the accelerator give the very same training as host arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_recipe

RECIPE = """
name: on_device
seed: 11
data:
  source: npz
  path: data.npz
  validation_split: 0.2
  inputs: {x: {from: x}}
  targets: {y: {from: y, steps: [{one_hot: 3}]}}
model:
  inputs: {x: {shape: [16]}}
  layers:
    - {type: Dense, units: 32, activation: relu}
    - {type: Dropout, rate: 0.2}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.01}
  loss: categorical_crossentropy
  metrics: [accuracy]
train: {epochs: 3, batch_size: 32, tensorboard: false, data_on_device: SETTING}
"""


def _data(tmp_path: Path, n: int = 600) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1).astype("int64")
    np.savez(tmp_path / "data.npz", x_train=x[:500], y_train=y[:500], x_test=x[500:], y_test=y[500:])


@pytest.mark.slow
def test_jax_arrays_on_the_device_train_exactly_like_host_arrays(cli, tmp_path):
    pytest.importorskip("jax")
    _data(tmp_path)
    results = {}
    for setting in ("true", "false"):
        recipe = write_recipe(tmp_path, RECIPE.replace("SETTING", setting), f"{setting}.yaml")
        out = cli("train", str(recipe), "--runs", str(tmp_path / setting), env={"KERAS_BACKEND": "jax"})
        assert out.code == 0, out.stderr
        assert ("training arrays kept on cpu:0" in out.stderr) == (setting == "true")
        (run,) = (tmp_path / setting / "on_device").iterdir()
        metrics = json.loads((run / "eval.json").read_text())["metrics"]
        results[setting] = (metrics, json.loads((run / "history.json").read_text()))
    (on_metrics, on_history), (off_metrics, off_history) = results["true"], results["false"]
    assert on_metrics == pytest.approx(off_metrics, rel=1e-6, abs=1e-7)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(on_history[key], off_history[key], rtol=1e-6, atol=1e-7)


def test_auto_keeps_host_arrays_without_an_accelerator():
    pytest.importorskip("jax")
    from dlrun.data.prepare import SplitData
    from dlrun.engine import device_data

    x = SplitData(np.zeros((10, 4), "float32"), np.zeros(10, "int64"))
    assert device_data._accelerator_bytes() is None  # JAX sees only this CPU: auto keeps host arrays
    assert device_data.wants_device_data("auto", x) is False  # (and this test process runs TensorFlow)
    assert device_data.wants_device_data(False, x) is False
    assert device_data.wants_device_data(True, x) is True


def test_on_device_true_under_tensorflow_is_refused_before_any_run_folder(cli, tmp_path):
    _data(tmp_path, n=600)
    recipe = write_recipe(tmp_path, RECIPE.replace("SETTING", "true"))
    out = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), env={"KERAS_BACKEND": "tensorflow"})
    assert out.code == 2
    assert "train.data_on_device: true needs the jax backend" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
