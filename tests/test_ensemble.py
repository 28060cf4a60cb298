"""`dlrun ensemble`: independently seeded digits runs, scored against NumPy, exported and loaded back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from dlrun import api
from dlrun.errors import RecipeError
from dlrun.trust import record_run
from tests.conftest import write_digits as _write_digits
from tests.conftest import write_recipe

RECIPE = """
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
    - {name: hidden, type: Dense, units: 16, activation: relu}
    - {name: digit, type: Dense, units: 10, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.01}
  loss: categorical_crossentropy
  metrics: [accuracy]
  jit_compile: false
train: {epochs: 2, batch_size: 32}
"""


def write_digits(folder, n_train=500, n_test=300):
    """sklearn's digits as digits.npz in `folder` (see conftest.write_digits)."""
    return _write_digits(folder, n_train, n_test, seed=1)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three runs of one recipe that differ only in their seed, plus the test split and each model's predictions."""
    folder = tmp_path_factory.mktemp("ensemble")
    x_test, y_test = write_digits(folder)
    recipe = write_recipe(folder, RECIPE)
    runs = []
    for seed in (1, 2, 3):
        loaded = api.load_recipe(recipe, overrides=[f"seed={seed}"])
        runs.append(api.train(loaded, runs_root=folder / "runs", quiet=True).run.path)
    predictions = [keras.saving.load_model(run / "model.keras").predict(x_test, verbose=0) for run in runs]
    return {"folder": folder, "recipe": recipe, "runs": runs, "x": x_test, "y": y_test, "p": predictions}


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


def test_mean_ensemble_matches_numpy_and_the_export_predicts_the_same(members, tmp_path):
    file = tmp_path / "ensemble.keras"
    result = api.ensemble(members["runs"], export=file)
    mean = np.mean(members["p"], axis=0)
    assert result["samples"] == len(members["y"]) and result["split"] == "test"
    assert result["ensemble"]["metrics"]["accuracy"] == pytest.approx(_accuracy(mean, members["y"]), abs=1e-6)
    one_hot = np.eye(10)[members["y"]]
    loss = -np.mean(np.sum(one_hot * np.log(np.clip(mean, 1e-7, 1.0)), axis=1))
    assert result["ensemble"]["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    for member, p in zip(result["members"], members["p"], strict=True):
        assert member["metrics"]["accuracy"] == pytest.approx(_accuracy(p, members["y"]), abs=1e-6)
    # the members differ (independent seeds) and the ensemble is at least as good as the worst of them
    accuracies = [m["metrics"]["accuracy"] for m in result["members"]]
    assert len({round(a, 6) for a in accuracies}) > 1
    assert result["ensemble"]["metrics"]["accuracy"] >= min(accuracies)

    loaded = keras.saving.load_model(file)  # plain Keras, built-in layers only
    assert [layer.name for layer in loaded.layers[-1:]] == ["digit"]
    assert np.allclose(loaded.predict(members["x"], verbose=0), mean, atol=1e-6)


def test_weighted_mean_and_majority_vote(members, tmp_path):
    weighted = api.ensemble(members["runs"], weights="2,1,1", export=tmp_path / "weighted.keras")
    w = np.array([0.5, 0.25, 0.25])
    expected = np.tensordot(w, np.stack(members["p"]), axes=1)
    assert weighted["weights"] == pytest.approx(list(w))
    assert weighted["ensemble"]["metrics"]["accuracy"] == pytest.approx(_accuracy(expected, members["y"]), abs=1e-6)
    exported = keras.saving.load_model(tmp_path / "weighted.keras").predict(members["x"], verbose=0)
    assert np.allclose(exported, expected, atol=1e-6)

    vote = api.ensemble(members["runs"], method="vote")
    classes = np.stack([p.argmax(axis=1) for p in members["p"]])  # (members, samples)
    counts = np.stack([(classes == k).sum(axis=0) for k in range(10)], axis=1)
    mean = np.mean(members["p"], axis=0)
    winner = (counts + 1e-9 * mean).argmax(axis=1)  # the most votes; among tied classes, the highest mean
    assert (counts.max(axis=1) == 1).any()  # three different answers happen: ties are exercised
    assert vote["ensemble"]["metrics"]["accuracy"] == pytest.approx(float((winner == members["y"]).mean()), abs=1e-6)


def test_members_must_share_inputs_and_outputs(members, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(members["runs"][0], other)
    text = RECIPE.replace("units: 10, activation: softmax", "units: 3, activation: softmax")
    changed = write_recipe(tmp_path, text.replace("one_hot: 10", "one_hot: 3"))
    api.build_model(api.load_recipe(changed)).save(other / "model.keras")
    record_run(other, [])  # a run folder made on purpose: its integrity record matches its new model
    (other / "recipe.yaml").write_text(
        (other / "recipe.yaml").read_text().replace("units: 10, activation: softmax", "units: 3, activation: softmax")
    )
    with pytest.raises(RecipeError, match=r"has outputs digit \[3\] but .* has digit \[10\]; ensemble members must"):
        api.ensemble([members["runs"][0], other])

    with pytest.raises(RecipeError, match="at least two runs"):
        api.ensemble(members["runs"][:1])
    with pytest.raises(RecipeError, match="--weights has 2 numbers for 3 runs"):
        api.ensemble(members["runs"], weights="1,2")
    with pytest.raises(RecipeError, match="--export writes the mean ensemble"):
        api.ensemble(members["runs"], method="vote", export=tmp_path / "v.keras")


@pytest.mark.slow
def test_cli_ensemble_table(members, cli):
    table = cli("ensemble", *[str(r) for r in members["runs"]], "--weights", "1,1,2")
    assert table.code == 0, table.stderr
    assert "ensemble (mean) of 3 runs on test (300 samples)" in table.stdout
    header = next(line for line in table.stdout.splitlines() if "metric" in line)
    assert all(run.name in header for run in members["runs"]) and "ensemble" in header
    assert any(line.split("│")[1].strip() == "accuracy" for line in table.stdout.splitlines() if "│" in line)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("{members: [1]}", r"ensemble\.members: expected at least 2 items"),
        ("{members: [1, 1]}", r"ensemble: `members` lists the same member twice"),
        ("{members: [1, 2], weights: [1]}", r"ensemble: `weights` has 1 numbers for 2 members"),
        ("{members: [1, 2], method: median}", r"ensemble\.method: expected 'mean' or 'vote'"),
        ("{members: [1, 2], mehtod: vote}", r"unknown key 'mehtod' \(did you mean 'method'\?\)"),
    ],
)
def test_ensemble_section_is_validated(tmp_path, section, expected):
    recipe = write_recipe(tmp_path, RECIPE + f"ensemble: {section}\n")
    with pytest.raises(RecipeError, match=expected):
        api.load_recipe(recipe)


