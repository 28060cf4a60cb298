"""The recipe zoo builds exactly the models hand-written Keras builds (tests/zoo_reference.py).

For every zoo recipe, from coarse to fine: parameter counts, number of layers with weights, the
wiring expressed by layer types, then the whole Keras config with layer names replaced by positions
(every hyperparameter and every connection). Then the weights are copied across and both models
must compute the same outputs. Weight sharing (`share:`, `model.submodels`) is checked on the
variables themselves.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import zoo_reference

import dlrun.api as api

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SLOW_BUILD = {"vgg16", "bilstm_imdb"}  # ~20 s each: two 138M-parameter models; a masked 200-step BiLSTM


def _cases() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.slow, id=name) if name in SLOW_BUILD else pytest.param(name, id=name)
        for name in zoo_reference.REFERENCES
    ]


def test_every_reference_has_its_recipe() -> None:
    missing = [name for name in zoo_reference.REFERENCES if not (RECIPES / f"{name}.yaml").is_file()]
    assert not missing


@cache
def _loaded(name: str) -> Any:
    return api.load_recipe(RECIPES / f"{name}.yaml")


@cache
def _build(name: str) -> Any:
    """Built once per session: the tests below only read the models (tests that change one build their own)."""
    return api.build(_loaded(name))


# ----------------------------------------------------------------------------------------------------
# structure


def _triples(value: Any) -> list[list[Any]]:
    """`input_layers` / `output_layers`: Keras writes one [name, node, tensor] flat, several nested."""
    return [value] if value and isinstance(value[0], str) else list(value)


def canonical(config: dict[str, Any]) -> dict[str, Any]:
    """A functional model's config with every layer name replaced by its position (`#3`), recursively.

    Keras orders `layers` topologically from the outputs back, so two models with the same graph and
    the same layer configurations give equal canonical configs whatever their layers are called.
    """
    config = copy.deepcopy(config)
    names = {layer["name"]: f"#{i}" for i, layer in enumerate(config["layers"])}

    def rename(obj: Any) -> Any:
        if isinstance(obj, dict):
            out = {key: rename(value) for key, value in obj.items()}
            if "keras_history" in obj:
                history = obj["keras_history"]
                out["keras_history"] = [names[history[0]], *history[1:]]
            return out
        if isinstance(obj, list | tuple):
            return [rename(value) for value in obj]
        return obj

    def unname(obj: Any) -> Any:
        """Layers passed as arguments (Bidirectional's, TimeDistributed's) keep Keras' automatic names."""
        if isinstance(obj, dict):
            if "class_name" in obj and isinstance(obj.get("config"), dict) and "name" in obj["config"]:
                obj["config"]["name"] = "(argument)"
            for value in obj.values():
                unname(value)
        elif isinstance(obj, list):
            for value in obj:
                unname(value)
        return obj

    for layer in config["layers"]:
        inner = layer["config"]
        if isinstance(inner, dict) and "layers" in inner and "input_layers" in inner:
            layer["config"] = inner = canonical(inner)  # a nested model
        elif isinstance(inner, dict):
            for value in inner.values():
                unname(value)
        layer["name"] = names[layer["name"]]
        if isinstance(inner, dict) and "name" in inner:
            inner["name"] = layer["name"]
        layer["inbound_nodes"] = rename(layer["inbound_nodes"])
    for key in ("input_layers", "output_layers"):
        config[key] = [[names[n], *rest] for n, *rest in _triples(config[key])]
    config.pop("name", None)
    return config


