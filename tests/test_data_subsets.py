"""Subsets and splits that say what they did: `limit` draws a seeded random (stratified) subset that keeps
every class, `head` keeps file order, and the run folder records the rows of every split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlrun.data.prepare import load_recorded_splits, prepare
from dlrun.data.record import describe, rows_sha256
from dlrun.data.splits import subset
from dlrun.errors import RecipeError
from tests.conftest import write_recipe
from tests.test_data_sources import data_spec

WINE = {"source": "sklearn", "name": "wine", "inputs": {"x": {"from": "x"}}, "targets": {"y": {"from": "y"}}}


def test_wine_limit_50_tests_on_every_class():
    """`wine --set data.limit=50` took the first 50 rows: class 0 only, 'test accuracy 1.0000'."""
    prepared = prepare(data_spec(**WINE, limit=50, test_split=0.2), Path("."), seed=42)
    assert prepared.count("train") + prepared.count("test") == 50
    assert set(prepared.splits["test"][1]["y"].tolist()) == {0, 1, 2}
    assert set(prepared.splits["train"][1]["y"].tolist()) == {0, 1, 2}


def test_stratified_limit_keeps_proportions_and_a_fraction_works():
    prepared = prepare(data_spec(**WINE, limit=0.5, stratify=True), Path("."), seed=0)
    counts = np.bincount(prepared.splits["train"][1]["y"])
    assert counts.tolist() == [30, 35, 24]  # 59/71/48 halved, largest remainders
    again = prepare(data_spec(**WINE, limit=0.5, stratify=True), Path("."), seed=0)
    assert np.array_equal(again.splits["train"][0]["x"], prepared.splits["train"][0]["x"])


def test_subset_never_empties_a_class():
    labels = np.array([0] * 97 + [1, 2, 3])
    for stratified in (True, False):
        for seed in range(20):
            idx = subset(100, 5, seed, labels, stratified=stratified, where=("data", "limit"))
            assert len(idx) == 5 and set(labels[idx].tolist()) == {0, 1, 2, 3}
    with pytest.raises(RecipeError, match=r"^data.limit: a subset of 3 samples cannot keep the 4 classes"):
        subset(100, 3, 0, labels, stratified=True, where=("data", "limit"))


def test_head_keeps_file_order(shared_data):
    spec = data_spec(source="mnist", head=100, inputs={"x": {"from": "x"}}, targets={"y": {"from": "y"}})
    prepared = prepare(spec, Path("."), seed=0)
    assert prepared.splits["train"][1]["y"][:5].tolist() == [5, 0, 4, 1, 9]
    assert prepared.count("test") == 100
    with pytest.raises(Exception, match="exclude each other"):
        data_spec(source="mnist", head=100, limit=10, inputs={"x": {"from": "x"}}, targets={"y": {"from": "y"}})


def test_image_folders_with_limit_keep_every_class(shared_data):
    """CIFAR folders with `limit: 2000` kept 2 of 10 classes (files are listed class by class)."""
    spec = data_spec(
        source="images",
        path=str(shared_data / "flowers12_folders.tar.gz"),
        image_size=[32, 32],
        limit=36,
        inputs={"image": {"from": "image"}},
        targets={"flower": {"from": "label"}},
    )
    tables, record = load_recorded_splits(spec, Path("."), seed=0)
    for split in ("train", "test"):
        labels = tables[split].column("label")
        assert len(labels) == 36 and len(set(labels.tolist())) == 12
    line = describe(record)
    assert line.startswith("data: found 960 files in 12 classes · train 36, test 36 · 12 classes of 'flower'")
    assert set(record.folders["train"].values()) == {60} and set(record.folders["test"].values()) == {20}
    assert {f["files"] for f in record.files} == {720, 240}


def test_data_line_flags_imbalance_and_absent_classes():
    spec = data_spec(**WINE, splits={"train": "train[:100]", "test": "train[100:]"})
    _, record = load_recorded_splits(spec, Path("."), seed=0)
    line = describe(record)
    assert "train 100, test 78" in line and "3 classes of 'y' (train 0:59 1:41 2:0)" in line
    assert "train lacks 2" in line and "sklearn wine sha256 " in line


def test_train_prints_the_data_line_and_saves_the_split_rows(tmp_path, capfd):
    recipe = write_recipe(
        tmp_path,
        """
name: wine_rows
seed: 3
data: {source: sklearn, name: wine, limit: 60, stratify: true, test_split: 0.25, validation_split: 0.2,
       inputs: {x: {from: x, steps: [standardize: true]}}, targets: {y: {from: y}}}
model:
  inputs: {x: {shape: [13]}}
  layers: [{name: y, type: Dense, units: 3, activation: softmax}]
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
train: {epochs: 1, tensorboard: false}
""",
    )
    from dlrun import api

    api.train(api.load_recipe(recipe), runs_root=tmp_path / "runs")
    lines = capfd.readouterr().err.splitlines()
    data_line = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert "train 36, validation 9, test 15 · 3 classes of 'y'" in lines[data_line]
    run = next((tmp_path / "runs" / "wine_rows").iterdir())
    assert data_line < next(i for i, line in enumerate(lines) if line.startswith("run folder"))
    info = json.loads((run / "data.json").read_text())
    rows = np.load(run / "splits.npz")
    from sklearn.datasets import load_wine

    y = load_wine().target
    for split in ("train", "validation", "test"):
        assert info["splits"][split]["from"] == "train"
        assert info["splits"][split]["rows_sha256"] == rows_sha256(rows[split])
        counts = np.bincount(y[rows[split]], minlength=3)
        assert {str(k): int(v) for k, v in enumerate(counts)} == info["splits"][split]["classes"]
    every = np.concatenate([rows[s] for s in rows.files])
    assert len(every) == len(set(every.tolist())) == 60


@pytest.mark.slow
def test_cv_prints_the_data_line_of_its_pool(tmp_path, capfd):
    from dlrun import api

    recipe = write_recipe(
        tmp_path,
        """
name: wine_cv
data: {source: sklearn, name: wine, limit: 60, stratify: true,
       inputs: {x: {from: x, steps: [standardize: true]}}, targets: {y: {from: y}}}
model:
  inputs: {x: {shape: [13]}}
  layers: [{name: y, type: Dense, units: 3, activation: softmax}]
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
train: {epochs: 1, tensorboard: false}
""",
    )
    api.cross_validate(api.load_recipe(recipe), folds=2, runs_root=tmp_path / "runs")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("data: ")]
    assert lines == ["data: train 60 · 3 classes of 'y' (train 0:20 1:24 2:16) · sklearn wine sha256 e1488731b4bc"]
