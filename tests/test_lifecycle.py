"""Run lifecycle: determinism, resume after SIGKILL, graceful signals, NaN stops, failed saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlrun import api
from dlrun.errors import RecipeError
from tests.conftest import ROOT, write_recipe

RECIPE = """
name: lifecycle
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
    - {type: Dense, units: 256, activation: relu}
    - {type: Dropout, rate: 0.3}
    - {type: Dense, units: 256, activation: relu}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.001}
  loss: categorical_crossentropy
  metrics: [accuracy]
train:
  epochs: EPOCHS
  batch_size: 32
  deterministic: true
"""


def _recipe(tmp_path: Path, epochs: int = 3, n: int = 2000) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 32)).astype("float32")
    y = (x[:, :3].argmax(axis=1)).astype("int64")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x[:200], y_test=y[:200])
    return write_recipe(tmp_path, RECIPE.replace("EPOCHS", str(epochs)))


def _final_weights(run: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(str(run / "model.keras")).get_weights()


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def test_two_deterministic_runs_give_identical_metrics(tmp_path):
    recipe = _recipe(tmp_path, epochs=2, n=600)
    first = api.train(api.load_recipe(recipe), runs_root=tmp_path / "runs", quiet=True)
    second = api.train(api.load_recipe(recipe), runs_root=tmp_path / "runs", quiet=True)
    timing = ("seconds",)
    assert {k: v for k, v in first.history.items() if k not in timing} == {
        k: v for k, v in second.history.items() if k not in timing
    }
    assert first.metrics == second.metrics


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_resume_after_a_stop_mid_epoch_gives_the_same_weights(tmp_path, stop):
    """SIGKILL leaves the state of the last complete epoch; SIGINT stops at a step boundary, and the epoch it
    cut short must not be saved as complete (Keras still calls on_epoch_end for it)."""
    recipe = _recipe(tmp_path, epochs=6, n=6000)
    straight = api.train(api.load_recipe(recipe), runs_root=tmp_path / "straight", quiet=True)

    runs = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "train", str(recipe), "--runs", str(runs), "--quiet"],
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    state = None
    while time.monotonic() < deadline:
        found = list(runs.glob("lifecycle/*/resume/state.json"))
        if found and json.loads(found[0].read_text())["epoch"] >= 2:
            state = found[0]
            break
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    assert state is not None, "no resumable state appeared"
    time.sleep(0.3)  # well inside the next epoch
    proc.send_signal(stop)
    assert proc.wait(timeout=120) == (130 if stop == signal.SIGINT else -signal.SIGKILL)
    run = state.parent.parent
    assert not (run / "model.keras").exists()
    saved_epoch = json.loads(state.read_text())["epoch"]
    assert 2 <= saved_epoch < 6

    resumed = subprocess.run(
        [sys.executable, "-m", "dlrun", "train", "--resume", str(run), "--quiet", "--json"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    for a, b in zip(_final_weights(straight.run.path), _final_weights(run), strict=True):
        np.testing.assert_array_equal(a, b)
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3, 4, 5, 6]
    assert history["loss"] == straight.history["loss"]


@pytest.mark.slow
def test_sigint_stops_gracefully_with_exit_130_and_a_resumable_state(tmp_path):
    recipe = _recipe(tmp_path, epochs=50, n=4000)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "train", str(recipe), "--runs", str(runs), "--quiet"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(runs.glob("lifecycle/*/resume/state.json")):
        time.sleep(0.05)
    from dlrun.verbs.runs import list_runs

    assert [r["status"] for r in list_runs(runs)] == ["running"]  # live, not "incomplete, 0 epochs"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted (signal 2)" in err and "Traceback" not in err
    run = next(runs.glob("lifecycle/*"))
    assert json.loads((run / "resume" / "state.json").read_text())["epoch"] >= 1
    assert f"resume with: dlrun train --resume {run}\n" in err
    assert [r["status"] for r in list_runs(runs)] == ["interrupted"]


def test_nan_loss_stops_with_epoch_and_batch(tmp_path):
    recipe = _recipe(tmp_path, epochs=3, n=400)
    loaded = api.load_recipe(recipe, overrides=["compile.optimizer.learning_rate=1e30"])
    with pytest.raises(RecipeError) as info:
        api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    message = str(info.value)
    assert "the loss became nan in epoch 1, batch" in message or "the loss became inf in epoch 1, batch" in message
    assert "training stopped" in message


def test_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import keras

    text = RECIPE.replace("EPOCHS", "3").replace(
        "  deterministic: true",
        "  deterministic: true\n  callbacks: [{type: ModelCheckpoint, filepath: last.weights.h5}]",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 32)).astype("float32")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=x[:, :3].argmax(1), x_test=x[:50], y_test=x[:50, :3].argmax(1))
    loaded = api.load_recipe(write_recipe(tmp_path, text))
    original = keras.Model.save_weights
    calls = {"n": 0}

    def failing_save(self, filepath, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(filepath).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", failing_save)
    with pytest.raises(RecipeError) as info:
        api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    assert "No space left on device" in str(info.value) and "previous checkpoint is intact" in str(info.value)
    checkpoint = next((tmp_path / "runs").glob("lifecycle/*/checkpoints/last.weights.h5"))
    model = api.build_model(loaded)
    model.load_weights(str(checkpoint))  # the epoch-1 checkpoint still loads
    assert not [p for p in checkpoint.parent.iterdir() if p.name != "last.weights.h5"]
