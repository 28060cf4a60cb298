"""The Keras catalog: current with the installed Keras, and right about argument kinds."""

from __future__ import annotations

from dlrun.graph import catalog


def test_catalog_matches_installed_keras():
    assert catalog.render(catalog.generate()) == catalog.CATALOG_PATH.read_text(encoding="utf-8"), (
        "keras_catalog.json is stale: run `make catalog`"
    )


def test_every_keras_layer_is_known_by_class_name():
    import keras

    names = set(catalog.names("layers"))
    public = {n for n in dir(keras.layers) if isinstance(getattr(keras.layers, n), type)
              and issubclass(getattr(keras.layers, n), keras.layers.Layer)}  # fmt: skip
    assert public == names
    assert {"Dense", "Conv2D", "SeparableConv2D", "BatchNormalization", "LSTM", "Normalization"} <= names


def test_argument_kinds_come_from_keras_docs_and_signatures():
    dense = catalog.entry("layers", "Dense")["params"]
    assert dense["units"] == {"required": True, "default": None, "kind": "int", "nullable": False}
    assert dense["use_bias"]["kind"] == "bool"
    assert catalog.entry("layers", "Conv2D")["params"]["kernel_size"]["kind"] == "ints"
    assert catalog.entry("layers", "Dropout")["params"]["rate"]["kind"] == "float"


def test_did_you_mean():
    assert catalog.did_you_mean("Dens", catalog.names("layers")) == " (did you mean 'Dense'?)"
    assert catalog.did_you_mean("dense", catalog.names("layers")) == " (did you mean 'Dense'?)"
    assert catalog.did_you_mean("zzzzzz", catalog.names("layers")) == ""