def test_ensemble_section_member_files_must_exist(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE + "ensemble: {members: [1, other.yaml]}\n")
    with pytest.raises(RecipeError, match=r"recipe\.yaml:\d+:\d+: ensemble\.members\[1\]: member recipe not found"):
        api.train_ensemble(recipe, runs_root=tmp_path / "runs")
    plain = write_recipe(tmp_path, RECIPE, "plain.yaml")
    with pytest.raises(RecipeError, match="has no `ensemble:` section"):
        api.train_ensemble(plain, runs_root=tmp_path / "runs")


@pytest.mark.slow
def test_recipe_declared_ensemble_trains_its_members(members, tmp_path, cli):
    shutil.copy(members["folder"] / "digits.npz", tmp_path / "digits.npz")
    recipe = write_recipe(tmp_path, RECIPE + "ensemble: {members: [4, 5], method: vote}\n")
    result = cli("ensemble", str(recipe), "--runs", str(tmp_path / "runs"), "--json", "--export", "x.keras")
    assert result.code == 2 and "--export writes the mean ensemble" in result.stderr
    data = json.loads(cli("ensemble", str(recipe), "--runs", str(tmp_path / "runs"), "--json").stdout)
    assert data["method"] == "vote" and len(data["members"]) == 2 and "accuracy" in data["ensemble"]["metrics"]
    seeds = [json.loads((Path(m["run"]) / "run.json").read_text())["seed"] for m in data["members"]]
    assert seeds == [4, 5]
    for m in data["members"]:
        assert "ensemble" not in api.load_recipe(Path(m["run"]) / "recipe.yaml").doc.data  # ordinary runs
