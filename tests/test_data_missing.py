"""Missing values: `fill` per input, fitted on the training split, saved inside the model as a registered
FillMissing layer (loadable in Keras' safe mode), so `predict` on raw rows fills them the same way; an
undeclared missing value stays a located error."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dlrun import api
from dlrun.data.layers import FillMissing, fit_fill
from dlrun.data.prepare import prepare
from dlrun.errors import RecipeError
from tests.conftest import RECIPES, run_cli
from tests.test_data_sources import data_spec

MEASURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def _penguins(shared_data: Path, **inputs) -> dict:
    return {
        "source": "csv",
        "path": str(shared_data / "penguins.csv"),
        "test_split": 0.2,
        "stratify": True,
        "inputs": inputs,
        "targets": {"species": {"from": "species"}},
    }


def test_fill_missing_layer_fills_numbers_and_text_and_reloads_in_safe_mode(tmp_path):
    import keras

    numbers = keras.Input((2,), name="n")
    text = keras.Input((), dtype="string", name="t")
    fill = FillMissing([1.5, -2.0], indicator=True, name="fill_n")
    out_n = fill(numbers)
    out_t = FillMissing(["MALE"], name="fill_t")(text)
    lookup = keras.layers.StringLookup(vocabulary=["FEMALE", "MALE"], output_mode="one_hot")
    model = keras.Model([numbers, text], [out_n, lookup(out_t)])
    x = np.array([[np.nan, 3.0], [4.0, np.nan]], dtype="float32")
    t = np.array(["", "FEMALE"])
    import tensorflow as tf

    def feed() -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices({"n": x, "t": t}).batch(2)

    got_n, got_t = model.predict(feed(), verbose=0)
    assert got_n.tolist() == [[1.5, 3.0, 1.0, 0.0], [4.0, -2.0, 0.0, 1.0]]
    assert got_t.argmax(axis=1).tolist() == [2, 1]  # '' -> MALE (index 2 after the OOV slot)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    for a, b in zip(again.predict(feed(), verbose=0), (got_n, got_t), strict=True):
        assert np.array_equal(a, b)
    assert fill.compute_output_shape((None, 2)) == (None, 4)


def test_fit_fill_statistics():
    x = np.array([[1.0, np.nan], [3.0, 5.0], [np.nan, 7.0], [8.0, 7.0]])
    assert fit_fill(x, "mean", None, ("w",)) == [4.0, 19 / 3]
    assert fit_fill(x, "median", None, ("w",)) == [3.0, 7.0]
    assert fit_fill(x, "most_frequent", None, ("w",)) == [1.0, 7.0]
    words = np.array(["b", "", "a", "b"], dtype=object)
    assert fit_fill(words, "most_frequent", None, ("w",)) == ["b"]
    with pytest.raises(RecipeError, match="fill: mean needs numbers"):
        fit_fill(words, "mean", None, ("data", "inputs", "s", "fill"))


def test_fill_is_fitted_on_the_training_split_only(shared_data):
    """The 144 missing Titanic ages had to be filled outside dlrun; penguins has real empty cells."""
    from dlrun.data.preprocess import attach_preprocessing
    from dlrun.graph.build import build_graph

    doc = {
        "name": "p",
        "data": _penguins(shared_data, measures={"from": MEASURES, "fill": "median"}),
        "model": {"inputs": {"measures": {"shape": [4]}}, "layers": [{"name": "species", "type": "Dense", "units": 3}]},
        "compile": {"loss": "sparse_categorical_crossentropy"},
    }
    loaded = api.load_recipe(_write(shared_data, doc))
    prepared = prepare(loaded.recipe.data, loaded.base_dir, seed=0)
    from dlrun.importer import Importer

    model = attach_preprocessing(build_graph(loaded.graph, Importer([], loaded.base_dir)), loaded, prepared)
    layer = model.get_layer("measures_fill_missing")
    train = prepared.splits["train"][0]["measures"]
    assert np.isnan(train).any()  # the missing cells reach the model
    assert layer.values == pytest.approx(np.nanmedian(train, axis=0).tolist())
    everything = np.concatenate([prepared.splits[s][0]["measures"] for s in ("train", "test")])
    assert layer.values != pytest.approx(np.nanmedian(everything, axis=0).tolist())
    assert np.isfinite(model.predict(train, verbose=0)).all()


def _write(shared_data: Path, doc: dict) -> Path:
    import tempfile

    import yaml

    path = Path(tempfile.mkdtemp()) / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_undeclared_missing_values_stay_a_located_error(shared_data):
    spec = data_spec(**_penguins(shared_data, measures={"from": MEASURES}))
    with pytest.raises(RecipeError) as err:
        prepare(spec, Path("."), seed=0)
    assert (
        str(err.value)
        == "data.inputs.measures.from: column 'bill_length_mm' has a missing or NaN value at line 5 of penguins.csv"
    )
    with pytest.raises(Exception, match="`fill: constant` needs `fill_value`"):
        data_spec(**_penguins(shared_data, measures={"from": MEASURES, "fill": "constant"}))


@pytest.mark.slow
def test_penguins_recipe_predicts_raw_rows_like_the_trained_model(shared_data, tmp_path):
    """Train recipes/penguins.yaml, then `dlrun predict` in a fresh process on raw new rows with empty cells
    and an island never seen: the same probabilities as the model in memory."""
    result = api.train(api.load_recipe(RECIPES / "penguins.yaml"), runs_root=tmp_path / "runs", quiet=True)
    assert result.metrics["species/accuracy" if "species/accuracy" in result.metrics else "accuracy"] > 0.9
    rows = [
        ["Torgersen", "39.1", "18.7", "181", "3750", "MALE"],
        ["Torgersen", "", "", "", "", ""],
        ["Atlantis", "46.5", "14.8", "217", "5200", "FEMALE"],
        ["Dream", "49.0", "19.5", "210", "", ""],
        ["Biscoe", "", "15.0", "", "5000", "MALE"],
    ]
    new = tmp_path / "new.csv"
    with new.open("w", newline="") as fh:
        csv.writer(fh).writerows([["island", *MEASURES, "sex"], *rows])
    out = tmp_path / "pred.csv"
    cli = run_cli("predict", str(result.run.path), "--input", str(new), "--output", str(out))
    assert cli.code == 0, cli.stderr
    with out.open() as fh:
        got = np.array(
            [[float(r[f"P(species={c})"]) for c in ("Adelie", "Chinstrap", "Gentoo")] for r in csv.DictReader(fh)]
        )
    nan = float("nan")
    measures = np.array([[nan if v == "" else float(v) for v in r[1:5]] for r in rows], dtype="float32")
    x = {"measures": measures, "island": np.array([r[0] for r in rows]), "sex": np.array([r[5] for r in rows])}
    import tensorflow as tf

    want = result.model.predict(tf.data.Dataset.from_tensor_slices(x).batch(8), verbose=0)
    assert np.isfinite(want).all() and np.allclose(got, want, atol=1e-6)


def test_null_text_in_json_lines_is_missing_text(tmp_path):
    """A JSON null among strings crashed reading the file (a float32 array of text)."""
    rows = [{"town": "a", "y": 0}, {"town": None, "y": 1}, {"town": "a", "y": 0}, {"town": "b", "y": 1}]
    (tmp_path / "t.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = data_spec(
        source="jsonl",
        path="t.jsonl",
        inputs={"town": {"from": "town", "fill": "most_frequent"}},
        targets={"y": {"from": "y"}},
    )
    xs, _ = prepare(spec, tmp_path, seed=0).splits["train"]
    assert xs["town"].tolist() == ["a", "", "a", "b"]
