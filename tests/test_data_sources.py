"""Data sources: each one on small files the tests write (scikit-learn's bundled sets as CSV, Parquet,
JSON lines, .npz/.npy, image and text folders, archives) and on the real data in ../shared/data."""

from __future__ import annotations

import csv
import gzip
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dlrun.data.prepare import prepare
from dlrun.errors import RecipeError
from dlrun.recipe.schema import DataSpec

SKLEARN_SETS = ("iris", "digits", "wine", "breast_cancer", "diabetes")


def data_spec(**fields: Any) -> DataSpec:
    """A validated data section."""
    return DataSpec.model_validate(fields)


def sklearn_frame(name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(feature column names, features, target) of a scikit-learn bundled dataset."""
    import sklearn.datasets as skd

    bunch = getattr(skd, f"load_{name}")()
    names = [str(n).replace(" ", "_").replace("(", "").replace(")", "") for n in bunch.feature_names]
    return names, np.asarray(bunch.data), np.asarray(bunch.target)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sklearn_csv(folder: Path, name: str) -> Path:
    """A scikit-learn dataset as CSV: feature columns, `target`, and for classifiers a text `label`."""
    names, x, y = sklearn_frame(name)
    header = [*names, "target"]
    rows = [[*map(repr, map(float, xi)), repr(yi.item())] for xi, yi in zip(x, y, strict=True)]
    if name != "diabetes":
        header.append("label")
        for row, yi in zip(rows, y, strict=True):
            row.append(f"class_{int(yi)}")
    return write_csv(folder / f"{name}.csv", header, rows)


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    """scikit-learn iris, digits, wine, breast_cancer and diabetes written as CSV files."""
    folder = tmp_path_factory.mktemp("tables")
    for name in SKLEARN_SETS:
        sklearn_csv(folder, name)
    return folder


def png(path: Path, pixels: np.ndarray) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def image_folder(root: Path, per_class: int = 6, size: int = 12, splits: tuple[str, ...] = ("train", "test")) -> Path:
    """<split>/<class>/*.png with three classes a user can tell apart by colour (red, green, blue)."""
    rng = np.random.default_rng(0)
    for split in splits:
        for c, cls in enumerate(("blue", "green", "red")):
            for i in range(per_class):
                pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
                pixels[..., 2 - c] = rng.integers(180, 256, size=(size, size), dtype=np.uint8)
                png(root / split / cls / f"{cls}_{i}.png", pixels)
    return root


# ----------------------------------------------------------------------------------------------------
# tables


@pytest.mark.parametrize("name", SKLEARN_SETS)
def test_sklearn_sets_as_csv_map_columns_to_named_inputs(tables, name):
    names, x, y = sklearn_frame(name)
    spec = data_spec(
        source="csv", path=f"{name}.csv", inputs={"features": {"from": names}}, targets={"target": {"from": "target"}}
    )
    prepared = prepare(spec, tables, seed=0)
    xs, ys = prepared.splits["train"]
    np.testing.assert_allclose(xs["features"], x.astype("float32"), rtol=1e-6)
    np.testing.assert_allclose(ys["target"], y)
    assert ys["target"].dtype.kind == ("f" if name == "diabetes" else "i")


def test_several_columns_feed_one_input_and_text_labels_become_class_indices(tables):
    names = sklearn_frame("iris")[0]
    spec = data_spec(
        source="csv",
        path="iris.csv",
        inputs={"sepal": {"from": names[:2]}, "petal": {"from": names[2:]}},
        targets={"species": {"from": "label"}},
    )
    prepared = prepare(spec, tables, seed=0)
    xs, ys = prepared.splits["train"]
    assert xs["sepal"].shape == (150, 2) and xs["petal"].shape == (150, 2)
    assert prepared.classes["species"] == ["class_0", "class_1", "class_2"]
    assert ys["species"].tolist() == [0] * 50 + [1] * 50 + [2] * 50


def test_classes_fix_the_label_order(tables):
    spec = data_spec(
        source="csv",
        path="iris.csv",
        inputs={"x": {"from": "sepal_length_cm"}},
        targets={"y": {"from": "label", "classes": ["class_2", "class_1", "class_0"]}},
    )
    ys = prepare(spec, tables, seed=0).splits["train"][1]["y"]
    assert ys[0] == 2 and ys[-1] == 0


def test_categorical_and_text_columns_stay_strings(tmp_path):
    rows = [["red", "a small red thing", 1.0, 0], ["blue", "big and blue", 2.0, 1], ["red", "red again", 3.0, 0]]
    write_csv(tmp_path / "t.csv", ["colour", "note", "size", "y"], rows)
    spec = data_spec(
        source="csv",
        path="t.csv",
        inputs={"colour": {"from": "colour"}, "note": {"from": "note"}, "size": {"from": "size"}},
        targets={"y": {"from": "y"}},
    )
    xs = prepare(spec, tmp_path, seed=0).splits["train"][0]
    assert xs["colour"].tolist() == ["red", "blue", "red"] and xs["note"][1] == "big and blue"
    assert xs["size"].dtype == np.float32


def test_numeric_codes_can_be_read_as_strings(tmp_path):
    write_csv(tmp_path / "t.csv", ["zip", "y"], [["1001", 0], ["2002", 1]])
    spec = data_spec(
        source="csv", path="t.csv", inputs={"zip": {"from": "zip", "dtype": "string"}}, targets={"y": {"from": "y"}}
    )
    assert prepare(spec, tmp_path, seed=0).splits["train"][0]["zip"].tolist() == ["1001", "2002"]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    names, x, y = sklearn_frame("wine")
    table = pa.table({**{n: x[:, j] for j, n in enumerate(names)}, "target": y})
    pq.write_table(table, tmp_path / "wine.parquet")
    spec = data_spec(
        source="parquet", path="wine.parquet", inputs={"x": {"from": names}}, targets={"y": {"from": "target"}}
    )
    xs, ys = prepare(spec, tmp_path, seed=0).splits["train"]
    np.testing.assert_allclose(xs["x"], x.astype("float32"), rtol=1e-6)
    assert ys["y"].tolist() == y.tolist()


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    spec = data_spec(source="parquet", path="x.parquet", inputs={"x": {"from": "a"}}, targets={"y": {"from": "b"}})
    with pytest.raises(RecipeError, match=r"pip install 'dlrun\[tables\]'"):
        prepare(spec, tmp_path, seed=0)


def test_jsonl_gz_fields(tmp_path):
    rows = [{"id": i, "text": f"review {i}", "label": i % 2, "rating": 1.5 * i} for i in range(10)]
    with gzip.open(tmp_path / "r.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    spec = data_spec(
        source="jsonl",
        path="r.jsonl.gz",
        inputs={"text": {"from": "text"}, "rating": {"from": "rating"}},
        targets={"label": {"from": "label"}},
    )
    xs, ys = prepare(spec, tmp_path, seed=0).splits["train"]
    assert xs["text"][3] == "review 3" and xs["rating"][2] == 3.0 and ys["label"].tolist() == [0, 1] * 5


def test_npz_and_npy_sources(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 3)).astype("float32"), rng.integers(0, 2, 20)
    np.savez(tmp_path / "d.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    spec = data_spec(source="npz", path="d.npz", inputs={"a": {"from": "x"}}, targets={"b": {"from": "y"}})
    prepared = prepare(spec, tmp_path, seed=0)
    assert prepared.count("train") == 15 and prepared.count("test") == 5
    np.testing.assert_array_equal(prepared.splits["test"][0]["a"], x[15:])

    folder = tmp_path / "arrays"
    folder.mkdir()
    np.save(folder / "x_train.npy", x)
    np.save(folder / "y_train.npy", y)
    spec = data_spec(source="npy", path="arrays", inputs={"a": {"from": "x"}}, targets={"b": {"from": "y"}})
    np.testing.assert_array_equal(prepare(spec, tmp_path, seed=0).splits["train"][1]["b"], y)

    records = np.zeros(4, dtype=[("height", "f4"), ("kind", "i8")])
    records["height"], records["kind"] = [1, 2, 3, 4], [0, 1, 0, 1]
    np.save(tmp_path / "rec.npy", records)
    spec = data_spec(source="npy", path="rec.npy", inputs={"h": {"from": "height"}}, targets={"k": {"from": "kind"}})
    assert prepare(spec, tmp_path, seed=0).splits["train"][1]["k"].tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("name", ["iris", "wine", "diabetes"])
def test_sklearn_source_by_name(name):
    _, x, y = sklearn_frame(name)
    spec = data_spec(source="sklearn", name=name, inputs={"x": {"from": "x"}}, targets={"y": {"from": "y"}})
    xs, ys = prepare(spec, Path("."), seed=0).splits["train"]
    np.testing.assert_allclose(xs["x"], x.astype("float32"))
    np.testing.assert_allclose(ys["y"], y)


def test_csv_streamed_equals_csv_in_memory(tables):
    names = sklearn_frame("wine")[0]
    base = {"source": "csv", "path": "wine.csv", "inputs": {"x": {"from": names}}, "targets": {"y": {"from": "label"}}}
    memory = prepare(data_spec(**base, stream=False), tables, seed=0)
    streamed = prepare(data_spec(**base, stream=True), tables, seed=0)
    assert streamed.streamed("train") and not memory.streamed("train")
    data = streamed.feed("train", ["x"], ["y"], batch_size=50, training=False)
    assert data.streamed and data.y is None
    ds = data.pipeline
    xs = np.concatenate([b[0].numpy() for b in ds])
    ys = np.concatenate([b[1].numpy() for b in ds])
    np.testing.assert_allclose(xs, memory.splits["train"][0]["x"], rtol=1e-6)
    assert ys.tolist() == memory.splits["train"][1]["y"].tolist()
    assert streamed.classes["y"] == memory.classes["y"] == ["class_0", "class_1", "class_2"]


# ----------------------------------------------------------------------------------------------------
# folders


def test_image_folder_and_its_tar_gz(tmp_path):
    root = image_folder(tmp_path / "shapes")
    with tarfile.open(tmp_path / "shapes.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="shapes")
    for path in ("shapes", "shapes.tar.gz"):
        spec = data_spec(
            source="images",
            path=path,
            image_size=[8, 8],
            inputs={"image": {"from": "image"}},
            targets={"colour": {"from": "label"}},
        )
        prepared = prepare(spec, tmp_path, seed=0)
        assert prepared.count("train") == 18 and prepared.count("test") == 18
        ds = prepared.feed("test", ["image"], ["colour"], batch_size=6, training=False).pipeline
        images, labels = zip(*[(b[0].numpy(), b[1].numpy()) for b in ds], strict=True)
        images, labels = np.concatenate(images), np.concatenate(labels)
        assert images.shape == (18, 8, 8, 3) and images.max() > 150
        assert labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # blue, green, red: alphabetical
        strongest = images.mean(axis=(1, 2)).argmax(axis=1)  # blue=2, green=1, red=0 channel
        assert (strongest == 2 - labels).all()


def test_image_folder_decodes_every_epoch_unless_cache_is_asked(tmp_path):
    """Issue 21: decoded pixels held in memory cost 1.52x a hand-written image_dataset_from_directory run, which
    decodes every epoch; `cache: auto` does the same for images, `cache: true` still keeps them."""
    image_folder(tmp_path / "shapes", per_class=4, splits=("train",))
    for cache, kept in (("auto", False), (True, True)):
        spec = data_spec(
            source="images",
            path="shapes",
            image_size=[8, 8],
            cache=cache,
            inputs={"image": {"from": "image"}},
            targets={"colour": {"from": "label"}},
        )
        prepared = prepare(spec, tmp_path, seed=0)
        assert prepared.splits["train"].cache_fits() is kept
        ds = prepared.feed("train", ["image"], ["colour"], batch_size=5).pipeline
        for _ in range(2):  # every epoch: each image once, in a new order
            labels = np.concatenate([b[1].numpy() for b in ds])
            assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_a_streamed_splits_targets_are_read_without_decoding_its_images(tmp_path, monkeypatch):
    """Issue 21: the evaluation read the eval split's pipeline once for its targets and again to predict, decoding
    every image twice. `Prepared.targets` gives the pipeline's targets, in its order and after the target's steps
    (one_hot here), from the label column alone: no image is decoded (the reader's `load` is never called)."""
    from dlrun.data.tables import FileListReader

    image_folder(tmp_path / "shapes", per_class=3, splits=("train", "test"))
    spec = data_spec(
        source="images",
        path="shapes",
        image_size=[8, 8],
        inputs={"image": {"from": "image"}},
        targets={"colour": {"from": "label", "steps": [{"one_hot": 3}]}},
    )
    prepared = prepare(spec, tmp_path, seed=0)
    ds = prepared.feed("test", ["image"], ["colour"], batch_size=4, training=False).pipeline
    expected = np.concatenate([b[1].numpy() for b in ds])

    def no_decoding(self, path):
        raise AssertionError("an image was decoded for its label")

    monkeypatch.setattr(FileListReader, "load", no_decoding)
    got = prepared.targets("test", ["colour"], batch_size=4)["colour"]
    np.testing.assert_array_equal(got, expected)
    assert got.shape == (9, 3) and got.argmax(1).tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_text_folder(tmp_path):
    for cls, words in (("neg", "awful bad"), ("pos", "great good")):
        (tmp_path / "reviews" / cls).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "reviews" / cls / f"{i}.txt").write_text(f"{words} {i}", encoding="utf-8")
    spec = data_spec(
        source="text", path="reviews", inputs={"review": {"from": "text"}}, targets={"label": {"from": "label"}}
    )
    xs, ys = prepare(spec, tmp_path, seed=0).splits["train"]
    assert xs["review"][0] == "awful bad 0" and ys["label"].tolist() == [0] * 4 + [1] * 4


# ----------------------------------------------------------------------------------------------------
# real data


def test_real_mnist_by_keras_name(shared_data):
    spec = data_spec(source="mnist", head=100, inputs={"x": {"from": "x"}}, targets={"y": {"from": "y"}})
    prepared = prepare(spec, Path("."), seed=0)
    assert prepared.splits["train"][0]["x"].shape == (100, 28, 28)
    assert prepared.splits["train"][1]["y"][:5].tolist() == [5, 0, 4, 1, 9]


def test_real_imdb_jsonl_gz_files_per_split(shared_data):
    spec = data_spec(
        source="jsonl",
        path=str(shared_data),
        files={"train": "imdb_train.jsonl.gz", "test": "imdb_test.jsonl.gz"},
        limit=300,
        inputs={"review": {"from": "text"}},
        targets={"sentiment": {"from": "label"}},
    )
    prepared = prepare(spec, Path("."), seed=0)
    xs, ys = prepared.splits["test"]
    assert len(xs["review"]) == 300 and isinstance(xs["review"][0], str) and len(xs["review"][0]) > 20
    assert set(ys["sentiment"].tolist()) <= {0, 1}


def test_real_flowers_tar_gz_is_listed_by_class(shared_data):
    spec = data_spec(
        source="images",
        path=str(shared_data / "flowers12_folders.tar.gz"),
        image_size=[32, 32],
        inputs={"image": {"from": "image"}},
        targets={"flower": {"from": "label"}},
    )
    prepared = prepare(spec, Path("."), seed=0)
    assert prepared.count("train") == 720 and prepared.count("test") == 240
    reader = prepared.splits["train"].table.reader
    assert len(reader.class_names) == 12 and np.bincount(reader.labels).tolist() == [60] * 12
    ds = prepared.feed("test", ["image"], ["flower"], batch_size=4, training=False).pipeline
    images, labels = next(iter(ds))
    assert images.shape == (4, 32, 32, 3) and labels.numpy().tolist() == [0, 0, 0, 0]


# ----------------------------------------------------------------------------------------------------
# errors a user can act on


def test_missing_file_names_the_key(tmp_path):
    spec = data_spec(source="csv", path="nope.csv", inputs={"x": {"from": "a"}}, targets={"y": {"from": "b"}})
    with pytest.raises(RecipeError) as err:
        prepare(spec, tmp_path, seed=0)
    assert str(err.value).startswith("data.path: data file not found:") and "nope.csv" in str(err.value)
    spec = data_spec(source="csv", files={"train": "a.csv"}, inputs={"x": {"from": "a"}}, targets={"y": {"from": "b"}})
    with pytest.raises(RecipeError, match=r"^data\.files\.train: data file not found"):
        prepare(spec, tmp_path, seed=0)


def test_missing_column_did_you_mean(tables):
    spec = data_spec(
        source="csv", path="iris.csv", inputs={"x": {"from": "sepal_lenght_cm"}}, targets={"y": {"from": "target"}}
    )
    with pytest.raises(RecipeError) as err:
        prepare(spec, tables, seed=0)
    text = str(err.value)
    assert text.startswith("data.inputs.x.from: iris.csv has no column 'sepal_lenght_cm'")
    assert "(did you mean 'sepal_length_cm'?)" in text and "\n" not in text


def test_nan_in_a_numeric_column_names_column_and_line(tmp_path):
    write_csv(tmp_path / "t.csv", ["a", "b", "y"], [[1, 2, 0], [3, "", 1], [5, 6, 0]])
    spec = data_spec(source="csv", path="t.csv", inputs={"x": {"from": ["a", "b"]}}, targets={"y": {"from": "y"}})
    for stream in (False, True):
        with pytest.raises(RecipeError) as err:
            prepare(spec.model_copy(update={"stream": stream}), tmp_path, seed=0)
        assert str(err.value) == "data.inputs.x.from: column 'b' has a missing or NaN value at line 3 of t.csv"


def test_unknown_source_and_sklearn_name_are_schema_errors():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="did you mean 'csv'"):
        data_spec(source="cvs", inputs={"x": {"from": "a"}}, targets={"y": {"from": "b"}})
    with pytest.raises(ValidationError, match="source sklearn needs `name:`"):
        data_spec(source="sklearn", name="iris2", inputs={"x": {"from": "a"}}, targets={"y": {"from": "b"}})


def test_jsonl_and_text_folders_stream_like_they_load(tmp_path):
    rows = [{"text": f"words {i}", "label": i % 3, "score": i / 2} for i in range(23)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for cls in ("a", "b"):
        (tmp_path / "docs" / cls).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "docs" / cls / f"{i}.txt").write_text(f"{cls} text {i}", encoding="utf-8")
    cases = [
        {"source": "jsonl", "path": "r.jsonl", "inputs": {"t": {"from": "text"}, "s": {"from": "score"}},
         "targets": {"y": {"from": "label"}}, "validation_split": 0.3},
        {"source": "text", "path": "docs", "inputs": {"t": {"from": "text"}}, "targets": {"y": {"from": "label"}},
         "validation_split": 0.3},
    ]  # fmt: skip
    for case in cases:
        memory = prepare(data_spec(**case, stream=False), tmp_path, seed=3)
        streamed = prepare(data_spec(**case, stream=True), tmp_path, seed=3)
        assert streamed.streamed("validation") and not memory.streamed("validation")
        inputs = list(case["inputs"])
        ds = streamed.feed("validation", inputs, ["y"], batch_size=4, training=False).pipeline
        got = [b for b in ds.as_numpy_iterator()]
        xs = [b[0] if len(inputs) == 1 else b[0]["t"] for b in got]
        texts = [t.decode() for t in np.concatenate(xs)]
        assert texts == memory.splits["validation"][0]["t"].tolist()
        assert np.concatenate([b[1] for b in got]).tolist() == memory.splits["validation"][1]["y"].tolist()


def test_streamed_csv_with_quoted_newlines_blank_lines_and_crlf(tmp_path):
    (tmp_path / "crlf.csv").write_bytes(b'v,t,y\r\n1,"x",0\r\n2,"y",1\r\n')
    (tmp_path / "multi.csv").write_text('v,t,y\n1,"multi\nline",0\n\n2,"y",1\n', encoding="utf-8")
    for name in ("crlf.csv", "multi.csv"):
        spec = data_spec(
            source="csv", path=name, stream=True, inputs={"v": {"from": "v"}, "t": {"from": "t"}},
            targets={"y": {"from": "y"}},
        )  # fmt: skip
        prepared = prepare(spec, tmp_path, seed=0)
        (x, y), *_ = list(prepared.feed("train", ["v", "t"], ["y"], 8, training=False).pipeline.as_numpy_iterator())
        assert x["v"].tolist() == [1.0, 2.0] and y.tolist() == [0, 1]
        assert x["t"][0].decode() == ("x" if name == "crlf.csv" else "multi\nline")


def test_relative_paths_are_what_pathlib_gives(tmp_path):
    """files.relative_paths (string slicing: image folders' labels and data fingerprints, issue 21) names each
    path as `Path.relative_to(...).as_posix()` does, including paths spelled unnormalized, and refuses one
    outside the root the same way."""
    from dlrun.files import relative_paths

    root = tmp_path / "images"
    paths = [str(root / "cat" / "1.png"), str(root / "dog" / "sub" / "2.png"), f"{root}/./cat//3.png"]
    assert relative_paths(root, paths) == [Path(p).relative_to(root).as_posix() for p in paths]
    assert relative_paths(root, paths)[:2] == ["cat/1.png", "dog/sub/2.png"]
    with pytest.raises(ValueError):
        relative_paths(root, [str(tmp_path / "imagesX" / "1.png")])
