"""What dlrun does differently under KERAS_BACKEND=torch (and, for deterministic resume, jax).

Keras' torch trainer runs one step per call, cannot feed TensorFlow's SavedModel/TFLite converters, and
its Dropout without a seed draws from torch's global generator; each test pins down how dlrun handles it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, write_digits, write_recipe

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


@pytest.mark.slow
def test_torch_refuses_several_steps_per_call_in_one_line_and_reports_its_devices(cli, tmp_path):
    write_digits(tmp_path, n_train=200, n_test=50)
    recipe = write_recipe(tmp_path, DIGITS)
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), "--set", "compile.steps_per_execution=4",
                 env=TORCH)  # fmt: skip
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(  # located at the override that set it
        "error: --set compile.steps_per_execution=4: compile.steps_per_execution: steps_per_execution 4 needs the"
    )
    assert "Traceback" not in result.stderr
    environment = json.loads(next((tmp_path / "runs").glob("digits/*/run.json")).read_text())["environment"]
    assert environment["backend"] == "torch" and "cpu" in environment["devices"]
    assert all(re.fullmatch(r"cpu|cuda:\d+|mps", d) for d in environment["devices"]), environment["devices"]


@pytest.mark.slow
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


DROPOUT = """
name: resume
seed: 11
data:
  source: npz
  path: data.npz
  inputs: {x: {from: x}}
  targets: {y: {from: y, steps: [{one_hot: 3}]}}
  validation_split: 0.2
model:
  inputs: {x: {shape: [32]}}
  layers:
    - {type: Dense, units: 128, activation: relu}
    - {type: Dropout, rate: 0.3}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.001}
  loss: categorical_crossentropy
  metrics: [accuracy]
train: {epochs: 3, batch_size: 32, deterministic: true, tensorboard: false}
"""

# `dlrun train` that dies (like SIGKILL) right after epoch 1's resumable state is on disk.
DIE_AFTER_EPOCH_1 = """
import os, sys
from dlrun.engine import callbacks as fit
save = fit.ResumeState.save
def save_then_die(self, model, epoch, history):
    save(self, model, epoch, history)
    if epoch == 1:
        os._exit(9)
fit.ResumeState.save = save_then_die
from dlrun.cli import entry
sys.argv = ["dlrun", *sys.argv[1:]]
entry()
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in ("jax", "torch") if importlib.util.find_spec(b)])
def test_deterministic_resume_gives_the_uninterrupted_weights(cli, tmp_path, backend):
    """Under torch, Dropout without a seed draws from torch's global generator and fit's DataLoader draws from
    it too, so dlrun reseeds it per epoch; jax and torch read the same seeded per-epoch tf.data stream as
    tensorflow. Before: resumed weights differed by up to 0.04 (torch) and 0.03 (jax)."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 32)).astype("float32")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=x[:, :3].argmax(1), x_test=x[:200], y_test=x[:200, :3].argmax(1))
    recipe = write_recipe(tmp_path, DROPOUT)
    env = {"KERAS_BACKEND": backend}
    straight = cli("train", str(recipe), "--runs", str(tmp_path / "straight"), "--json", env=env)
    assert straight.code == 0, straight.stderr

    killed = subprocess.run(
        [sys.executable, "-c", DIE_AFTER_EPOCH_1, "train", str(recipe), "--runs", str(tmp_path / "killed"), "--quiet"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == 9, killed.stderr
    run = next((tmp_path / "killed").glob("resume/*"))
    assert json.loads((run / "resume" / "state.json").read_text())["epoch"] == 1
    resumed = cli("train", "--resume", str(run), "--json", env=env)
    assert resumed.code == 0, resumed.stderr

    first = Path(json.loads(straight.stdout)["run"])
    for a, b in zip(
        keras.saving.load_model(first / "model.keras").get_weights(),
        keras.saving.load_model(run / "model.keras").get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    loss = [json.loads((r / "history.json").read_text())["loss"] for r in (first, run)]
    assert loss[0] == loss[1] and len(loss[0]) == 3


BLOCKS = DIGITS.replace(
    "model:\n",
    """blocks:
  residual:
    params: {units: 32}
    layers:
      - {name: dense, type: Dense, units: "${units}", activation: relu}
      - {name: norm, type: BatchNormalization}
      - {name: add, type: Add, inputs: [x, norm]}
model:
""",
).replace(
    "    - {type: Dense, units: 32, activation: relu}\n",
    "    - {name: stem, type: Dense, units: 32, activation: relu}\n    - {name: stage, type: residual, repeat: 2}\n",
)


@pytest.mark.slow
def test_block_copies_named_with_dots_train_under_torch_and_load_there_from_tensorflow(cli, tmp_path):
    """Keras' torch layers key their variables in a torch ParameterDict, which refuses dots: block copies
    ("stage.1.dense") failed with 'parameter name can't contain "."' — recipes/resnet34.yaml, senet, vgg16,
    inception, xception_small and fashion_mnist_cnn could not even be built under torch."""
    write_digits(tmp_path, n_train=400, n_test=100)
    recipe = write_recipe(tmp_path, BLOCKS.replace("epochs: 1", "epochs: 3"))
    under_torch = cli("train", str(recipe), "--runs", str(tmp_path / "torch"), "--json", env=TORCH)
    assert under_torch.code == 0, under_torch.stderr[-2000:]
    history = json.loads(Path(json.loads(under_torch.stdout)["run"], "history.json").read_text())
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]  # the copies' weights train
    layers = json.loads(cli("summary", str(recipe), "--expand", "--json", env=TORCH).stdout)["layers"]
    assert {"stage.1.dense", "stage.2.norm"} <= {layer["name"] for layer in layers}
    under_tf = cli("train", str(recipe), "--runs", str(tmp_path / "tf"), "--json")
    assert under_tf.code == 0, under_tf.stderr[-2000:]
    tf_run = json.loads(under_tf.stdout)
    again = cli("eval", tf_run["run"], "--json", env=TORCH)
    assert again.code == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["metrics"]["accuracy"] == pytest.approx(tf_run["metrics"]["accuracy"], abs=1e-6)


BUILD_EVERY_RECIPE = """
import json, sys
from pathlib import Path
from dlrun import api
counts = {}
for path in sorted(Path(sys.argv[1]).glob("*.yaml")):
    counts[path.stem] = api.build_model(api.load_recipe(path)).count_params()
print(json.dumps(counts))
"""


@pytest.mark.slow
def test_every_shipped_recipe_builds_under_torch_with_the_same_parameters(tmp_path):
    """Six of the shipped recipes (every one with blocks) did not build under torch (dotted layer names)."""
    import yaml

    recipes = ROOT / "recipes"
    env = {**os.environ, **TORCH, "DLRUN_DATA_DIR": str(ROOT.parent / "shared" / "data")}
    done = subprocess.run([sys.executable, "-c", BUILD_EVERY_RECIPE, str(recipes)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(counts) == {p.stem for p in recipes.glob("*.yaml")}
    for name, count in counts.items():
        expected = (yaml.safe_load((recipes / f"{name}.yaml").read_text()).get("expect") or {}).get("params")
        if expected is not None:
            assert count == expected, name
