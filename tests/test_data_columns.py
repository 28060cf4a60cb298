"""Columns: selection by glob/regex, a UTF-8 byte-order mark stripped, and one type inference shared by the
in-memory and the streaming CSV reader (the same file gives the same arrays either way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlrun.data.prepare import prepare
from dlrun.data.sources import absolute_data_paths
from dlrun.data.tables import ColumnKind, CsvReader, read_csv
from dlrun.errors import RecipeError
from tests.test_data_sources import data_spec, sklearn_frame, write_csv


def _breast_cancer_csv(folder: Path, bom: bool = False) -> tuple[Path, list[str]]:
    names, x, y = sklearn_frame("breast_cancer")
    path = write_csv(
        folder / "bc.csv", [*names, "target"], [[*map(repr, map(float, r)), int(t)] for r, t in zip(x, y, strict=True)]
    )
    if bom:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return path, names


def _arrays(prepared, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    if not prepared.streamed(split):
        xs, ys = prepared.splits[split]
        return xs["x"], ys["y"]
    ds = prepared.feed(split, ["x"], ["y"], batch_size=1000, training=False).pipeline
    xb, yb = zip(*ds.as_numpy_iterator(), strict=True)
    return np.concatenate(xb), np.concatenate(yb)


def test_streamed_and_in_memory_csv_give_identical_arrays_with_integer_classes(tmp_path):
    """`stream: true` typed integer labels as float32; with `classes: [0, 1]` every label became -1."""
    path, _ = _breast_cancer_csv(tmp_path)
    results = []
    for stream in (False, True):
        spec = data_spec(
            source="csv",
            path=str(path),
            stream=stream,
            test_split=0.2,
            inputs={"x": {"from": {"regex": "^mean_"}}},
            targets={"y": {"from": "target", "classes": [0, 1]}},
        )
        prepared = prepare(spec, tmp_path, seed=0)
        results.append([_arrays(prepared, s) for s in ("train", "test")])
    (mx, my), (mtx, mty) = results[0]
    (sx, sy), (stx, sty) = results[1]
    assert sy.dtype == my.dtype == np.int64 and set(sy.tolist()) == {0, 1}
    assert np.array_equal(my, sy) and np.array_equal(mty, sty)
    assert mx.dtype == sx.dtype == np.float32 and np.array_equal(mx, sx) and np.array_equal(mtx, stx)


def test_both_readers_infer_the_same_types_on_real_files(shared_data):
    for name in ("diamonds.csv", "penguins.csv"):
        memory = read_csv(shared_data / name, ",", {})
        stream = CsvReader(shared_data / name, ",", {})
        assert {n: memory.spec(n).dtype for n in memory.names} == {n: c.dtype for n, c in stream.columns.items()}
        for column in memory.names:
            a, b = memory.column(column), stream.column(column, ("data",))
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    assert memory.spec("body_mass_g").dtype == "float32"  # integers with empty cells: NaN needs a float
    diamonds = read_csv(shared_data / "diamonds.csv", ",", {})
    assert [diamonds.spec(c).dtype for c in ("carat", "cut", "price")] == ["float32", "string", "int64"]
    assert diamonds.column("cut")[0] == "Ideal"


def test_column_kind():
    def kind(*values: str) -> str:
        k = ColumnKind()
        for i, v in enumerate(values):
            k.add(v, i + 2)
        return k.dtype()

    assert kind("1", "2", "-3") == "int64"
    assert kind("1", "2.0") == "float32"
    assert kind("1", "", "3") == "float32"
    assert kind("1", "1e3") == "float32"
    assert kind("1", "x") == "string"
    assert kind("", "") == "float32"


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    """'no column 'a' (did you mean '\\ufeffa'?)'."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    for stream in (False, True):
        spec = data_spec(
            source="csv",
            path=str(path),
            stream=stream,
            inputs={"x": {"from": ["a", "b"]}},
            targets={"y": {"from": "label"}},
        )
        x, y = _arrays(prepare(spec, tmp_path, seed=0))
        assert x[:, 0].tolist() == [1, 3, 5, 7] and y.tolist() == [0, 1, 0, 1]


def test_columns_by_glob_and_regex_in_the_data_order(tmp_path):
    path, names = _breast_cancer_csv(tmp_path, bom=True)
    spec = data_spec(
        source="csv",
        path=str(path),
        inputs={
            "x": {"from": {"glob": "mean_*", "exclude": ["mean_area"]}},
            "worst": {"from": {"regex": "^worst_(radius|texture)$"}},
        },
        targets={"y": {"from": "target"}},
    )
    prepared = prepare(spec, tmp_path, seed=0)
    mean = [n for n in names if n.startswith("mean_") and n != "mean_area"]
    assert spec.inputs["x"].columns == mean and len(mean) == 9
    assert spec.inputs["worst"].columns == ["worst_radius", "worst_texture"]
    assert prepared.splits["train"][0]["x"].shape == (569, 9)
    # the run folder's recipe names the matched columns
    doc = absolute_data_paths(spec.model_dump(by_alias=True, exclude_defaults=True), tmp_path)
    assert doc["inputs"]["x"]["from"] == mean and doc["inputs"]["worst"]["from"] == ["worst_radius", "worst_texture"]


def test_a_pattern_that_matches_nothing_is_a_located_error(tmp_path):
    path, _ = _breast_cancer_csv(tmp_path)
    spec = data_spec(
        source="csv", path=str(path), inputs={"x": {"from": {"glob": "avg_*"}}}, targets={"y": {"from": "target"}}
    )
    with pytest.raises(
        RecipeError, match=r"^data.inputs.x.from: this pattern matches none of the columns: mean_radius"
    ):
        prepare(spec, tmp_path, seed=0)
    with pytest.raises(Exception, match="exactly one of: glob, regex"):
        data_spec(
            source="csv",
            path="a.csv",
            inputs={"x": {"from": {"glob": "a", "regex": "b"}}},
            targets={"y": {"from": "t"}},
        )
