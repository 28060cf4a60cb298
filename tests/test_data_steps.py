"""Array steps are written once (dlrun.data.steps) and give the same values in memory and streamed from disk."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun import api
from dlrun.data.prepare import prepare
from dlrun.errors import RecipeError
from tests.conftest import write_recipe

RECIPE = """
name: steps
seed: 0
data:
  source: csv
  path: {path}
  stream: {stream}
  inputs:
    x: {{from: [a, b, c, d], steps: [{{cast: float64}}, {x_steps}]}}
  targets:
    label: {{from: label, steps: [{{one_hot: 3}}]}}
model:
  inputs: {{x: {{shape: {shape}}}}}
  layers:
    - {{type: Flatten}}
    - {{name: label, type: Dense, units: 3, activation: softmax}}
compile: {{optimizer: adam, loss: categorical_crossentropy}}
train: {{epochs: 1, shuffle: false, tensorboard: false}}
"""
SCALE_RESHAPE = "{scale: {multiply: 3, divide: 7, offset: 0.1}}, {reshape: [2, 2]}"


def _csv(tmp_path, rows: int = 300):
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 300, size=(rows, 4))
    labels = rng.integers(0, 3, size=rows)
    lines = ["a,b,c,d,label"] + [
        ",".join(f"{v:.6f}" for v in row) + f",{y}" for row, y in zip(values, labels, strict=True)
    ]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train_split(tmp_path, stream: str, x_steps: str = SCALE_RESHAPE, shape: str = "[2, 2]"):
    text = RECIPE.format(path=_csv(tmp_path), stream=stream, x_steps=x_steps, shape=shape)
    loaded = api.load_recipe(write_recipe(tmp_path, text, f"steps_{stream}.yaml"))
    prepared = prepare(loaded.recipe.data, loaded.base_dir, loaded.recipe.seed)
    split = prepared.feed("train", ["x"], ["label"], 64, training=False)
    if not split.streamed:
        return split.x, split.y
    batches = list(split.pipeline.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_steps_give_identical_values_in_memory_and_streamed(tmp_path):
    """Before the steps were written once, the stream scaled by `x * (multiply / divide)` and memory by
    `x * multiply / divide`: the same recipe's inputs differed in the last bits depending on `data.stream`."""
    x_memory, y_memory = _train_split(tmp_path, "false")
    x_stream, y_stream = _train_split(tmp_path, "true")
    assert x_memory.shape == x_stream.shape == (300, 2, 2)
    assert x_memory.dtype == x_stream.dtype == np.float32
    np.testing.assert_array_equal(x_stream, x_memory)  # bit for bit, not approximately
    np.testing.assert_array_equal(y_stream, y_memory)
    assert y_memory.shape == (300, 3) and set(y_memory.sum(axis=1)) == {1.0}
    # and the values are what the recipe says, computed as a user writes it by hand
    raw = np.loadtxt(tmp_path / "table.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2, 3))
    np.testing.assert_array_equal(x_memory.reshape(300, 4), raw.astype("float32") * 3.0 / 7.0 + 0.1)


@pytest.mark.parametrize("stream", ["false", "true"])
def test_a_reshape_that_does_not_fit_the_samples_is_a_located_error(tmp_path, stream):
    """The stream reshaped to `[-1, *shape]`: 4 values a sample into [3] silently became other samples (or
    failed mid-training); now both paths say which step cannot reshape which sample shape."""
    with pytest.raises(RecipeError) as caught:
        _train_split(tmp_path, stream, x_steps="{reshape: [3]}", shape="[3]")
    assert caught.value.path == ("data", "inputs", "x", "steps", 1, "reshape")
    assert "cannot reshape samples of shape (4,) to (3,)" in str(caught.value)


def test_standardize_streamed_names_the_step_and_the_alternative(tmp_path):
    with pytest.raises(RecipeError) as caught:
        _train_split(tmp_path, "true", x_steps="{standardize: true}, {reshape: [2, 2]}")
    assert caught.value.path == ("data", "inputs", "x", "steps", 1, "standardize")
    assert "Normalization" in str(caught.value)


def test_one_hot_labels_out_of_range_are_a_located_error_in_memory(tmp_path):
    text = RECIPE.format(path=_csv(tmp_path), stream="false", x_steps=SCALE_RESHAPE, shape="[2, 2]")
    loaded = api.load_recipe(write_recipe(tmp_path, text.replace("one_hot: 3", "one_hot: 2")))
    with pytest.raises(RecipeError) as caught:
        prepare(loaded.recipe.data, loaded.base_dir, 0)
    assert caught.value.path == ("data", "targets", "label", "steps", 0, "one_hot")
    assert "labels range 0..2 does not fit one_hot: 2" in str(caught.value)
