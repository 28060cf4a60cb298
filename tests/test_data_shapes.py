"""Shapes from the data: `shape: auto` (or no shape) on a model input takes the prepared data's shape after
steps, fill and preprocess layers; image folders take `image_size` from the model input, and a mismatch is a
validate-time error naming data.image_size."""

from __future__ import annotations

import pytest

from dlrun import api
from dlrun.errors import RecipeError
from tests.conftest import write_recipe

PENGUINS = """
name: penguins_auto
seed: 0
data:
  source: csv
  path: {path}
  test_split: 0.2
  inputs:
    measures:
      from: [bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g]
      fill: median
      missing_indicator: true
    island: {{from: island, dtype: string, preprocess: [{{type: StringLookup, output_mode: one_hot}}]}}
    year_like: {{from: body_mass_g, fill: mean, steps: [scale: {{divide: 1000}}]}}
  targets: {{species: {{from: species}}}}
model:
  inputs: {{measures: {{shape: auto}}, island: {{}}, year_like: {{}}}}
  layers:
    - {{name: all, type: Concatenate, inputs: [measures, island, year_like]}}
    - {{name: species, type: Dense, units: 3, activation: softmax}}
compile: {{optimizer: adam, loss: sparse_categorical_crossentropy}}
train: {{epochs: 1, tensorboard: false}}
"""


def test_auto_input_shapes_come_from_the_prepared_data(shared_data, tmp_path):
    """'input shapes after lookups must be computed by hand (deck: vocabulary size + OOV = 9)'."""
    recipe = write_recipe(tmp_path, PENGUINS.format(path=shared_data / "penguins.csv"))
    loaded = api.load_recipe(recipe)
    assert loaded.recipe.model.inputs["island"].shape == "auto"
    result = api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    core = {layer.name: layer for layer in result.model.layers}
    # 4 measures + 4 missing flags; 3 islands + the OOV slot; one scaled value
    assert tuple(core["all"].input[0].shape[1:]) == (8,)
    assert tuple(core["all"].input[1].shape[1:]) == (4,)
    assert tuple(core["all"].input[2].shape[1:]) == (1,)
    assert result.model.count_params() == (8 + 4 + 1) * 3 + 3


def test_check_and_summary_take_auto_shapes_from_the_data(shared_data, tmp_path):
    """`dlrun check` on a recipe with `shape: auto` crashed building keras.Input(shape='auto')."""
    recipe = write_recipe(tmp_path, PENGUINS.format(path=shared_data / "penguins.csv"))
    assert api.check(recipe)["params"] == (8 + 4 + 1) * 3 + 3
    assert api.build_model(recipe).count_params() == (8 + 4 + 1) * 3 + 3


IMAGES = """
name: images
data:
  source: images
  path: flowers
  {size}
  inputs: {{image: {{from: image}}}}
  targets: {{flower: {{from: label}}}}
model:
  inputs: {{image: {{shape: [32, 32, 3]}}}}
  layers:
    - {{type: Flatten}}
    - {{name: flower, type: Dense, units: 12, activation: softmax}}
compile: {{loss: sparse_categorical_crossentropy}}
"""


def test_image_size_defaults_to_the_model_input(tmp_path):
    """image_size's 256x256 default silently mismatched a 32x32 model until train time."""
    loaded = api.load_recipe(write_recipe(tmp_path, IMAGES.format(size="")))
    assert loaded.recipe.data.image_size == [32, 32]


def test_an_image_size_mismatch_is_a_validate_time_error(tmp_path, cli):
    recipe = write_recipe(tmp_path, IMAGES.format(size="image_size: [64, 64]"))
    with pytest.raises(RecipeError) as err:
        api.load_recipe(recipe)
    assert "data.image_size: data.image_size is [64, 64] but model input 'image' takes 32x32x3 images" in str(err.value)
    assert str(err.value).startswith(f"{recipe}:6:")
    result = cli("validate", str(recipe))
    assert result.code == 2 and "data.image_size" in result.stderr


@pytest.mark.slow
def test_diamonds_recipe_streamed_and_in_memory_reach_the_same_metrics(shared_data, tmp_path):
    """53,940 rows with quoted ordinal strings: both readers give the same arrays, so the same training."""
    from tests.conftest import RECIPES

    metrics = {}
    for stream in ("false", "true"):
        overrides = [f"data.stream={stream}", "train.epochs=2", "train.shuffle=false"]
        loaded = api.load_recipe(RECIPES / "diamonds.yaml", overrides)
        metrics[stream] = api.train(loaded, runs_root=tmp_path / stream, quiet=True).metrics
    assert metrics["true"].keys() == metrics["false"].keys()
    for key, value in metrics["false"].items():
        assert metrics["true"][key] == pytest.approx(value, rel=1e-3), key
    # thousands of dollars: a constant guess (the mean price) is off by 3.0 on average
    assert min(v for k, v in metrics["false"].items() if "mae" in k) < 2.0
