"""Splits: slices, seeded and stratified hold-outs, explicit files per split, k folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlrun.data.prepare import prepare
from dlrun.data.splits import holdout, kfold, slice_indices
from dlrun.errors import RecipeError
from tests.test_data_sources import data_spec, sklearn_csv, write_csv


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("train", (0, 200)),
        ("train[:10%]", (0, 20)),
        ("train[10%:25%]", (20, 50)),
        ("train[80%:]", (160, 200)),
        ("test[:50]", (0, 50)),
        ("train[-20:]", (180, 200)),
        ("train[ 5 : 15 ]", (5, 15)),
    ],
)
def test_slice_syntax(expr, expected):
    idx = slice_indices(expr, 200, ("data", "splits", "train"))
    assert (idx[0], idx[-1] + 1) == expected


@pytest.mark.parametrize("expr", ["train[:10", "training[:5]", "train[a:b]", "train[50%:10%]", "train[:150%]"])
def test_bad_slices_are_one_line_errors(expr):
    with pytest.raises(RecipeError) as err:
        slice_indices(expr, 200, ("data", "splits", "validation"))
    assert str(err.value).startswith("data.splits.validation: ")


def test_holdout_is_seeded_and_stratified():
    labels = np.array([0] * 80 + [1] * 20)
    keep, held = holdout(100, 0.25, seed=3, labels=labels, where=("data",))
    assert len(held) == 25 and np.bincount(labels[held]).tolist() == [20, 5]
    assert set(keep) | set(held) == set(range(100)) and not set(keep) & set(held)
    again = holdout(100, 0.25, seed=3, labels=labels, where=("data",))
    assert np.array_equal(again[1], held)
    other = holdout(100, 0.25, seed=4, labels=labels, where=("data",))
    assert not np.array_equal(other[1], held)


def test_kfold_holds_every_row_out_once_and_stratifies():
    labels = np.array([0] * 30 + [1] * 12)
    folds = kfold(42, 3, seed=0, labels=labels)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(42))
    for train, h in folds:
        assert np.bincount(labels[h]).tolist() == [10, 4]
        assert not set(train) & set(h)
    with pytest.raises(RecipeError, match="--folds must be at least 2"):
        kfold(42, 1, seed=0)


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("iris")
    sklearn_csv(folder, "iris")
    return folder


def _iris(**extra):
    return data_spec(
        source="csv",
        path="iris.csv",
        inputs={"x": {"from": ["sepal_length_cm", "petal_length_cm"]}},
        targets={"y": {"from": "label"}},
        **extra,
    )


def test_validation_and_test_split_are_seeded_stratified_and_disjoint(tmp_path):
    ids, labels = np.arange(150), np.repeat([0, 1, 2], 50)
    np.savez(tmp_path / "d.npz", id=ids, y=labels)
    spec = data_spec(
        source="npz",
        path="d.npz",
        validation_split=0.2,
        test_split=0.2,
        stratify=True,
        inputs={"x": {"from": "id"}},
        targets={"y": {"from": "y"}},
    )
    prepared = prepare(spec, tmp_path, seed=7)
    counts = {s: prepared.count(s) for s in prepared.splits}
    assert counts == {"train": 96, "test": 30, "validation": 24}
    for split in ("test", "validation"):
        assert np.bincount(prepared.splits[split][1]["y"]).tolist() == [counts[split] // 3] * 3
    rows = [set(prepared.splits[s][0]["x"].tolist()) for s in ("train", "validation", "test")]
    assert set().union(*rows) == set(range(150)) and sum(map(len, rows)) == 150  # every row in one split
    again = prepare(spec, tmp_path, seed=7)
    assert np.array_equal(again.splits["validation"][0]["x"], prepared.splits["validation"][0]["x"])
    other = prepare(spec, tmp_path, seed=8)
    assert not np.array_equal(other.splits["validation"][0]["x"], prepared.splits["validation"][0]["x"])


def test_slices_make_splits_in_file_order(iris_csv):
    prepared = prepare(_iris(splits={"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"}),
                       iris_csv, seed=0)  # fmt: skip
    assert {s: prepared.count(s) for s in prepared.splits} == {"train": 120, "validation": 15, "test": 15}
    assert set(prepared.splits["test"][1]["y"].tolist()) == {2}  # the file is sorted by class


def test_explicit_files_per_split(tmp_path):
    write_csv(tmp_path / "a.csv", ["v", "y"], [[1, 0], [2, 1], [3, 0]])
    write_csv(tmp_path / "b.csv", ["v", "y"], [[9, 1]])
    spec = data_spec(
        source="csv",
        path=".",
        files={"train": "a.csv", "test": "b.csv"},
        inputs={"v": {"from": "v"}},
        targets={"y": {"from": "y"}},
    )
    prepared = prepare(spec, tmp_path, seed=0)
    assert prepared.splits["test"][0]["v"].tolist() == [9]


def test_a_validation_split_on_data_that_has_one_is_an_error(tmp_path):
    np.savez(
        tmp_path / "d.npz", x_train=np.zeros((4, 1)), y_train=np.zeros(4), x_val=np.zeros((2, 1)), y_val=np.zeros(2)
    )
    spec = data_spec(
        source="npz", path="d.npz", validation_split=0.5, inputs={"x": {"from": "x"}}, targets={"y": {"from": "y"}}
    )
    with pytest.raises(RecipeError, match=r"^data\.validation_split: the data already has a validation split"):
        prepare(spec, tmp_path, seed=0)


def test_class_weight_balanced_and_by_label(iris_csv):
    prepared = prepare(_iris(splits={"train": "train[:70%]"}, class_weight="balanced"), iris_csv, seed=0)
    w = prepared.weights["train"]
    y = prepared.splits["train"][1]["y"]  # 50, 50, 5 rows of classes 0, 1, 2
    assert w[y == 0][0] == pytest.approx(105 / (3 * 50)) and w[y == 2][0] == pytest.approx(105 / (3 * 5))
    prepared = prepare(_iris(class_weight={"class_2": 4.0}), iris_csv, seed=0)
    y = prepared.splits["train"][1]["y"]
    assert prepared.weights["train"][y == 2].tolist() == [4.0] * 50 and set(prepared.weights["train"][y < 2]) == {1.0}


def test_sample_weight_column(tmp_path):
    write_csv(tmp_path / "w.csv", ["v", "y", "w"], [[1, 0, 0.5], [2, 1, 2.0]])
    spec = data_spec(
        source="csv", path="w.csv", sample_weight="w", inputs={"v": {"from": "v"}}, targets={"y": {"from": "y"}}
    )
    prepared = prepare(spec, tmp_path, seed=0)
    assert prepared.weights["train"].tolist() == [0.5, 2.0]
    prepared.shuffle = False
    data = prepared.feed("train", ["v"], ["y"], batch_size=2)
    _, _, w = next(iter(data.pipeline))
    assert data.streamed and w.numpy().tolist() == [0.5, 2.0]