def wiring(config: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """Per layer in topological order: its class and, per call, the classes of the layers it reads."""
    classes = {layer["name"]: layer["class_name"] for layer in config["layers"]}

    def sources(obj: Any) -> list[str]:
        if isinstance(obj, dict):
            if "keras_history" in obj:
                return [classes[obj["keras_history"][0]]]
            return [s for value in obj.values() for s in sources(value)]
        if isinstance(obj, list):
            return [s for value in obj for s in sources(value)]
        return []

    return [(layer["class_name"], [sources(node) for node in layer["inbound_nodes"]]) for layer in config["layers"]]


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two nested configs first differ, as `path: a != b`."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}: only in {'recipe' if key in a else 'reference'}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def _counts(model: keras.Model) -> tuple[int, int]:
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return model.count_params(), trainable


def _weighted_layers(model: keras.Model) -> int:
    """Layers owning weights, looking inside nested models (a shared layer counts once)."""
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            count += _weighted_layers(layer)
        elif layer.weights:
            count += 1
    return count


def _random_inputs(model: keras.Model, rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    for tensor in model.inputs:
        shape = (2, *[d or 7 for d in tensor.shape[1:]])
        if "int" in str(tensor.dtype):
            arrays.append(rng.integers(0, 11, size=shape).astype("int32"))  # within every vocabulary
        else:
            arrays.append(rng.normal(size=shape).astype("float32"))
    return arrays


@pytest.mark.parametrize("name", _cases())
def test_recipe_builds_the_reference_model(name: str) -> None:
    model = _build(name).model
    ref = zoo_reference.REFERENCES[name]()

    assert _counts(model) == _counts(ref), "(total, trainable) parameters differ"
    expect = _loaded(name).recipe.expect
    assert expect is not None and expect.params == model.count_params(), "the recipe's expect.params is stale"
    assert _weighted_layers(model) == _weighted_layers(ref)
    mine, theirs = canonical(model.get_config()), canonical(ref.get_config())
    assert wiring(mine) == wiring(theirs)
    assert mine == theirs, first_difference(mine, theirs)

    # Same graph and same layer order: the weights line up one to one, so the outputs must agree.
    assert [tuple(w.shape) for w in model.weights] == [tuple(w.shape) for w in ref.weights]
    ref.set_weights(model.get_weights())
    xs = _random_inputs(model, np.random.default_rng(0))
    arg = xs[0] if len(xs) == 1 else xs
    got = keras.tree.flatten(model(arg, training=False))
    want = keras.tree.flatten(ref(arg, training=False))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(g), keras.ops.convert_to_numpy(w), atol=1e-5)


def test_canonical_config_catches_a_changed_hyperparameter() -> None:
    """The comparison is not vacuous: one different kernel size, or a swapped merge, is a failure."""
    ref = canonical(zoo_reference.mnist_cnn().get_config())
    changed = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, activation="tanh"),  # relu in the book
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    other = canonical(keras.Model(changed.inputs, changed.outputs).get_config())
    assert wiring(other) == wiring(ref)
    assert "activation" in (first_difference(other, ref) or "")
    assert wiring(canonical(zoo_reference.iris_add().get_config())) != wiring(
        canonical(zoo_reference.iris_concat().get_config())
    )


# ----------------------------------------------------------------------------------------------------
# parameter counts from the books


def test_resnet34_has_the_books_21306826_parameters() -> None:
    model = _build("resnet34").model
    assert tuple(model.input_shape) == (None, 224, 224, 3)
    assert tuple(model.output_shape) == (None, 10)
    assert model.count_params() == 21_306_826
    assert model.count_params() - _counts(model)[1] == 17_024  # BatchNormalization moving statistics


@pytest.mark.slow
def test_resnet34_matches_gerons_residual_unit_class() -> None:
    """Géron's own formulation (Sequential + a ResidualUnit layer class): same counts, one layer per unit."""
    book = zoo_reference.resnet34_geron()
    assert _counts(book) == _counts(_build("resnet34").model) == (21_306_826, 21_289_802)


@pytest.mark.slow
def test_vgg16_matches_keras_applications() -> None:
    assert _build("vgg16").model.count_params() == 138_357_544 == zoo_reference.vgg16().count_params()


# ----------------------------------------------------------------------------------------------------
# weight sharing


def _ids(variables: list[Any]) -> set[int]:
    return {id(v) for v in variables}


def _halves_equal(built: Any, merged: str, inputs: list[np.ndarray]) -> None:
    """With the same data on both sides, a shared encoder gives both halves of the merge equal."""
    probe = keras.Model(built.model.inputs, built.tensors[merged])
    out = keras.ops.convert_to_numpy(probe([inputs[0], inputs[0]], training=False))
    left, right = np.split(out, 2, axis=-1)
    np.testing.assert_allclose(left, right, atol=1e-6)


