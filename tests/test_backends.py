"""Backends and distribution: the same recipe on TensorFlow, JAX and torch (each installed one), mirrored."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_digits, write_recipe

RECIPE = """
name: parity
seed: 5
data:
  source: npz
  path: data.npz
  inputs: {x: {from: x}}
  targets: {y: {from: y, steps: [{one_hot: 3}]}}
model:
  inputs: {x: {shape: [16]}}
  layers:
    - {type: Dense, units: 64, activation: relu}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.01}
  loss: categorical_crossentropy
  metrics: [accuracy]
train: {epochs: 8, batch_size: 32}
"""


def _data(tmp_path, n=1500):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = (x[:, :3] @ np.array([1.0, -1.0, 0.5]) > 0).astype("int64") + (x[:, 3] > 1).astype("int64")
    cut = n * 4 // 5
    np.savez(tmp_path / "data.npz", x_train=x[:cut], y_train=y[:cut], x_test=x[cut:], y_test=y[cut:])


def _train(cli, tmp_path, recipe, env=None, *extra):
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), "--json", *extra, env=env)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


INSTALLED = [b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b)]

DIGITS = """
name: parity
seed: 0
data:
  source: npz
  path: digits.npz
  inputs: {pixels: {from: x}}
  targets: {digit: {from: y, steps: [{one_hot: 10}]}}
model:
  inputs: {pixels: {shape: [64]}}
  layers:
    - {type: Dense, units: 64, activation: relu}
    - {type: Dropout, rate: 0.1}
    - {name: digit, type: Dense, units: 10, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.005}
  loss: categorical_crossentropy
  metrics: [accuracy]
train: {epochs: 12, batch_size: 32, tensorboard: false}
"""


@pytest.mark.slow
def test_same_recipe_on_every_installed_backend_reaches_the_same_band(cli, tmp_path):
    """Real data (sklearn's 8x8 digits: 1,400 train, the other 397 test), one recipe and seed, each backend
    in its own process. Measured (Keras 3.15.1, 2 CPU cores), seeds 0/1/2: tensorflow 0.982/0.975/0.985,
    jax 0.980/0.977/0.982, torch 0.977/0.982/0.982 (at most 0.008 apart for one seed); about 10 s per backend
    (torch 13-40 s on a busy machine). One epoch reaches about 0.9, and a backend that does not train, or
    pairs inputs with the wrong labels, would sit near chance (0.1): neither reaches the band."""
    write_digits(tmp_path, n_train=1400, n_test=397)
    recipe = write_recipe(tmp_path, DIGITS)
    accuracy = {}
    for backend in INSTALLED:
        out = _train(cli, tmp_path, recipe, {"KERAS_BACKEND": backend})
        assert json.loads(Path(out["run"], "run.json").read_text())["environment"]["backend"] == backend
        accuracy[backend] = out["metrics"]["accuracy"]
    assert min(accuracy.values()) > 0.96, accuracy
    assert max(accuracy.values()) - min(accuracy.values()) < 0.03, accuracy


@pytest.mark.parametrize("backend", INSTALLED)
def test_every_installed_backend_trains_a_tiny_recipe(cli, tmp_path, backend):
    write_digits(tmp_path, n_train=300, n_test=100)
    out = _train(
        cli, tmp_path, write_recipe(tmp_path, DIGITS.replace("epochs: 12", "epochs: 1")), {"KERAS_BACKEND": backend}
    )
    environment = json.loads(Path(out["run"], "run.json").read_text())["environment"]
    assert environment["backend"] == backend and environment[backend] and environment["devices"]
    assert out["metrics"]["accuracy"] > 0.25  # one epoch of 10 steps: 0.44-0.61 measured; chance is 0.1


@pytest.mark.slow
def test_backend_field_in_the_recipe_selects_the_backend(cli, tmp_path):
    pytest.importorskip("jax")
    _data(tmp_path, n=300)
    recipe = write_recipe(
        tmp_path, RECIPE.replace("seed: 5", "seed: 5\nbackend: jax").replace("epochs: 8", "epochs: 1")
    )
    out = _train(cli, tmp_path, recipe)
    assert json.loads(Path(out["run"], "run.json").read_text())["environment"]["backend"] == "jax"


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_single_device(cli, tmp_path):
    _data(tmp_path)
    single = _train(cli, tmp_path, write_recipe(tmp_path, RECIPE))
    mirrored_text = RECIPE.replace(
        "train: {epochs: 8, batch_size: 32}",
        "train: {epochs: 8, batch_size: 32, distribute: {strategy: mirrored, cpu_devices: 2}}",
    )
    mirrored = _train(cli, tmp_path, write_recipe(tmp_path, mirrored_text, "mirrored.yaml"))
    devices = json.loads(Path(mirrored["run"], "run.json").read_text())["environment"]["devices"]
    assert sum("CPU" in d for d in devices) == 2
    assert abs(mirrored["metrics"]["accuracy"] - single["metrics"]["accuracy"]) < 0.04


def test_mixed_precision_policy_trains(cli, tmp_path):
    _data(tmp_path, n=600)
    text = RECIPE.replace(
        "train: {epochs: 8, batch_size: 32}", "train: {epochs: 3, batch_size: 32, precision: mixed_bfloat16}"
    )
    out = _train(cli, tmp_path, write_recipe(tmp_path, text))
    assert out["metrics"]["accuracy"] > 0.6


@pytest.mark.slow
def test_jax_data_parallel_on_two_cpu_devices_matches_single_device(cli, tmp_path):
    pytest.importorskip("jax")
    _data(tmp_path)
    single = _train(cli, tmp_path, write_recipe(tmp_path, RECIPE), {"KERAS_BACKEND": "jax"})
    text = RECIPE.replace(
        "train: {epochs: 8, batch_size: 32}",
        "train: {epochs: 8, batch_size: 32, distribute: {strategy: data_parallel, cpu_devices: 2}}",
    )
    parallel = _train(cli, tmp_path, write_recipe(tmp_path, text, "dp.yaml"), {"KERAS_BACKEND": "jax"})
    assert len(json.loads(Path(parallel["run"], "run.json").read_text())["environment"]["devices"]) == 2
    assert abs(parallel["metrics"]["accuracy"] - single["metrics"]["accuracy"]) < 0.04
