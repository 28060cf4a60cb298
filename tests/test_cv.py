"""`dlrun cv`: K ordinary training sessions, one per fold, on the same engine as `dlrun train`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlrun import api
from dlrun.cli import main
from dlrun.verbs.cv import cross_validate
from tests.conftest import write_recipe
from tests.test_data_sources import sklearn_csv
from tests.test_data_train import _iris_recipe

BOOM = """
import keras

class Boom(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("boom from a callback")
"""


def _with(recipe: Path, **train: object) -> Path:
    doc = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    doc["train"].update(train)
    return write_recipe(recipe.parent, yaml.safe_dump(doc, sort_keys=False), recipe.name)


def test_each_fold_is_a_run_validated_on_its_held_out_fold_with_best_weights_restored(tmp_path):
    sklearn_csv(tmp_path, "iris")
    checkpoint = {"type": "ModelCheckpoint", "monitor": "val_loss", "save_best_only": True}
    recipe = _with(_iris_recipe(tmp_path, epochs=8), callbacks=[checkpoint])
    result = cross_validate(api.load_recipe(recipe, ["data.validation_split=0.2"]), 3, runs_root=tmp_path / "runs")
    assert result["folds"] == 3 and result["stratified"] is True and result["samples"] == 120
    assert "ddof=1" in result["std"]
    for name in ("accuracy", "loss"):
        values = [fold[name] for fold in result["per_fold"]]
        assert result["metrics"][name]["folds"] == values
        assert result["metrics"][name]["mean"] == pytest.approx(np.mean(values))
        assert result["metrics"][name]["std"] == pytest.approx(np.std(values, ddof=1))
    assert result["metrics"]["accuracy"]["mean"] > 0.7
    held: list[int] = []
    for i, folder in enumerate(map(Path, result["fold_runs"])):
        fold = json.loads((folder / "fold.json").read_text(encoding="utf-8"))
        assert len(fold["train"]) + len(fold["held_out"]) == 120 and not set(fold["train"]) & set(fold["held_out"])
        held += fold["held_out"]
        history = json.loads((folder / "history.json").read_text(encoding="utf-8"))
        assert len(history["val_loss"]) == 8  # validated every epoch on the held-out fold, not on validation_split
        assert (folder / "model.keras").is_file() and (folder / "recipe.yaml").is_file()
        # scored with the best epoch's weights, on the same rows it validated on
        assert result["per_fold"][i]["loss"] == pytest.approx(min(history["val_loss"]), rel=1e-4)
    assert sorted(held) == list(range(120))
    saved = json.loads((Path(result["run"]) / "cv.json").read_text(encoding="utf-8"))
    assert saved["metrics"] == result["metrics"]


def test_a_raising_callback_fails_cv_as_it_fails_train(tmp_path, capsys):
    sklearn_csv(tmp_path, "iris")
    (tmp_path / "boom.py").write_text(BOOM, encoding="utf-8")
    recipe = _with(_iris_recipe(tmp_path, epochs=1), callbacks=["boom.py:Boom"])
    doc = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    recipe = write_recipe(tmp_path, yaml.safe_dump({**doc, "imports": ["boom.py"]}, sort_keys=False), recipe.name)
    runs = str(tmp_path / "runs")
    train_code = main(["train", str(recipe), "--runs", runs, "--quiet"])
    cv_code = main(["cv", str(recipe), "--folds", "2", "--runs", runs, "--quiet"])
    assert train_code != 0 and cv_code == train_code
    logs = re.findall(r"(/\S+/error\.log)", capsys.readouterr().err)  # the traceback, kept in the run folder
    assert len(logs) == 2 and "/fold-1/" in logs[1]
    assert all("boom from a callback" in Path(log).read_text(encoding="utf-8") for log in logs)
