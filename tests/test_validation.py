"""Each class of recipe mistake through the Python API: exact message, line, column and key path.

`dlrun.api.load_recipe` is what every verb calls, so these are the errors users see after `error: `.
Also: `--set` overrides are validated like recipe text and blamed on the override, and validation never
imports TensorFlow.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlrun import api
from dlrun.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: toy
model:
  inputs:
    x: {shape: [4]}
  layers:
    - {name: hidden, type: Dense, units: 8, activation: relu}
    - {name: y, type: Dense, units: 1}
compile:
  optimizer: adam
  loss: mse
train:
  epochs: 2
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        api.load_recipe(path, overrides=overrides)
    return info.value


def check(tmp_path, text, line, column, where, message, overrides=()):
    """Load `text`; assert the error's location, key path and message, and its one-line rendering."""
    path = write(tmp_path, text)
    err = error_of(path, overrides)
    assert err.location is not None
    assert (err.location.file, err.location.line, err.location.column) == (str(path), line, column)
    assert err.message == message
    prefix = f"{path}:{line}:{column}: " + (f"{where}: " if where else "")
    assert str(err) == prefix + message
    assert "\n" not in str(err)
    return err


def test_good_recipe_loads(tmp_path):
    loaded = api.load_recipe(write(tmp_path, GOOD))
    assert [n.name for n in loaded.graph.nodes] == ["hidden", "y"]


# ---------------------------------------------------------------------------------------------------
# loading


def test_yaml_syntax_error(tmp_path):
    check(
        tmp_path,
        GOOD.replace("x: {shape: [4]}", "x: {shape: [4}"),
        4,
        18,
        "",
        "invalid YAML: expected ',' or ']', but got '}'",
    )


def test_duplicate_key(tmp_path):
    check(
        tmp_path,
        GOOD + "name: again\n",
        13,
        1,
        "name",
        "duplicate key 'name' (first defined at line 1)",
    )


def test_python_tag(tmp_path):
    check(
        tmp_path,
        GOOD.replace("name: toy", "name: !!python/object/apply:os.system [echo hi]"),
        1,
        7,
        "name",
        "YAML tag '!!python/object/apply:os.system' is not allowed in a recipe (plain values only)",
    )


def test_empty_recipe(tmp_path):
    check(tmp_path, "# only a comment\n", 1, 1, "", "recipe is empty")


def test_top_level_not_a_mapping(tmp_path):
    check(tmp_path, "- a\n- b\n", 1, 1, "", "a recipe must be a mapping of sections (name, model, compile, ...)")


def test_yaml_merge_keys_override_instead_of_duplicating(tmp_path):
    text = GOOD.replace(
        "    - {name: hidden, type: Dense, units: 8, activation: relu}",
        "    - &dense {name: hidden, type: Dense, units: 8, activation: relu}\n"
        "    - {<<: *dense, name: hidden2, units: 4}",
    )
    loaded = api.load_recipe(write(tmp_path, text))
    assert loaded.graph.node("hidden2").kwargs == {"units": 4, "activation": "relu"}


# ---------------------------------------------------------------------------------------------------
# schema


def test_unknown_key_with_did_you_mean(tmp_path):
    path = write(tmp_path, GOOD.replace("  epochs: 2", "  epoch: 2"))
    err = error_of(path)
    assert (err.location.line, err.location.column, err.path) == (12, 3, ("train", "epoch"))
    head, allowed = err.message.split("; allowed here: ")
    assert head == "unknown key 'epoch' (did you mean 'epochs'?)"
    assert {"epochs", "batch_size", "callbacks", "stages"} <= set(allowed.split(", "))
    assert str(err) == f"{path}:12:3: train.epoch: {err.message}"


def test_allowed_keys_are_shown_as_written_in_yaml(tmp_path):
    top = error_of(write(tmp_path, GOOD + "modle: {}\n")).message
    assert "(did you mean 'model'?)" in top
    allowed = set(top.split("; allowed here: ")[1].split(", "))
    assert {"$schema", "name", "model", "compile", "train"} <= allowed
    assert not {"schema_", "from_"} & allowed
    text = GOOD + "data:\n  source: mnist\n  inputs: {x: {form: x}}\n  targets: {y: {from: y}}\n"
    feature = error_of(write(tmp_path, text)).message
    assert feature.startswith("unknown key 'form' (did you mean 'from'?); allowed here: ")
    assert "from_" not in feature


def test_missing_required_key(tmp_path):
    check(tmp_path, GOOD.replace("  loss: mse\n", ""), 9, 3, "compile", "missing required key 'loss'")


