"""`train.distribute: {strategy: model_parallel, mesh, layout}`: keras.distribution.ModelParallel under JAX on
8 CPU devices (XLA's host platform device count), against the same recipe on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, write_digits, write_recipe

# 384 training samples (and 128 for validation), 12 full batches of 32: nothing is left out when batches are split over the mesh's
# batch axis, and without shuffling both runs see the same batches in the same order.
RECIPE = """
name: digits_mp
seed: 5
data:
  source: npz
  path: digits.npz
  inputs: {pixels: {from: x}}
  targets: {digit: {from: y, steps: [{one_hot: 10}]}}
  validation_split: 0.25
model:
  inputs: {pixels: {shape: [64]}}
  layers:
    - {name: hidden, type: Dense, units: 64, activation: relu}
    - {name: digit, type: Dense, units: 10, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.005}
  loss: categorical_crossentropy
  metrics: [accuracy]
train:
  epochs: 3
  batch_size: 32
  shuffle: false
  tensorboard: false
"""

# Megatron's pair: the first kernel split by columns (its bias with it), the second by rows.
SHARDED = (
    RECIPE
    + """\
  distribute:
    strategy: model_parallel
    cpu_devices: 8
    mesh: {batch: 2, model: 4}
    layout:
      hidden/kernel: [null, model]
      hidden/bias: [model]
      digit/kernel: [model, null]
"""
)

BOTH = """
import json, sys
from pathlib import Path
import numpy as np
from dlrun import api

results = []
for recipe in sys.argv[1:3]:
    result = api.train(recipe, runs_root=Path(sys.argv[3]), quiet=True)
    weights = {v.path: np.asarray(v) for v in result.model.weights}
    shardings = {v.path: list(getattr(v.value.sharding, "spec", [])) for v in result.model.weights}
    results.append((result, weights, shardings))
