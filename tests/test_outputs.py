"""What each output is (engine/outputs.py): decided once at train time, saved as outputs.json, and the one
answer that eval, predict and check give; reports by class name, in the target's original units."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from dlrun import api
from dlrun.verbs.report import classification_report
from tests.conftest import write_recipe

RECIPE = """
name: kinds
seed: 1
data:
  source: npz
  path: data.npz
  inputs: {{x: {{from: x}}}}
  targets: {{y: {{from: y{steps}}}}}
model:
  inputs: {{x: {{shape: [4]}}}}
  layers:
    - {{type: Dense, units: 8, activation: relu}}
    - {{name: y, type: Dense, units: 1{activation}}}
compile: {{optimizer: adam, loss: mse}}
train: {{epochs: 1, batch_size: 32, tensorboard: false}}
"""


def _run(tmp_path, y: np.ndarray, *, steps: str = "", activation: str = ""):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(y), 4)).astype("float32")
    np.savez(tmp_path / "data.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    np.save(tmp_path / "new.npy", x[160:])
    recipe = write_recipe(tmp_path, RECIPE.format(steps=steps, activation=activation))
    run = api.train(api.load_recipe(recipe), runs_root=tmp_path / "runs", quiet=True).run.path
    return run, x[160:], y[160:]


def _predicted(run, name: str = "y") -> list[str]:
    api.predict(run, run.parent.parent.parent / "new.npy", overwrite=True)
    with (run / "predictions" / "new.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return list(rows[0])


def test_a_sigmoid_trained_with_mse_on_0_1_targets_is_one_regression_for_eval_predict_and_check(tmp_path):
    y = (np.random.default_rng(1).random(200) > 0.5).astype("float32")
    run, _, _ = _run(tmp_path, y, activation=", activation: sigmoid")
    saved = json.loads((run / "outputs.json").read_text(encoding="utf-8"))
    assert saved["y"]["kind"] == "regression"
    assert api.evaluate(run)["reports"]["y"]["kind"] == "regression"  # was a confusion matrix
    assert _predicted(run) == ["row", "y"]
    assert api.check(run / "recipe.yaml")["output_kinds"] == {"y": "regression"}
    (run / "outputs.json").unlink()  # a run from before outputs.json: the same answer, derived
    assert api.evaluate(run)["reports"]["y"]["kind"] == "regression"
    assert _predicted(run) == ["row", "y"]


def test_regression_reports_and_predictions_are_in_the_targets_original_units(tmp_path):
    y = (np.random.default_rng(2).normal(size=200) * 30 + 500).astype("float32")
    run, x_test, y_test = _run(tmp_path, y, steps=", steps: [{scale: {divide: 100, offset: -5}}]")
    scaled = keras.saving.load_model(str(run / "model.keras")).predict(x_test, verbose=0).reshape(-1)
    original = (scaled.astype("float64") + 5) * 100
    report = api.evaluate(run)["reports"]["y"]
    assert report["mae"] == pytest.approx(np.abs(original - y_test).mean(), rel=1e-5)
    assert "original" in report["units"]
    api.predict(run, tmp_path / "new.npy", output=tmp_path / "out.json")
    values = [row["y"]["value"] for row in json.loads((tmp_path / "out.json").read_text())["predictions"]]
    np.testing.assert_allclose(values, original, rtol=1e-5)


def test_macro_averages_count_only_the_classes_present_and_name_the_absent_ones():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.eye(3)[[0, 1, 1, 1]]
    rep = classification_report(y_true, y_pred, ["cat", "dog", "eel"])
    assert rep["labels"] == ["cat", "dog", "eel"] and rep["absent"] == ["eel"]
    assert rep["macro"]["recall"] == pytest.approx((0.5 + 1.0) / 2)  # not (0.5 + 1.0 + 0) / 3
