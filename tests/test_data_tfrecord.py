"""TFRecord source: tf.train.Example shards found by a glob, parsed by a declared feature spec, streamed,
giving the same arrays as the same data in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlrun.data.prepare import load_recorded_splits, prepare
from dlrun.errors import RecipeError
from tests.test_data_sources import data_spec


def _write_shards(folder: Path, x: np.ndarray, y: np.ndarray, names: np.ndarray, shards: int = 3) -> None:
    import tensorflow as tf

    for k, part in enumerate(np.array_split(np.arange(len(y)), shards)):
        with tf.io.TFRecordWriter(str(folder / f"iris-{k:05d}-of-{shards:05d}.tfrecord")) as writer:
            for i in part:
                feature = {
                    "measures": tf.train.Feature(float_list=tf.train.FloatList(value=x[i].tolist())),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])])),
                    "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[names[i].encode()])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_tfrecord_shards_stream_the_same_rows_as_memory(tmp_path):
    from sklearn.datasets import load_iris

    iris = load_iris()
    x, y = iris.data.astype("float32"), iris.target
    _write_shards(tmp_path, x, y, iris.target_names[y])
    features = {
        "measures": {"dtype": "float32", "shape": [4]},
        "label": {"dtype": "int64"},
        "name": {"dtype": "string"},
    }
    spec = data_spec(
        source="tfrecord",
        path="iris-*.tfrecord",
        features=features,
        test_split=0.2,
        stratify=True,
        inputs={"x": {"from": "measures"}},
        targets={"y": {"from": "name"}},
    )
    prepared = prepare(spec, tmp_path, seed=0)
    assert prepared.streamed("train") and prepared.count("train") == 120 and prepared.count("test") == 30
    assert prepared.classes["y"] == ["setosa", "versicolor", "virginica"]
    tables, record = load_recorded_splits(spec, tmp_path, seed=0)
    assert len(record.files) == 3 and record.splits["test"].classes == {"setosa": 10, "versicolor": 10, "virginica": 10}
    rows = tables["test"].row_numbers()
    ds = prepared.feed("test", ["x"], ["y"], batch_size=64, training=False).pipeline
    xb, yb = (np.concatenate(a) for a in zip(*ds.as_numpy_iterator(), strict=True))
    assert np.array_equal(xb, x[rows]) and np.array_equal(yb, y[rows])


def test_tfrecord_needs_its_feature_spec_and_matching_files(tmp_path):
    with pytest.raises(Exception, match="`features`"):
        data_spec(source="tfrecord", path="a-*.tfrecord", inputs={"x": {"from": "a"}}, targets={"y": {"from": "b"}})
    spec = data_spec(
        source="tfrecord",
        path="none-*.tfrecord",
        features={"a": {"dtype": "float32"}},
        inputs={"x": {"from": "a"}},
        targets={"y": {"from": "a"}},
    )
    with pytest.raises(RecipeError, match=r"^data.path: no file matches 'none-\*.tfrecord'"):
        prepare(spec, tmp_path, seed=0)
