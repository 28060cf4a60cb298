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
from tests.conftest import write_recipe


def _round_trip(model, tmp_path, inputs):
    model.save(tmp_path / "model.keras")
    document, text = api.import_model(tmp_path / "model.keras")
    assert yaml.safe_load(text)["model"] == document["model"]
    loaded = api.load_recipe(write_recipe(tmp_path, text))
    rebuilt = api.build_model(loaded)
    assert rebuilt.count_params() == model.count_params()
    rebuilt.set_weights(model.get_weights())
    for a, b in zip(keras.tree.flatten(rebuilt(inputs)), keras.tree.flatten(model(inputs)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    namespace: dict = {}
    exec(compile(api.eject(loaded), "ejected.py", "exec"), namespace)
    assert namespace["build_model"]().count_params() == model.count_params()
    return document


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
    if name.startswith("ConvNeXt"):
        assert document["imports"] == ["keras.src.applications.convnext"]
