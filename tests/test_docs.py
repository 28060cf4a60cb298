"""The checked-in editor schema and recipe reference are current, and the schema accepts every recipe."""

from __future__ import annotations

import json

import pytest
import yaml

from dlrun import docs
from tests.conftest import RECIPES, ROOT


@pytest.mark.parametrize("path", [docs.SCHEMA_FILE, docs.REFERENCE_FILE], ids=lambda p: p.name)
def test_generated_docs_are_current(path):
    expected = docs.generated()[path]
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run `make docs`"
    assert path.read_text(encoding="utf-8") == expected, f"{path.relative_to(ROOT)} is stale: run `make docs`"


def test_schema_command_prints_the_editor_schema(cli):
    result = cli("schema")
    assert result.code == 0, result.stderr
    assert result.stdout == docs.SCHEMA_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(docs.SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, data):
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(data)]


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_validates_against_the_editor_schema(validator, recipe):
    assert recipe.read_text(encoding="utf-8").startswith("# yaml-language-server: $schema=../docs/recipe.schema.json")
    assert _errors(validator, yaml.safe_load(recipe.read_text(encoding="utf-8"))) == []


def test_editor_schema_completes_layer_types_and_checks_their_arguments(validator):
    schema = json.loads(docs.SCHEMA_FILE.read_text(encoding="utf-8"))
    type_options = schema["$defs"]["LayerNode"]["properties"]["type"]["anyOf"]
    assert "Conv2D" in type_options[0]["enum"] and "applications.Xception" in type_options[1]["enum"]
    bad = {
        "name": "x",
        "model": {
            "inputs": {"a": {"shape": [3]}},
            "layers": [{"type": "Dense", "units": "ten"}, {"type": "Dense"}, {"type": "my_block", "size": 3}],
        },
        "compile": {"loss": "mse"},
    }
    errors = _errors(validator, bad)
    assert any(e.startswith("model.layers.0.units") for e in errors), errors
    assert any("'units' is a required property" in e for e in errors), errors
    assert not any(e.startswith("model.layers.2") for e in errors), errors  # user-defined names stay open


def test_editor_schema_accepts_the_loader_shorthands(validator):
    recipe = {
        "name": "x",
        "blocks": {"b": {"params": {"f": 8}, "layers": [{"type": "Dense", "units": "${f}"}]}},
        "model": {
            "inputs": {"a": {"shape": [3]}},
            "layers": [{"name": "h", "type": "b", "inputs": "a"}, {"name": "y", "type": "Dense", "units": 1}],
            "outputs": "y",
        },
        "compile": {
            "optimizer": {"type": "Adam", "learning_rate": {"type": "ExponentialDecay", "initial_learning_rate": 0.1}},
            "loss": "mse",
            "metrics": {"y": "mae"},
        },
        "train": {"callbacks": ["TerminateOnNaN", {"type": "EarlyStopping", "patience": 2}]},
    }
    assert _errors(validator, recipe) == []


def test_reference_documents_every_section_and_key():
    from dlrun.recipe.schema import Recipe, TrainSpec

    text = docs.REFERENCE_FILE.read_text(encoding="utf-8")
    for key in Recipe.model_fields:
        alias = Recipe.model_fields[key].alias or key
        assert f"| `{alias}` |" in text
    for key in TrainSpec.model_fields:
        assert f"| `{key}` |" in text
    assert "## LayerNode" in text and "`Conv2D`" in text


def _recipe(*layers: dict, **top) -> dict:
    return {"name": "x", "model": {"inputs": {"a": {"shape": [3]}}, "layers": list(layers)},
            "compile": {"loss": "mse"}, **top}  # fmt: skip


def test_editor_schema_knows_what_validate_knows(validator):
    """Each node's arguments by its type, the values Keras accepts, and misspelt layer types."""
    cases = {
        "model.layers.0: Additional properties are not allowed ('unit' was unexpected)": {"type": "Dense", "unit": 5},
        "model.layers.0.activation": {"type": "Dense", "units": 5, "activation": "relux"},
        "model.layers.0.padding": {"type": "Conv1D", "filters": 2, "kernel_size": 3, "padding": "samee"},
        "model.layers.0.units": {"type": "Dense", "units": 10**12},
        "model.layers.0.rate": {"type": "Dropout", "rate": 1.0},
        "model.layers.0.type": {"type": "Dens", "units": 5},
    }
    for expected, node in cases.items():
        errors = _errors(validator, _recipe(node))
        assert any(e.startswith(expected) for e in errors), (expected, errors)
    assert _errors(validator, _recipe({"type": "Dense", "units": 5}, seed=-5))[0].startswith("seed")
    good = {"type": "Conv1D", "filters": 2, "kernel_size": [3], "padding": "SAME", "activation": "gelu",
            "kernel_initializer": "HeNormal", "kernel_regularizer": {"type": "L2", "l2": 0.01}, "strides": "${s}"}  # fmt: skip
    assert _errors(validator, _recipe(good)) == []
    # What validate accepts stays open: no activation (Keras' get(None)), a bool where a string choice is optional.
    assert _errors(validator, _recipe({"type": "LSTM", "units": 4, "activation": None, "use_cudnn": True})) == []


def test_editor_schema_lets_a_child_recipe_leave_out_what_its_parent_gives(validator):
    child = {"extends": "mnist.yaml", "train": {"epochs": 1}, "model": {"inputs": {"image": {"shape": [28, 28]}}}}
    assert _errors(validator, child) == []
    assert _errors(validator, {"train": {"epochs": 1}}) != []  # without extends, name/model/compile are required
    assert _errors(validator, {**child, "compile": {"optimzer": "adam"}}) != []  # typos are still caught


def test_reference_documents_extends_and_what_only_check_finds():
    text = docs.REFERENCE_FILE.read_text(encoding="utf-8")
    assert "## Composing recipes: `extends`" in text
    assert "Still found only later" in text and "`unknown-monitor`" in text
