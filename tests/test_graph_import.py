"""`dlrun import` of models holding the wide graph's constructs (keras.ops operations, layers with several
outputs, tensors passed by keyword, wrappers holding layers, sub-models inside sub-models, layer classes
from Keras' own modules): the recipe rebuilds the same model (parameters, outputs on the same weights) and
its ejected code builds the same parameter count."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import yaml

from dlrun import api
from dlrun.errors import RecipeError
from tests.conftest import write_recipe


def _round_trip(model, tmp_path, inputs, **options):
    model.save(tmp_path / "model.keras")
    document, text = api.import_model(tmp_path / "model.keras", **options)
    assert yaml.safe_load(text)["model"] == document["model"]
    loaded = api.load_recipe(write_recipe(tmp_path, text))
    rebuilt = api.build_model(loaded)
    assert rebuilt.count_params() == model.count_params()
    rebuilt.set_weights(model.get_weights())
    for a, b in zip(keras.tree.flatten(rebuilt(inputs)), keras.tree.flatten(model(inputs)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    namespace: dict = {}
    code = api.eject(loaded)
    exec(compile(code, "ejected.py", "exec"), namespace)
    ejected = namespace["build_model"]()
    assert ejected.count_params() == model.count_params()
    ejected.set_weights(model.get_weights())  # blocks ejected as functions build the layers in the same order
    for a, b in zip(keras.tree.flatten(ejected(inputs)), keras.tree.flatten(model(inputs)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    document["_text"], document["_code"] = text, code
    return document


def _residual_model():
    L = keras.layers
    x = inputs = keras.Input((6,), name="features")
    x = L.Dense(8, name="stem")(x)
    for k in range(1, 4):  # three identical residual blocks
        h = L.Dense(16, activation="relu", name=f"block{k}_expand")(x)
        h = L.Dense(8, name=f"block{k}_project")(h)
        x = L.Activation("relu", name=f"block{k}_out")(L.Add(name=f"block{k}_add")([x, h]))
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="residual")


def test_import_folds_repeated_blocks(tmp_path):
    """Three identical residual blocks become one block used with `repeat: 3`; the folded recipe rebuilds the
    model (same parameters, same outputs on its weights) and ejects to a function called in a loop."""
    model = _residual_model()
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    document = _round_trip(model, tmp_path, x)
    (block,) = document["blocks"].values()
    assert [n["name"] for n in block["layers"]] == ["expand", "project", "add", "out"]
    assert block["layers"][2]["inputs"] == ["x", "project"]
    assert [n.get("repeat") for n in document["model"]["layers"]] == [None, 3, None]
    assert "for index in range(3):" in document["_code"]
    unfolded = _round_trip(model, tmp_path, x, fold=False)
    assert "blocks" not in unfolded and len(unfolded["model"]["layers"]) == 14


def test_import_folds_ops_whose_tensor_is_not_first(tmp_path):
    """`3.0 - x` is `ops.subtract` with the tensor as x2 and no `inputs`; folded, it stays that way."""
    x = inputs = keras.Input((4,), name="features")
    for k in range(3):
        x = keras.ops.subtract(3.0, keras.layers.Dense(4, name=f"d{k}")(x))
    model = keras.Model(inputs, keras.layers.Dense(1, name="y")(x))
    document = _round_trip(model, tmp_path, np.random.default_rng(0).random((2, 4)).astype("float32"))
    (block,) = document["blocks"].values()
    assert "inputs" not in block["layers"][1] and block["layers"][1]["x1"] == 3.0


def test_import_folds_copies_with_different_arguments(tmp_path):
    """Copies differing in an argument share one block with that argument as a parameter; a multiple of
    another parameter is written as an expression."""
    L = keras.layers
    x = inputs = keras.Input((8, 8, 3), name="image")
    for k, filters in enumerate((4, 4, 8, 8, 16)):
        x = L.Conv2D(filters, 3, padding="same", name=f"s{k}_conv")(x)
        x = L.BatchNormalization(name=f"s{k}_bn")(x)
        x = L.Conv2D(filters * 2, 1, name=f"s{k}_wide")(x)
    model = keras.Model(inputs, L.GlobalAveragePooling2D(name="pool")(x), name="varied")
    document = _round_trip(model, tmp_path, np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32"))
    (block,) = document["blocks"].values()
    assert block["params"] == {"filters": 4}
    assert block["layers"][2]["filters"] == "${filters * 2}"
    (use,) = [n for n in document["model"]["layers"] if "repeat" in n]
    assert use["repeat"] == [{"filters": 4}, {"filters": 4}, {"filters": 8}, {"filters": 8}, {"filters": 16}]


def test_import_maps_registered_classes_of_imports(tmp_path, monkeypatch):
    """`--imports my_layers.py` maps the model's registered custom class to `my_layers.py:Scale`, listed under
    `imports:`; without it the import says which option names the module."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the ejected code imports it as a script next to it would
    (tmp_path / "my_layers.py").write_text(
        "import keras\n\n\n"
        "@keras.saving.register_keras_serializable(package='my_pkg')\n"
        "class Scale(keras.layers.Layer):\n"
        "    def __init__(self, factor=1.0, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.factor = factor\n\n"
        "    def call(self, x):\n"
        "        return x * self.factor\n\n"
        "    def get_config(self):\n"
        "        return {**super().get_config(), 'factor': self.factor}\n",
        encoding="utf-8",
    )
    from dlrun.graph.import_ import load_custom_classes

    (_, scale), *_ = load_custom_classes(["my_layers.py"]).values()
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="y")(scale(2.5, name="scaled")(inputs)))
    model.save(tmp_path / "model.keras")
    with pytest.raises(RecipeError, match="--imports"):
        api.import_model(tmp_path / "model.keras")
    document = _round_trip(model, tmp_path, np.ones((2, 3), "float32"), imports=["my_layers.py"])
    assert document["imports"] == ["my_layers.py"]
    assert document["model"]["layers"][0] == {"name": "scaled", "type": "my_layers.py:Scale", "factor": 2.5}