def test_wrong_value_type(tmp_path):
    check(tmp_path, GOOD.replace("epochs: 2", "epochs: ten"), 12, 11, "train.epochs", "expected an integer, got 'ten'")


def test_wrong_type_for_a_union_names_every_alternative(tmp_path):
    check(
        tmp_path,
        GOOD.replace("  loss: mse", "  loss: mse\n  metrics: 5"),
        11,
        12,
        "compile.metrics",
        "expected a list or a mapping, got 5",
    )


def test_out_of_range(tmp_path):
    check(tmp_path, GOOD.replace("epochs: 2", "epochs: 0"), 12, 11, "train.epochs", "must be at least 1, got 0")


def test_bad_name(tmp_path):
    check(
        tmp_path,
        GOOD.replace("name: hidden,", "name: hidden layer,"),
        6,
        14,
        "model.layers[0].name",
        "'hidden layer' is not a valid name (letters, digits, _ . -; not starting with a digit)",
    )


# ---------------------------------------------------------------------------------------------------
# graph


def test_unknown_layer_type(tmp_path):
    err = check(
        tmp_path,
        GOOD.replace("type: Dense, units: 8", "type: Dens, units: 8"),
        6,
        28,
        "model.layers[0].type",
        "unknown layer type 'Dens' (did you mean 'Dense'?); use a keras.layers class name, a block, a sub-model, "
        "`ops.<function>`, `applications.<Model>` or an import path `module:Class`",
    )
    assert err.path == ("model", "layers", 0, "type")


def test_unknown_layer_argument(tmp_path):
    check(
        tmp_path,
        GOOD.replace("units: 8", "unit: 8"),
        6,
        35,
        "model.layers[0].unit",
        "Dense has no argument 'unit' (did you mean 'units'?)",
    )


def test_missing_layer_argument(tmp_path):
    check(tmp_path, GOOD.replace("units: 8, ", ""), 6, 7, "model.layers[0]", "Dense needs argument 'units'")


def test_wrong_kind_of_layer_argument(tmp_path):
    check(
        tmp_path,
        GOOD.replace("units: 8", "units: ten"),
        6,
        42,
        "model.layers[0].units",
        "expected an integer, got 'ten'",
    )


@pytest.mark.parametrize(
    ("old", "new", "column", "where", "message"),
    [
        ("activation: relu}", "activation: relux}", 57, "activation", "unknown activation 'relux' (did you mean 'relu'?)"),
        ("units: 8,", "units: 0,", 42, "units", "expected a positive integer, got 0"),
        ("units: 8,", "units: 1000000000000,", 42, "units",
         "1000000000000 is above 2147483647 (2**31 - 1), the largest size a tensor dimension holds"),
        ("activation: relu}", "activation: relu, kernel_initializer: glorot}", 83, "kernel_initializer",
         "unknown initializer 'glorot' (did you mean 'GlorotNormal'?)"),
        ("activation: relu}", "activation: relu, kernel_regularizer: l3}", 83, "kernel_regularizer",
         "unknown regularizer 'l3'; Keras knows: l1, l1l2, l2, orthogonal_regularizer, regularizer"),
    ],
)  # fmt: skip
def test_argument_values_keras_refuses(tmp_path, old, new, column, where, message):
    check(tmp_path, GOOD.replace(old, new), 6, column, f"model.layers[0].{where}", message)


def test_argument_values_keras_accepts(tmp_path):
    text = GOOD.replace("activation: relu}", "activation: gelu, kernel_initializer: HeNormal, kernel_regularizer: l2, "
                        "kernel_constraint: max_norm, bias_initializer: null}")  # fmt: skip
    api.load_recipe(write(tmp_path, text))


def test_block_value_is_checked_after_substitution(tmp_path):
    text = """\
    name: toy
    blocks:
      conv:
        params: {pad: same}
        layers:
          - {type: Conv2D, filters: 4, kernel_size: 3, padding: "${pad}"}
    model:
      inputs:
        x: {shape: [8, 8, 1]}
      layers:
        - {name: c, type: conv, pad: samee}
        - {type: Flatten}
        - {name: y, type: Dense, units: 1}
    compile: {optimizer: adam, loss: mse}
    """
    message = "passed to blocks.conv.layers[0].padding: 'samee' is not one of 'same', 'valid' (did you mean 'same'?)"
    check(tmp_path, text, 11, 34, "model.layers[0].pad", message)  # the use that passed it
    written = text.replace('padding: "${pad}"', "padding: samee").replace("pad: samee", "pad: same")
    check(tmp_path, written, 6, 61, "blocks.conv.layers[0].padding", message.split(": ", 1)[1])
    api.load_recipe(write(tmp_path, text.replace("samee", "SAME")))  # Keras lower-cases padding


