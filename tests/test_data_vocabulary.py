"""Models that reload: vocabularies with control characters ('\\x85' in IMDB reviews) or empty strings
(empty cells of a categorical column) survive Keras' save/load, so `dlrun predict` loads what `train` saved."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from dlrun import api
from dlrun.data.preprocess import build_input_steps
from dlrun.engine.artifacts import load_run_model
from dlrun.recipe.schema import Component
from tests.conftest import RECIPES, write_recipe


def _reviews_with_nel(shared_data: Path, n: int = 200) -> np.ndarray:
    texts = []
    with gzip.open(shared_data / "imdb_train.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            if "\x85" in text or len(texts) % 2:
                texts.append(text)
            if len(texts) >= n:
                break
    return np.array(texts, dtype=object)


@pytest.mark.parametrize(
    "comp",
    [
        {"type": "TextVectorization", "max_tokens": 20000, "output_mode": "multi_hot", "standardize": "lower"},
        {"type": "TextVectorization", "max_tokens": 5000, "output_mode": "tf_idf", "standardize": "lower"},
    ],
)
def test_imdb_vocabulary_with_control_characters_reloads(shared_data, tmp_path, comp):
    """IMDB's vocabulary holds '\\x85' and 'well\\x85', which split when Keras reads its vocabulary file."""
    import keras
    import tensorflow as tf

    texts = _reviews_with_nel(shared_data)
    raw = keras.Input((), dtype="string", name="review")
    steps, out = build_input_steps("review", [Component.model_validate(comp)], texts, raw, None, set())
    vocabulary = steps[0].layer.get_vocabulary()
    assert any("\x85" in term for term in vocabulary)
    model = keras.Model(raw, out)
    ds = tf.data.Dataset.from_tensor_slices(texts.astype(str)).batch(64)
    want = model.predict(ds, verbose=0)
    model.save(tmp_path / "m.keras")
    again = load_run_model(tmp_path / "m.keras", {})
    assert again.layers[1].get_vocabulary() == vocabulary
    assert np.array_equal(again.predict(ds, verbose=0), want)


def test_empty_strings_in_a_categorical_column_train_reload_and_predict(shared_data, tmp_path):
    """Titanic with empty `embarked` cells: 'Old vocab size is 5, new vocab size is 4' on load. Penguins'
    `sex` has 11 empty cells, left unfilled here: the empty string is a category of its own."""
    recipe = write_recipe(
        tmp_path,
        f"""
name: penguins_sex
seed: 0
data:
  source: csv
  path: {shared_data / "penguins.csv"}
  test_split: 0.2
  inputs:
    sex: {{from: sex, dtype: string, preprocess: [{{type: StringLookup, output_mode: one_hot}}]}}
    island: {{from: island, dtype: string, preprocess: [{{type: StringLookup, output_mode: one_hot}}]}}
  targets: {{species: {{from: species}}}}
model:
  inputs: {{sex: {{shape: [4]}}, island: {{shape: [4]}}}}
  layers:
    - {{name: both, type: Concatenate, inputs: [sex, island]}}
    - {{name: species, type: Dense, units: 3, activation: softmax}}
compile: {{optimizer: adam, loss: sparse_categorical_crossentropy}}
train: {{epochs: 1, tensorboard: false}}
""",
    )
    result = api.train(api.load_recipe(recipe), runs_root=tmp_path / "runs", quiet=True)
    model = load_run_model(result.run.path / "model.keras", {})
    lookup = next(layer for layer in model.layers if layer.name == "sex_string_lookup")
    assert "" in lookup.get_vocabulary()
    new = tmp_path / "new.csv"
    rows = [["", "Dream"], ["MALE", "Atlantis"], ["FEMALE", ""]]
    with new.open("w", newline="") as fh:
        csv.writer(fh).writerows([["sex", "island"], *rows])
    api.predict(result.run.path, new, output=tmp_path / "p.json")
    got = [
        list(r["species"]["probabilities"].values())
        for r in json.loads((tmp_path / "p.json").read_text())["predictions"]
    ]
    import tensorflow as tf

    x = {"sex": np.array([r[0] for r in rows]), "island": np.array([r[1] for r in rows])}
    want = result.model.predict(tf.data.Dataset.from_tensor_slices(x).batch(4), verbose=0)
    assert np.allclose(got, want, atol=1e-6)


@pytest.mark.slow
def test_full_imdb_at_20000_tokens_trains_reloads_and_predicts_raw_text(shared_data, tmp_path):
    overrides = [
        "data.inputs.review.preprocess[0].max_tokens=20000",
        "model.inputs.review.shape=[20000]",
        "train.epochs=1",
    ]
    result = api.train(api.load_recipe(RECIPES / "imdb.yaml", overrides), runs_root=tmp_path / "runs", quiet=True)
    texts = ["A wonderful film\x85 truly.", "well\x85 awful, boring and far too long"]
    (tmp_path / "new.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    api.predict(result.run.path, tmp_path / "new.jsonl", output=tmp_path / "p.json")
    got = [
        list(r["sentiment"]["probabilities"].values())
        for r in json.loads((tmp_path / "p.json").read_text())["predictions"]
    ]
    import tensorflow as tf

    want = result.model.predict(tf.data.Dataset.from_tensor_slices(np.array(texts)).batch(2), verbose=0)
    assert np.allclose(np.asarray(got)[:, -1], want.reshape(-1), atol=1e-6)
