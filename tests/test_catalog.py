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


def test_value_facts_are_read_from_keras():
    """Registries are Keras' own lookup tables; choices and ranges are what the constructors accept."""
    cat = catalog.load_catalog()
    assert {"relu", "softmax", "gelu"} <= set(cat["registries"]["activations"])
    assert {"glorot_uniform", "HeNormal"} <= set(cat["registries"]["initializers"])
    assert {"l2", "L1L2"} <= set(cat["registries"]["regularizers"])
    assert {"max_norm", "NonNeg"} <= set(cat["registries"]["constraints"])
    assert set(cat["derived"]) >= {"registries", "registry", "enum", "minimum", "maximum"}
    dense = catalog.entry("layers", "Dense")["values"]
    assert dense["activation"] == {"registry": "activations"}
    assert dense["kernel_initializer"] == {"registry": "initializers"}
    assert dense["units"] == {"minimum": 1, "maximum": catalog.MAX_DIMENSION}
    conv = catalog.entry("layers", "Conv2D")["values"]
    assert conv["padding"] == {"enum": ["same", "valid"], "case_insensitive": True}
    assert conv["data_format"]["enum"] == ["channels_first", "channels_last"]
    assert conv["kernel_size"]["minimum"] == 1
    assert catalog.entry("layers", "Dropout")["values"]["rate"] == {"minimum": 0, "exclusive_maximum": 1}
    assert catalog.entry("layers", "Dense")["doc"].startswith("Just your regular densely-connected")
    assert catalog.entry("layers", "Dense")["arg_docs"]["units"].startswith("Positive integer")


def test_aliases_include_what_keras_get_resolves():
    assert catalog.aliases("losses")["bce"] == "binary_crossentropy"
    assert catalog.aliases("losses")["kld"] == "kl_divergence"
    assert catalog.aliases("optimizers")["schedulefreeadamw"] == "ScheduleFreeAdamW"
    assert "aliases" in catalog.load_catalog()["derived"]
