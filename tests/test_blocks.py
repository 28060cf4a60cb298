"""Blocks: parameters, expressions, repeat (count, per-copy list, expression), when, naming, folding."""

from __future__ import annotations

import pytest

from dlrun import api
from dlrun.graph.render import summary_rows
from tests.conftest import write_recipe

RECIPE = """
name: blocks
blocks:
  unit:
    params: {filters: 8, stride: 1}
    layers:
      - {name: conv, type: Conv2D, filters: "${filters}", kernel_size: 3, strides: "${stride}", padding: same}
      - {name: proj, type: Conv2D, when: "${stride != 1}", inputs: x, filters: "${filters}", kernel_size: 1,
         strides: "${stride}"}
      - {name: add, type: Add, inputs: [conv, "${'proj' if stride != 1 else 'x'}"]}
  stage:
    params: {filters: 8, units: 2}
    layers:
      - {name: units, type: unit, repeat: "${units}", filters: "${filters}", stride: "${2 if index == 0 else 1}"}
model:
  inputs: {image: {shape: [16, 16, 8]}}
  layers:
    - {name: s1, type: stage, filters: 8, units: 2}
    - {name: s2, type: stage, filters: 16, units: 3}
    - {name: pool, type: GlobalAveragePooling2D}
    - {name: out, type: Dense, units: 2, scale: "${1/255}"}
compile: {loss: mse}
"""


def test_expansion_names_wires_and_repeats(tmp_path):
    text = RECIPE.replace(', scale: "${1/255}"', "")
    loaded = api.load_recipe(write_recipe(tmp_path, text))
    names = [n.name for n in loaded.graph.nodes]
    assert names[:5] == ["s1.units.1.conv", "s1.units.1.proj", "s1.units.1.add", "s1.units.2.conv", "s1.units.2.add"]
    assert sum(n.endswith(".conv") for n in names) == 5  # 2 + 3 units
    assert sum(n.endswith(".proj") for n in names) == 2  # only first units are strided
    first_add = loaded.graph.node("s1.units.2.add")
    assert first_add.inputs == ["s1.units.2.conv", "s1.units.1.add"]  # identity shortcut from the previous unit
    assert loaded.graph.node("pool").inputs == ["s2.units.3.add"] and loaded.graph.resolve("s2") == "s2.units.3.add"
    model = api.build_model(loaded)
    assert model.get_layer("s2-units-1-conv").strides == (2, 2)  # Keras layer names: dashes, which torch accepts
    assert not any("." in layer.name for layer in model.layers)
    assert model.output_shape == (None, 2)


def test_a_node_named_like_a_block_copys_keras_name_is_a_located_error(tmp_path):
    """Block copies are Keras layers with dashes (`s1-units-1-conv`); a node the user names that way got Keras'
    duplicate-layer-name error at build time, with no recipe location. Now `validate` names both nodes."""
    from dlrun.errors import RecipeError

    text = RECIPE.replace(', scale: "${1/255}"', "").replace(
        "    - {name: pool, type: GlobalAveragePooling2D}",
        "    - {name: s1-units-1-conv, type: Activation, activation: relu}\n    - {name: pool, type: GlobalAveragePooling2D}",
    )
    with pytest.raises(RecipeError) as caught:
        api.load_recipe(write_recipe(tmp_path, text))
    assert "'s1.units.1.conv' and 's1-units-1-conv' both become Keras layer 's1-units-1-conv'" in str(caught.value)
    assert caught.value.path == ("model", "layers", 2, "name")


def test_summary_folds_block_uses_and_expands_on_request(tmp_path):
    loaded = api.load_recipe(write_recipe(tmp_path, RECIPE.replace(', scale: "${1/255}"', "")))
    built = api.build(loaded)
    folded = summary_rows(loaded.graph, built)
    assert [r.name for r in folded] == ["image", "s1", "s2", "pool", "out"]
    assert sum(r.params for r in folded) == built.model.count_params()
    assert len(summary_rows(loaded.graph, built, expand=True)) == 1 + len(loaded.graph.nodes)


def test_whole_expression_keeps_its_type(tmp_path):
    text = RECIPE.replace(
        '{name: out, type: Dense, units: 2, scale: "${1/255}"}', '{name: out, type: Dropout, rate: "${1/4}"}'
    )
    loaded = api.load_recipe(write_recipe(tmp_path, text))
    assert loaded.graph.node("out").kwargs["rate"] == 0.25


HEAD = """
name: block_output
blocks:
  head:
    layers:
      - {name: probs, type: Dense, units: 3, activation: softmax}
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {name: h, type: Dense, units: 8, activation: relu}
    - {name: cls, type: head}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
"""


@pytest.mark.parametrize("outputs", ["", "  outputs: [cls.probs]\n"])
def test_an_output_inside_a_block_is_read_as_a_classifier(tmp_path, outputs):
    """The model's output is a block copy's softmax Dense, named by the block (`cls`) or by itself (`cls.probs`):
    build renames it with an Identity layer, which hid the activation (outputs.json said regression)."""
    from dlrun.engine.outputs import decide_outputs

    loaded = api.load_recipe(write_recipe(tmp_path, HEAD.replace("compile:", outputs + "compile:")))
    infos = decide_outputs(loaded, api.build_model(loaded), {})
    assert [(name, info.kind) for name, info in infos.items()] == [(loaded.graph.outputs[0], "softmax")]