@pytest.mark.parametrize(("seed", "message"), [(-5, "must be at least 0, got -5"),
                                               (2**70, f"must be at most 4294967295, got {2**70}")])  # fmt: skip
def test_seed_in_the_range_keras_accepts(tmp_path, seed, message):
    check(tmp_path, f"seed: {seed}\n" + GOOD, 1, 7, "seed", message)


def test_dangling_reference(tmp_path):
    check(
        tmp_path,
        GOOD.replace("units: 1}", "units: 1, inputs: hiden}"),
        7,
        48,
        "model.layers[1].inputs[0]",
        "input 'hiden' of node 'y' is not defined (did you mean 'hidden'?)",
    )


def test_duplicate_node_name(tmp_path):
    path = write(tmp_path, GOOD.replace("name: y,", "name: hidden,"))
    err = error_of(path)
    assert str(err) == f"{path}:7:14: model.layers[1].name: duplicate name 'hidden' (first at {path}:6:7)"


def test_cycle(tmp_path):
    text = GOOD.replace(
        "    - {name: hidden, type: Dense, units: 8, activation: relu}\n",
        "    - {name: a, type: Add, inputs: [x, b]}\n    - {name: b, type: Dense, units: 4, inputs: a}\n",
    )
    check(tmp_path, text, 7, 48, "model.layers[1].inputs", "the graph has a cycle: a -> b -> a")


def test_output_not_a_node(tmp_path):
    check(
        tmp_path,
        GOOD.replace("compile:", "  outputs: [yy]\ncompile:"),
        8,
        13,
        "model.outputs[0]",
        "output 'yy' is not a node (did you mean 'y'?)",
    )


def test_output_without_loss(tmp_path):
    text = GOOD.replace(
        "    - {name: y, type: Dense, units: 1}\n",
        "    - {name: y, type: Dense, units: 1, inputs: hidden}\n"
        "    - {name: z, type: Dense, units: 2, inputs: hidden}\n"
        "  outputs: [y, z]\n",
    ).replace("  loss: mse", "  loss:\n    y: mse")
    check(tmp_path, text, 13, 5, "compile.loss", "output 'z' has no loss; add `z: <loss>` under compile.loss")


def test_unknown_optimizer(tmp_path):
    check(
        tmp_path,
        GOOD.replace("optimizer: adam", "optimizer: adamm"),
        9,
        14,
        "compile.optimizer",
        "unknown optimizer 'adamm' (did you mean 'adam'?)",
    )


def test_share_of_a_missing_node(tmp_path):
    check(
        tmp_path,
        GOOD.replace("{name: y, type: Dense, units: 1}", "{name: y, share: hiden}"),
        7,
        24,
        "model.layers[1].share",
        "`share` names 'hiden', which is not a node (did you mean 'hidden'?)",
    )


def test_block_unknown_parameter(tmp_path):
    text = 'blocks:\n  mlp:\n    params: {units: 8}\n    layers: [{type: Dense, units: "${units}"}]\n' + GOOD.replace(
        "{name: hidden, type: Dense, units: 8, activation: relu}", "{name: b, type: mlp, unit: 3}"
    )
    check(
        tmp_path,
        text,
        10,
        28,
        "model.layers[0].unit",
        "block 'mlp' has no parameter 'unit' (did you mean 'units'?)",
    )


def test_applications_model_without_prefix(tmp_path):
    text = GOOD.replace("x: {shape: [4]}", "x: {shape: [96, 96, 3]}").replace(
        "{name: hidden, type: Dense, units: 8, activation: relu}",
        "{name: hidden, type: MobileNetV2, weights: null}\n    - {type: GlobalAveragePooling2D}",
    )
    check(
        tmp_path,
        text,
        6,
        28,
        "model.layers[0].type",
        "'MobileNetV2' is a pretrained model: write `type: applications.MobileNetV2`",
    )


# ---------------------------------------------------------------------------------------------------
# data, extends, interpolation


def test_unknown_data_source(tmp_path):
    text = GOOD + "data:\n  source: mnsit\n  inputs: {x: {from: x}}\n  targets: {y: {from: y}}\n"
    err = error_of(write(tmp_path, text))
    assert (err.location.line, err.location.column, err.path) == (14, 11, ("data", "source"))
    assert err.message.startswith("unknown data source 'mnsit' (did you mean 'mnist'?); known: mnist, ")


def test_extends_missing_file(tmp_path):
    check(
        tmp_path,
        "extends: base.yaml\nname: toy\n",
        1,
        10,
        "extends",
        f"extended recipe not found: {tmp_path / 'base.yaml'}",
    )