(one, w1, _), (sharded, w2, spec) = results
print(json.dumps({
    "history": [one.history, sharded.history],
    "metrics": [one.metrics, sharded.metrics],
    "weights": max(float(np.max(np.abs(w1[k] - w2[k]))) for k in w1),
    "scale": max(float(np.max(np.abs(w1[k]))) for k in w1),
    "spec": spec,
}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
            "NO_COLOR": "1", "COLUMNS": "200"}  # fmt: skip


@pytest.mark.slow
def test_sharded_run_gives_the_numbers_of_one_device(tmp_path):
    """The kernels are really split (their sharding names the mesh axes), and the numbers are one device's.
    Measured (Keras 3.15.1, JAX 0.10.2, CPU): final weights at most 2.4e-7 apart (largest 0.44), test loss
    0.6560367 vs 0.6560366, test accuracy 0.87 both; about 20 s of CPU for both runs."""
    pytest.importorskip("jax")
    pytest.importorskip("sklearn")
    write_digits(tmp_path, n_train=512, n_test=200)
    one = write_recipe(tmp_path, RECIPE, "one.yaml")
    sharded = write_recipe(tmp_path, SHARDED, "sharded.yaml")
    proc = subprocess.run([sys.executable, "-c", BOTH, str(one), str(sharded), str(tmp_path / "runs")], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["spec"]["hidden/kernel"] == [None, "model"], out["spec"]
    assert out["spec"]["hidden/bias"] == ["model"], out["spec"]
    assert out["spec"]["digit/kernel"] == ["model", None], out["spec"]
    single, split = out["history"]
    assert len(single["loss"]) == len(split["loss"]) == 3
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert split.get(key) == pytest.approx(single.get(key), rel=1e-4, abs=1e-5), key
    assert out["metrics"][1] == pytest.approx(out["metrics"][0], rel=1e-4, abs=1e-5)
    assert out["weights"] < 1e-4 * max(1.0, out["scale"]), out
    print(json.dumps({k: out[k] for k in ("weights", "scale", "metrics")}))


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (
            "      dense/kernel: [null, model]\n",
            "train.distribute.layout.dense/kernel: layout key 'dense/kernel' matches no variable of the model "
            "(did you mean 'hidden/kernel'?)",
        ),
        pytest.param(
            "      hidden/kernel: [model]\n",
            "variable 'hidden/kernel' has shape [64, 64] (2 dimensions) but this layout gives 1",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "      digit/kernel: [null, model]\n",
            "variable 'digit/kernel' has 10 along dimension 1, which the 4 devices of mesh axis 'model' do not divide",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["no-match", "rank", "indivisible"],
)
def test_a_layout_that_fits_no_variable_is_a_located_line(cli, tmp_path, layout, message):
    """Checked as Keras creates each variable, and once the model is built: no XLA error, no run folder."""
    pytest.importorskip("jax")
    write_digits(tmp_path, n_train=64, n_test=32)
    text = SHARDED[: SHARDED.index("    layout:\n") + len("    layout:\n")] + layout
    recipe = write_recipe(tmp_path, text)
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), env={"KERAS_BACKEND": "jax"})
    assert result.code == 2, result.stderr[-3000:]
    line = text.splitlines().index(layout.strip("\n")) + 1
    assert f"error: {recipe}:{line}:" in result.stderr and message in result.stderr, result.stderr
    if "matches no variable" in message:  # the paths that exist, to write a key that matches
        assert "whole variable paths: hidden/kernel, hidden/bias, digit/kernel, digit/bias" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_mesh_that_does_not_cover_the_devices_is_a_located_line(cli, tmp_path):
    pytest.importorskip("jax")
    write_digits(tmp_path, n_train=64, n_test=32)
    recipe = write_recipe(tmp_path, SHARDED.replace("mesh: {batch: 2, model: 4}", "mesh: {batch: 2, model: 2}"))
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), env={"KERAS_BACKEND": "jax"})
    assert result.code == 2, result.stderr[-3000:]
    line = SHARDED.splitlines().index("    mesh: {batch: 2, model: 4}") + 1
    assert f"error: {recipe}:{line}:" in result.stderr, result.stderr
    assert "train.distribute.mesh: the mesh (batch 2 x model 2) has 4 devices but this run has 8" in result.stderr
    assert not (tmp_path / "runs").exists()


SMALL = """name: small
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {name: y, type: Dense, units: 2}
compile: {optimizer: adam, loss: mse}
train:
  distribute: %s
"""


@pytest.mark.parametrize(
    ("distribute", "message"),
    [
        ("{strategy: data_parallel, mesh: {batch: 2}}", "mesh is for strategy model_parallel only"),
        ("{strategy: model_parallel}", "strategy model_parallel needs a mesh"),
        ("{strategy: model_parallel, mesh: {batch: 2}, layout: {y/kernel: [null, modle]}}",
         "'modle' is not a mesh axis; each dimension is one of batch or null"),
        ("{strategy: model_parallel, mesh: {batch: 2}, layout: {'(': [batch]}}", "not a regular expression"),
        ("{strategy: model_parallel, mesh: {a: 2}, batch_dim_name: b}", "batch_dim_name 'b' is not a mesh axis (a)"),
        ("data_paralel", "expected 'mirrored', 'multi_worker', 'data_parallel' or 'model_parallel'"),
    ],
)  # fmt: skip
def test_distribute_is_checked_when_the_recipe_loads(tmp_path, distribute, message):
    from dlrun.api import load_recipe
    from dlrun.errors import RecipeError

    path = write_recipe(tmp_path, SMALL % distribute)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert message in str(caught.value) and f"{path}:8:" in str(caught.value), str(caught.value)


def test_a_strategy_name_alone_is_shorthand(tmp_path):
    from dlrun.api import load_recipe

    distribute = load_recipe(write_recipe(tmp_path, SMALL % "data_parallel")).recipe.train.distribute
    assert distribute is not None and distribute.strategy == "data_parallel" and distribute.mesh is None
