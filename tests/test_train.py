"""Training behaviour: parity with hand-written Keras, stages, callbacks, restore-best, run folders."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from dlrun import api
from tests.conftest import RECIPES, write_recipe


def test_same_seed_same_result_as_hand_written_keras(shared_data, tmp_path):
    """dlrun adds nothing to the numbers: the seeds' MLP trained by hand gives the identical metrics."""
    loaded = api.load_recipe(RECIPES / "mnist.yaml", overrides=["data.head=4000", "train.epochs=1"])  # file order
    ours = api.train(loaded, runs_root=tmp_path / "runs", quiet=True).metrics

    keras.utils.set_random_seed(loaded.recipe.seed)
    with np.load(shared_data / "mnist.npz") as d:
        x = d["x_train"][:4000].reshape(-1, 784).astype("float32") / 255
        y = keras.utils.to_categorical(d["y_train"][:4000], 10)
        xt = d["x_test"][:4000].reshape(-1, 784).astype("float32") / 255
        yt = keras.utils.to_categorical(d["y_test"][:4000], 10)
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    theirs = model.evaluate(xt, yt, verbose=0, return_dict=True)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-6)
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)


TOY = """
name: toy
seed: 3
data:
  source: npz
  path: toy.npz
  inputs: {x: {from: x}}
  targets: {y: {from: y, steps: [{one_hot: 2}]}}
  validation_split: 0.25
model:
  inputs: {x: {shape: [6]}}
  layers:
    - {name: base1, type: Dense, units: 16, activation: relu}
    - {name: base2, type: Dense, units: 16, activation: relu}
    - {name: y, type: Dense, units: 2, activation: softmax}
compile:
  optimizer: {type: SGD, learning_rate: 0.1}
  loss: categorical_crossentropy
  metrics: [accuracy]
train:
  batch_size: 16
  callbacks:
    - {type: ModelCheckpoint, monitor: val_loss, save_best_only: true}
"""


def _toy(tmp_path, text=TOY, n=200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64")
    np.savez(tmp_path / "toy.npz", x_train=x[: n * 3 // 4], y_train=y[: n * 3 // 4], x_test=x[n * 3 // 4 :],
             y_test=y[n * 3 // 4 :])  # fmt: skip
    return api.load_recipe(write_recipe(tmp_path, text))


STAGES = """
  stages:
    - name: head
      epochs: 2
      trainable: {freeze: ["base*"]}
      optimizer: {type: SGD, learning_rate: 0.2}
    - name: all
      epochs: 3
      trainable: {unfreeze: all}
      optimizer: {type: SGD, learning_rate: 0.01}
"""


def test_stages_freeze_then_unfreeze(tmp_path):
    loaded = _toy(tmp_path, TOY + STAGES)
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            snapshots.append({layer.name: [w.numpy().copy() for w in layer.weights] for layer in self.model.layers})

    from dlrun.engine import callbacks as fit

    original = fit.make_callbacks

    def with_snapshot(comps, run, importer, base):
        return [*original(comps, run, importer, base), Snapshot()]

    fit.make_callbacks = with_snapshot
    try:
        keras.utils.set_random_seed(3)
        initial = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in api.build_model(loaded).layers}
        result = api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    finally:
        fit.make_callbacks = original
    # snapshots: [base callbacks stage 1, stage-1 callbacks, base stage 2, stage-2 callbacks]: take one per stage.
    after_head, after_all = snapshots[0], snapshots[-1]

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    assert same(after_head["base1"], initial["base1"]) and same(after_head["base2"], initial["base2"])
    assert not same(after_head["y"], initial["y"])
    assert not same(after_all["base1"], after_head["base1"]) and not same(after_all["y"], after_head["y"])
    assert result.history["epoch"] == [1, 2, 3, 4, 5]  # history spans both stages
    history = json.loads((result.run.path / "history.json").read_text())
    assert len(history["loss"]) == 5


SPOILED_LAST_EPOCH = """
  stages:
    - {name: learn, epochs: 4}
    - {name: spoil, epochs: 1, optimizer: {type: SGD, learning_rate: 25.0}}
"""


def test_best_checkpoint_is_restored_at_the_end(tmp_path, restore="true"):
    """The last epoch (a far too large learning rate) is the worst: only restoring gives the best weights."""
    loaded = _toy(tmp_path, TOY + SPOILED_LAST_EPOCH + f"  restore_best: {restore}\n")
    result = api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    val = result.history["val_loss"]
    assert int(np.argmin(val)) < len(val) - 1 and val[-1] > min(val)  # the best epoch is not the last
    best = result.run.checkpoints / "best.weights.h5"
    reference = api.build_model(loaded)
    reference.load_weights(str(best))
    for a, b in zip(result.model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_run_folders_are_never_reused(tmp_path):
    loaded = _toy(tmp_path, TOY.replace("    - {type: ModelCheckpoint, monitor: val_loss, save_best_only: true}", "    []")
                  .replace("  callbacks:\n    []", "  callbacks: []"))  # fmt: skip
    first = api.train(loaded, runs_root=tmp_path / "runs", quiet=True).run.path
    second = api.train(loaded, runs_root=tmp_path / "runs", quiet=True).run.path
    assert first != second and first.parent == second.parent


def test_fast_defaults_change_no_results(tmp_path):
    """32 steps per call (what 'auto' picks for a small model's long run) gives the same training as one step
    per call. (The toy run is short, so its own 'auto' is 1: the 32 is set explicitly.)"""
    _toy(tmp_path)
    fast_recipe = api.load_recipe(tmp_path / "recipe.yaml", overrides=["compile.steps_per_execution=32"])
    fast = api.train(fast_recipe, runs_root=tmp_path / "fast", quiet=True)
    assert fast.model.steps_per_execution == 32
    slow_recipe = api.load_recipe(tmp_path / "recipe.yaml", overrides=["compile.steps_per_execution=1"])
    slow = api.train(slow_recipe, runs_root=tmp_path / "slow", quiet=True)
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(fast.history[key], slow.history[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(fast.model.get_weights(), slow.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
