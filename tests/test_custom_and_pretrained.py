"""Custom components by import path (trust rules, saved-model round trip) and keras.applications nodes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from dlrun import api
from dlrun.errors import RecipeError
from tests.conftest import ROOT, write_recipe

FIXTURES = ROOT / "tests" / "fixtures"

CUSTOM = """
name: custom
imports: [my_layers.py]
data:
  source: npz
  path: data.npz
  inputs: {x: {from: x}}
  targets: {y: {from: y}}
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {type: Dense, units: 8, activation: relu}
    - {name: scaled, type: "my_layers.py:Scale", initial: 2.0}
    - {name: y, type: Dense, units: 1}
compile: {optimizer: adam, loss: mse}
train: {epochs: 2, batch_size: 16}
"""


def _custom_recipe(tmp_path, text=CUSTOM):
    shutil.copy(FIXTURES / "my_layers.py", tmp_path / "my_layers.py")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=x.sum(1, keepdims=True), x_test=x[:8],
             y_test=x[:8].sum(1, keepdims=True))  # fmt: skip
    return write_recipe(tmp_path, text)


def test_custom_layer_trains_saves_and_loads_in_a_fresh_process(cli, tmp_path):
    recipe = _custom_recipe(tmp_path)
    result = api.train(api.load_recipe(recipe), runs_root=tmp_path / "runs", quiet=True)
    assert type(result.model.get_layer("scaled")).__name__ == "Scale"
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = result.model.predict(x, verbose=0)
    script = (
        "import sys, numpy as np; from dlrun.engine.artifacts import load_run; from pathlib import Path;"
        f"m = load_run(Path({str(result.run.path)!r}), trust=True).model;"
        f"print(np.asarray(m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(np.array(json.loads(out.stdout.strip().splitlines()[-1])), expected, rtol=1e-6)


def test_custom_code_needs_the_allow_list_or_trust(tmp_path):
    recipe = _custom_recipe(tmp_path, CUSTOM.replace("imports: [my_layers.py]\n", ""))
    with pytest.raises(RecipeError, match=r"would run code from 'my_layers.py'; list it under `imports:`"):
        api.build_model(api.load_recipe(recipe))
    assert api.build_model(api.load_recipe(recipe), trust=True).get_layer("scaled").initial == 2.0


def test_os_system_is_refused_without_trust(cli, tmp_path):
    text = CUSTOM.replace("imports: [my_layers.py]\n", "").replace('"my_layers.py:Scale", initial: 2.0', '"os:system"')
    recipe = _custom_recipe(tmp_path, text)
    result = cli("check", str(recipe))
    assert result.code == 2
    assert "custom component 'os:system' would run code from 'os'" in result.stderr
    assert "Traceback" not in result.stderr


def test_keras_file_with_lambda_is_refused_in_safe_mode(cli, tmp_path):
    from dlrun.engine.artifacts import load_run_model

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(RecipeError, match="Lambda layer with serialized Python code; refused in safe mode"):
        load_run_model(tmp_path / "lambda.keras", {})
    assert load_run_model(tmp_path / "lambda.keras", {}, unsafe=True) is not None


PRETRAINED = """
name: backbone
model:
  inputs: {image: {shape: [32, 32, 3]}}
  layers:
    - {name: base, type: applications.MobileNetV2, weights: WEIGHTS, include_top: false, pooling: avg,
       alpha: 0.35, trainable: false}
    - {name: head, type: Dense, units: 5, activation: softmax}
compile: {optimizer: adam, loss: categorical_crossentropy}
"""


def test_applications_node_with_no_weights_and_with_a_local_weights_file(tmp_path):
    loaded = api.load_recipe(write_recipe(tmp_path, PRETRAINED.replace("WEIGHTS", "null")))
    model = api.build_model(loaded)
    reference = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, pooling="avg",
                                               alpha=0.35, weights=None)  # fmt: skip
    base = model.get_layer("base")
    assert base.count_params() == reference.count_params()
    assert not base.trainable and model.count_params() == reference.count_params() + 1280 * 5 + 5
    # A local weights file (here: the reference's random weights) is loaded into the node.
    reference.save_weights(tmp_path / "base.weights.h5")
    with_file = api.build_model(api.load_recipe(write_recipe(tmp_path, PRETRAINED.replace("WEIGHTS", "base.weights.h5"),
                                                             "file.yaml")))  # fmt: skip
    for a, b in zip(with_file.get_layer("base").get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_local_weights_file_is_a_located_error(tmp_path):
    loaded = api.load_recipe(write_recipe(tmp_path, PRETRAINED.replace("WEIGHTS", "nope.weights.h5")))
    with pytest.raises(RecipeError, match=r"recipe.yaml:6:61: model.layers\[0\].weights: weights file not found"):
        api.build_model(loaded)


def test_two_files_of_the_same_name_each_load_their_own_classes(tmp_path):
    """Both load under dlrun_custom_my_layers: the second folder's my_layers.py used to be served the first's
    module (found when `dlrun import --imports my_layers.py` ran before a recipe's own my_layers.py)."""
    from dlrun.importer import load_file_module

    modules = []
    for folder, value in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        file = tmp_path / folder / "my_layers.py"
        file.write_text(f"VALUE = {value}\n", encoding="utf-8")
        modules.append(load_file_module(file.resolve()))
    assert [m.VALUE for m in modules] == [1, 2]
    assert load_file_module((tmp_path / "b" / "my_layers.py").resolve()) is modules[1]  # the same file: once
    sys.modules.pop("dlrun_custom_my_layers", None)
