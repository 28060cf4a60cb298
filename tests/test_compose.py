"""Composition: extends (deep merge, errors located in the right file), --set, ${path} interpolation."""

from __future__ import annotations

import re

import pytest

from dlrun import api
from dlrun.errors import RecipeError
from dlrun.recipe.expr import ExprError, evaluate, substitute
from tests.conftest import write_recipe

BASE = """name: base
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {name: h, type: Dense, units: 8}
    - {name: y, type: Dense, units: 1}
compile:
  optimizer: {type: Adam, learning_rate: 0.001}
  loss: mse
train: {epochs: 3, batch_size: 32}
"""


def test_extends_deep_merges_and_overrides(tmp_path):
    write_recipe(tmp_path, BASE, "base.yaml")
    child = write_recipe(tmp_path, "extends: base.yaml\nname: child\ntrain: {epochs: 7}\n", "child.yaml")
    loaded = api.load_recipe(child)
    assert loaded.recipe.name == "child"
    assert loaded.recipe.train.epochs == 7 and loaded.recipe.train.batch_size == 32
    assert loaded.recipe.compile.optimizer.kwargs == {"learning_rate": 0.001}


def test_errors_in_an_extended_file_point_into_that_file(tmp_path):
    write_recipe(tmp_path, BASE.replace("units: 8", "units: eight"), "base.yaml")
    child = write_recipe(tmp_path, "extends: base.yaml\nname: child\n", "child.yaml")
    with pytest.raises(RecipeError) as info:
        api.load_recipe(child)
    assert str(info.value) == (
        f"{tmp_path / 'base.yaml'}:5:37: model.layers[0].units: expected an integer, got 'eight'"
    )


def test_set_overrides_are_typed_and_located(tmp_path):
    recipe = write_recipe(tmp_path, BASE)
    loaded = api.load_recipe(recipe, overrides=["compile.optimizer.learning_rate=0.01", "model.layers[0].units=16"])
    assert loaded.recipe.compile.optimizer.kwargs["learning_rate"] == 0.01
    assert loaded.graph.node("h").kwargs["units"] == 16
    with pytest.raises(RecipeError) as info:
        api.load_recipe(recipe, overrides=["train.epochs=many"])
    assert str(info.value) == "--set train.epochs=many: train.epochs: expected an integer, got 'many'"


def test_interpolation_of_recipe_values(tmp_path):
    text = BASE.replace("units: 8}", "units: '${train.batch_size}'}")
    loaded = api.load_recipe(write_recipe(tmp_path, text))
    assert loaded.graph.node("h").kwargs["units"] == 32
    with pytest.raises(RecipeError, match=re.escape("refers to 'train.nope', which is not in the recipe")):
        api.load_recipe(write_recipe(tmp_path, BASE.replace("units: 8}", "units: '${train.nope}'}")))


def test_expressions_are_small_and_safe():
    assert evaluate("2 if stride != 1 else 1", {"stride": 2}) == 2
    assert substitute("${filters * 2}", {"filters": 64}) == 128
    assert substitute("conv_${index}", {"index": 3}) == "conv_3"
    for bad in ("__import__('os')", "x.__class__", "[i for i in x]", "open('f')", "2 ** 1000"):
        with pytest.raises(ExprError):
            evaluate(bad, {"x": [1]})
