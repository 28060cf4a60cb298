"""`dlrun check` passes for every recipe in recipes/, and each `expect:` block matches the built model.

`check` builds the model, compiles it as the recipe says and runs one training step on random data,
then asserts the recipe's `expect:` (parameter counts, output shapes). Run in-process (one TensorFlow
import for all recipes); one case goes through the real CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import dlrun.api as api
from dlrun.errors import RecipeError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# One check takes over ~15 s of CPU on the 2-core dev machine (measured, in-process): the
# full-size ImageNet models and the Xception-based ones.
SLOW = {
    "resnet34",
    "transfer_xception",
    "vgg16",
    "alexnet",
    "flowers",
    "bilstm_imdb",
    "vit_fashion_mnist",
    "transformer_imdb",
}

# The zoo (recipes/ written from the books): each must pin its parameter counts and output shapes.
ZOO = {
    "mnist_cnn",
    "fashion_mnist_cnn",
    "iris_concat",
    "iris_add",
    "multi_output",
    "siamese_lstm",
    "dual_camera",
    "inception",
    "resnet34",
    "xception_small",
    "senet",
    "lenet5",
    "alexnet",
    "vgg16",
    "transfer_xception",
    "transformer_imdb",
    "bilstm_imdb",
    "seq2seq_reverse",
    "vit_fashion_mnist",
    "frames_direction",
}


def _recipes() -> list[Any]:
    return [
        pytest.param(path, id=path.stem, marks=[pytest.mark.slow] if path.stem in SLOW else [])
        for path in sorted(RECIPES.glob("*.yaml"))
    ]


@pytest.mark.parametrize("path", _recipes())
def test_check_passes_and_expect_matches(path: Path) -> None:
    loaded = api.load_recipe(path)
    report = api.check(loaded)  # raises RecipeError when the step fails or `expect:` does not match
    expect = loaded.recipe.expect
    if path.stem in ZOO:
        assert expect is not None, f"{path.name} has no expect: block"
        assert expect.params is not None and expect.trainable_params is not None and expect.output_shapes
    if expect is None:
        return
    if expect.params is not None:
        assert report["params"] == expect.params
    if expect.trainable_params is not None:
        assert report["trainable_params"] == expect.trainable_params
    for name, shape in (expect.output_shapes or {}).items():
        assert report["output_shapes"][name] == list(shape)


def test_zoo_recipes_exist() -> None:
    assert {p.stem for p in RECIPES.glob("*.yaml")} >= ZOO


def test_check_rejects_a_wrong_expectation() -> None:
    """`expect:` is really asserted: a parameter count off by one fails, naming both numbers."""
    loaded = api.load_recipe(RECIPES / "lenet5.yaml", ["expect.params=61707"])
    with pytest.raises(RecipeError, match=r"expected 61,707 parameters, the model has 61,706"):
        api.check(loaded)


def test_check_through_the_cli(cli) -> None:
    result = cli("check", "recipes/iris_concat.yaml")
    assert result.code == 0, result.stderr
    assert "99 params" in result.stdout
    assert "species [None, 3]" in result.stdout