def test_interpolation_to_a_missing_path(tmp_path):
    check(
        tmp_path,
        GOOD.replace("units: 8", 'units: "${train.batch_sise}"'),
        6,
        42,
        "model.layers[0].units",
        "`${train.batch_sise}` refers to 'train.batch_sise', which is not in the recipe",
    )


# ---------------------------------------------------------------------------------------------------
# --set overrides: validated like recipe text, blamed on the override


def override_error(tmp_path, *overrides: str) -> str:
    return str(error_of(write(tmp_path, GOOD), overrides))


def test_override_type_error_names_the_override(tmp_path):
    assert override_error(tmp_path, "train.epochs=ten") == (
        "--set train.epochs=ten: train.epochs: expected an integer, got 'ten'"
    )


def test_override_unknown_key_names_the_override(tmp_path):
    assert override_error(tmp_path, "train.epoch=3").startswith(
        "--set train.epoch=3: train.epoch: unknown key 'epoch' (did you mean 'epochs'?); allowed here: "
    )


def test_override_unknown_section_names_the_override(tmp_path):
    assert override_error(tmp_path, "trian.epochs=3").startswith(
        "--set trian.epochs=3: trian: unknown key 'trian' (did you mean 'train'?)"
    )


def test_override_layer_argument_names_the_override(tmp_path):
    assert override_error(tmp_path, "model.layers[0].units=many") == (
        "--set model.layers[0].units=many: model.layers[0].units: expected an integer, got 'many'"
    )
    assert override_error(tmp_path, "model.layers[0].unit=3") == (
        "--set model.layers[0].unit=3: model.layers[0].unit: Dense has no argument 'unit' (did you mean 'units'?)"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs", "--set train.epochs: expected KEY.PATH=VALUE"),
        ("=3", "--set =3: empty key; expected KEY.PATH=VALUE"),
        ("model.layers[x].units=3", "--set model.layers[x].units=3: list index must be a number, got 'x'"),
        ("model.layers[5].units=3", "--set model.layers[5].units=3: model.layers[5]: no such item (the list has 2)"),
        ("model.layers.units=3", "--set model.layers.units=3: model.layers is a list; index it with [N], not .units"),
        ("model.inputs[0]=3", "--set model.inputs[0]=3: model.inputs is a mapping; use a key, not [0]"),
        ("name.first=x", "--set name.first=x: name is 'toy', not a mapping or list"),
        ("train.epochs=[1", "--set train.epochs=[1: value: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        (
            "train.epochs=!!python/object/apply:os.system [ls]",
            "--set train.epochs=!!python/object/apply:os.system [ls]: value: "
            "YAML tag '!!python/object/apply:os.system' is not allowed in a recipe (plain values only)",
        ),
    ],
)
def test_malformed_overrides(tmp_path, override, message):
    assert override_error(tmp_path, override) == message


def test_good_override_applies(tmp_path):
    loaded = api.load_recipe(write(tmp_path, GOOD), overrides=["train.epochs=5", "model.layers[0].units=3"])
    assert loaded.recipe.train.epochs == 5
    assert loaded.graph.node("hidden").kwargs["units"] == 3


# ---------------------------------------------------------------------------------------------------
# no TensorFlow


PROBE = """
import sys
from dlrun.cli import main
codes = [main(["validate", path]) for path in sys.argv[1:]]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "jax", "torch"))
print("CODES", codes)
print("HEAVY", heavy)
"""


def test_validate_never_imports_tensorflow(tmp_path):
    bad = write(tmp_path, GOOD.replace("units: 8", "units: ten"), "bad.yaml")
    bad_yaml = write(tmp_path, "a: [", "bad_yaml.yaml")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "recipes/mnist.yaml", str(bad), str(bad_yaml)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "CODES [0, 2, 2]" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_validate_importtime_has_no_tensorflow():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dlrun", "validate", "recipes/mnist.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "dlrun" in imported
    assert not imported & {"tensorflow", "keras"}


def test_the_corpus_recipes_validate_passes_are_the_documented_later_ones():
    """Every bad recipe validate passes needs Keras' shapes (verb: summary/check), as docs/recipes.md lists."""
    from dlrun.validation import FOUND_LATER, diagnose

    passed, later = [], []
    for path in sorted((ROOT / "tests" / "bad_recipes").glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > 1 and lines[1].startswith("# verb: "):
            later.append(path.stem)
        try:
            report = diagnose(path)
        except RecipeError:
            continue
        if not report.errors:
            passed.append(path.stem)
    assert passed == later
    assert all(name.startswith(("build_", "check_expect")) for name in passed)
    assert FOUND_LATER[0].startswith("Shapes, by `check` and `summary`")