def test_siamese_lstm_calls_one_lstm_twice() -> None:
    built = _build("siamese_lstm")
    lstm = built.layers["left_lstm"]
    assert built.layers["right_lstm"] is lstm
    assert isinstance(lstm, keras.layers.LSTM)
    # Both call sites run the very same layer object, hence the very same variables.
    left_op = built.tensors["left_lstm"]._keras_history.operation
    right_op = built.tensors["right_lstm"]._keras_history.operation
    assert left_op is right_op is lstm
    lstm_layers = [layer for layer in built.model.layers if isinstance(layer, keras.layers.LSTM)]
    assert lstm_layers == [lstm]
    dense = built.layers["similar"]
    assert _ids(built.model.weights) == _ids(lstm.weights) | _ids(dense.weights)
    assert len(_ids(built.model.weights)) == len(lstm.weights) + len(dense.weights)
    assert built.model.count_params() == lstm.count_params() + dense.count_params() == 20_673
    _halves_equal(built, "merged", _random_inputs(built.model, np.random.default_rng(1)))


def test_dual_camera_calls_one_submodel_twice() -> None:
    built = _build("dual_camera")
    camera = built.submodels["camera"]
    assert isinstance(camera, keras.Model)
    assert built.layers["left_features"] is camera
    assert built.layers["right_features"] is camera
    assert [layer for layer in built.model.layers if isinstance(layer, keras.Model)] == [camera]
    head = [built.layers["hidden"], built.layers["obstacle"]]
    head_ids = set().union(*(_ids(layer.weights) for layer in head))
    assert _ids(built.model.weights) == _ids(camera.weights) | head_ids
    assert len(_ids(built.model.weights)) == len(camera.weights) + sum(len(layer.weights) for layer in head)
    assert built.model.count_params() == camera.count_params() + sum(layer.count_params() for layer in head)
    _halves_equal(built, "merged", _random_inputs(built.model, np.random.default_rng(2)))


# ----------------------------------------------------------------------------------------------------
# pieces particular to one recipe


def test_transfer_xception_stages_freeze_and_unfreeze_the_base() -> None:
    from dlrun.engine.compile import apply_trainable

    loaded = _loaded("transfer_xception")
    model = api.build_model(loaded)
    head, unfreeze = loaded.recipe.train.stages
    assert (head.epochs, head.optimizer.kwargs["learning_rate"]) == (5, 0.2)
    assert (unfreeze.epochs, unfreeze.optimizer.kwargs["learning_rate"]) == (10, 0.01)
    apply_trainable(model, loaded.graph, head.trainable, ())
    assert _counts(model)[1] == 2048 * 5 + 5  # only the Dense head trains
    apply_trainable(model, loaded.graph, unfreeze.trainable, ())
    assert _counts(model)[1] == loaded.recipe.expect.trainable_params


def test_transfer_xception_accepts_imagenet_by_override() -> None:
    """`--set model.layers[1].weights=imagenet` lands on the Xception node (validation only: offline)."""
    loaded = api.load_recipe(RECIPES / "transfer_xception.yaml", ["model.layers[1].weights=imagenet"])
    assert loaded.graph.node("xception").kwargs["weights"] == "imagenet"
    assert _loaded("transfer_xception").graph.node("xception").kwargs["weights"] is None


def test_local_response_normalization_matches_tensorflow() -> None:
    tf = pytest.importorskip("tensorflow")
    lrn = zoo_reference.local_response_normalization_class()
    x = np.random.default_rng(3).normal(scale=3.0, size=(2, 5, 5, 7)).astype("float32")
    for radius, bias, alpha, beta in [
        (2, 2.0, 1e-4, 0.75),
        (5, 1.0, 1.0, 0.5),
        (0, 1.0, 0.3, 0.75),
        (4, 1.5, 0.2, 0.6),
    ]:
        got = keras.ops.convert_to_numpy(lrn(depth_radius=radius, bias=bias, alpha=alpha, beta=beta)(x))
        want = tf.nn.local_response_normalization(x, depth_radius=radius, bias=bias, alpha=alpha, beta=beta)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_local_response_normalization_saves_and_reloads(tmp_path: Path) -> None:
    lrn = zoo_reference.local_response_normalization_class()
    assert keras.saving.get_registered_name(lrn) == "dlrun_recipes>LocalResponseNormalization"
    layer = lrn(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, name="lrn")
    assert lrn.from_config(layer.get_config()).get_config() == layer.get_config()
    inputs = keras.Input(shape=(4, 4, 6))
    model = keras.Model(inputs, layer(inputs))
    file = tmp_path / "lrn.keras"
    model.save(file)
    again = keras.saving.load_model(file)  # registered: no custom_objects needed
    x = np.random.default_rng(4).normal(size=(1, 4, 4, 6)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