def test_import_ops_states_keyword_tensors_and_wrappers(tmp_path):
    L = keras.layers
    seq = keras.Input((5, 4), name="seq")
    x = L.Dense(4, name="proj")(seq) * (1.0 / 6.0) + 3.0  # keras.ops operations in the graph
    attended = L.MultiHeadAttention(2, 2, name="att")(x, value=seq, key=seq)
    _, h, c = L.LSTM(3, return_state=True, name="encoder")(attended)
    decoded = L.LSTM(3, return_sequences=True, name="decoder")(seq, initial_state=[h, c])
    bi = L.Bidirectional(L.GRU(2, return_sequences=True), name="bi")(decoded)
    frames = L.TimeDistributed(L.Dense(2), name="td")(bi)
    out = keras.ops.mean(frames, axis=1)
    model = keras.Model(seq, [out, h], name="wide")
    document = _round_trip(model, tmp_path, np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32"))
    nodes = {n["name"]: n for n in document["model"]["layers"]}
    (multiply,) = [n for n in nodes.values() if n.get("type") == "ops.multiply"]  # named by Keras' counter
    assert {k: v for k, v in multiply.items() if k != "name"} == {"type": "ops.multiply", "x2": 1.0 / 6.0}
    assert nodes["att"]["call"] == {"value": "seq", "key": "seq"}
    assert nodes["decoder"]["call"] == {"initial_state": ["encoder[1]", "encoder[2]"]}
    assert nodes["bi"]["layer"] == {"type": "GRU", "units": 2, "return_sequences": True}
    assert document["model"]["outputs"][1] == "encoder[1]"


def test_import_sub_models_nested_two_levels(tmp_path):
    L = keras.layers
    inner_in = keras.Input((4,))
    inner = keras.Sequential([inner_in, L.Dense(4, activation="relu")], name="inner")
    mid_in = keras.Input((4,))
    middle = keras.Model(mid_in, L.Add()([inner(mid_in), inner(mid_in)]), name="middle")
    a = keras.Input((4,), name="a")
    model = keras.Model(a, L.Dense(1, name="y")(middle(middle(a))), name="outer")
    document = _round_trip(model, tmp_path, np.ones((2, 4), "float32"))
    assert set(document["model"]["submodels"]) == {"middle", "inner"}


def _applications() -> list[str]:
    import inspect

    return sorted(n for n in dir(keras.applications) if inspect.isfunction(getattr(keras.applications, n)))


# One constructor of each family in `make test-all` (about 6 min); every one of the 40 (about 25 min on two
# cores, too long for CI's budget) with DLRUN_ALL_APPLICATIONS=1.
FAMILIES = (
    "ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "InceptionResNetV2", "InceptionV3",
    "MobileNet", "MobileNetV2", "MobileNetV3Small", "NASNetMobile", "ResNet50", "ResNet50V2", "Xception",
)  # fmt: skip


def _chosen_applications() -> list[str]:
    every = _applications()
    return every if os.environ.get("DLRUN_ALL_APPLICATIONS") == "1" else [n for n in every if n in FAMILIES]


def test_every_family_has_its_representative():
    assert set(FAMILIES) <= set(_applications())


@pytest.mark.slow
@pytest.mark.parametrize("name", _chosen_applications())
def test_import_keras_applications(tmp_path, name):
    """Every keras.applications constructor (weights=None) imports, rebuilds with the same parameters and
    identical outputs, and ejects to code of the same count. ~20-60 s each on two cores (NASNetLarge more).
    MobileNetV3's hard-swish is keras.ops arithmetic; ConvNeXt has Sequential stages and its own LayerScale
    class (keras.src.applications.convnext, listed under `imports:`)."""
    model = getattr(keras.applications, name)(weights=None)
    shape = [d or 224 for d in model.input_shape[1:]]
    x = np.random.default_rng(0).random((1, *shape)).astype("float32") * 255
    document = _round_trip(model, tmp_path, x)
    folded = {"ResNet50": (20, 80), "ResNet101": (20, 80), "ResNet152": (20, 80), "MobileNetV2": (40, 90)}
    if name in folded:  # repeated structure folded into blocks: a recipe a person could have written
        nodes, lines = folded[name]
        assert len(document["model"]["layers"]) <= nodes
        assert len(document["_text"].splitlines()) <= lines
        blocks = document["blocks"]
        assert all(f"def {b}(x, name: str" in document["_code"] for b in blocks)  # one function per block
        if name.startswith("ResNet"):  # the stages: identity blocks one after the other
            assert "for index in range(" in document["_code"]
    if name.startswith("ConvNeXt"):
        assert document["imports"] == ["keras.src.applications.convnext"]
