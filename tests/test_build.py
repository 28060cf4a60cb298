"""Built models equal the same models written by hand in Keras: parameters, connectivity, outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dlrun import api
from tests.conftest import write_recipe


def _load(tmp_path, text):
    return api.load_recipe(write_recipe(tmp_path, text))


def _same_outputs(model, ref, inputs):
    ref.set_weights(model.get_weights())
    ours = model.predict(inputs, verbose=0)
    theirs = ref.predict(inputs, verbose=0)
    ours = ours if isinstance(ours, list | tuple) else [ours]
    theirs = theirs if isinstance(theirs, list | tuple) else [theirs]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _inbound(model):
    """layer name -> sorted names of the layers feeding it (the graph's connectivity)."""
    edges = {}
    for layer in model.layers:
        sources = set()
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                sources.add(t._keras_history.operation.name)
        edges[layer.name] = sorted(sources)
    return edges


SEQUENTIAL = """
name: stack
model:
  inputs: {x: {shape: [20]}}
  layers:
    - {name: h1, type: Dense, units: 64, activation: relu}
    - {name: drop, type: Dropout, rate: 0.5}
    - {name: h2, type: Dense, units: 32, activation: relu}
    - {name: out, type: Dense, units: 3, activation: softmax}
compile: {optimizer: adam, loss: categorical_crossentropy, metrics: [accuracy]}
"""


def test_sequential_like_stack_equals_hand_written(tmp_path):
    model = api.build_model(_load(tmp_path, SEQUENTIAL))
    ref = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    assert model.count_params() == ref.count_params() == 20 * 64 + 64 + 64 * 32 + 32 + 32 * 3 + 3
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Dense", "Dropout", "Dense", "Dense"]
    assert _inbound(model) == {"x": [], "h1": ["x"], "drop": ["h1"], "h2": ["drop"], "out": ["h2"]}
    _same_outputs(model, ref, np.random.default_rng(0).random((4, 20), dtype=np.float32))


TWO_INPUTS = """
name: two_inputs
model:
  inputs:
    sepal: {shape: [2]}
    petal: {shape: [2]}
  layers:
    - {name: s, type: Dense, units: 8, activation: relu, inputs: sepal}
    - {name: p, type: Dense, units: 8, activation: relu, inputs: petal}
    - {name: merged, type: Concatenate, inputs: [s, p]}
    - {name: species, type: Dense, units: 3, activation: softmax}
compile: {loss: categorical_crossentropy}
"""


def test_two_input_concatenate_equals_hand_written(tmp_path):
    model = api.build_model(_load(tmp_path, TWO_INPUTS))
    a, b = keras.Input((2,), name="sepal"), keras.Input((2,), name="petal")
    s = keras.layers.Dense(8, activation="relu")(a)
    p = keras.layers.Dense(8, activation="relu")(b)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([s, p]))
    ref = keras.Model([a, b], out)
    assert model.count_params() == ref.count_params() == 2 * (2 * 8 + 8) + 16 * 3 + 3
    assert _inbound(model)["merged"] == ["p", "s"]
    assert [t.name for t in model.inputs] == ["sepal", "petal"]
    rng = np.random.default_rng(1)
    _same_outputs(model, ref, [rng.random((5, 2), dtype=np.float32), rng.random((5, 2), dtype=np.float32)])


TWO_OUTPUTS = """
name: two_outputs
model:
  inputs: {features: {shape: [16]}}
  layers:
    - {name: trunk, type: Dense, units: 32, activation: relu}
    - {name: age, type: Dense, units: 1, inputs: trunk}
    - {name: gender, type: Dense, units: 1, activation: sigmoid, inputs: trunk}
  outputs: [age, gender]
compile:
  optimizer: {type: RMSprop, learning_rate: 0.001}
  loss: {age: mse, gender: binary_crossentropy}
  loss_weights: {age: 0.25, gender: 10.0}
  metrics: {age: [mae], gender: [accuracy]}
"""


def test_two_output_model_with_per_output_losses_and_weights(tmp_path):
    from dlrun.engine.compile import compile_model
    from dlrun.importer import Importer

    loaded = _load(tmp_path, TWO_OUTPUTS)
    model = api.build_model(loaded)
    x = keras.Input((16,), name="features")
    t = keras.layers.Dense(32, activation="relu")(x)
    ref = keras.Model(x, [keras.layers.Dense(1)(t), keras.layers.Dense(1, activation="sigmoid")(t)])
    assert model.count_params() == ref.count_params()
    assert model.output_names == ["age", "gender"]
    _same_outputs(model, ref, np.random.default_rng(2).random((3, 16), dtype=np.float32))

    compile_model(model, loaded.recipe.compile, loaded.graph.outputs, Importer([], tmp_path))
    ref.compile(optimizer="rmsprop", loss=["mse", "binary_crossentropy"], loss_weights=[0.25, 10.0])
    rng = np.random.default_rng(3)
    xs = rng.random((8, 16), dtype=np.float32)
    ys = {"age": rng.random((8, 1), dtype=np.float32), "gender": (rng.random((8, 1)) > 0.5).astype("float32")}
    ours = model.evaluate(xs, ys, verbose=0, return_dict=True)
    theirs = ref.evaluate(xs, [ys["age"], ys["gender"]], verbose=0, return_dict=True)
    # The weighted total equals 0.25 * mse + 10 * bce, exactly as Keras computes it by hand.
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert "age_mae" in ours and "gender_accuracy" in ours


SHARED = """
name: siamese
model:
  inputs:
    left: {shape: [null, 16]}
    right: {shape: [null, 16]}
  layers:
    - {name: lstm, type: LSTM, units: 32, inputs: left}
    - {name: lstm_right, share: lstm, inputs: right}
    - {name: both, type: Concatenate, inputs: [lstm, lstm_right]}
    - {name: same, type: Dense, units: 1, activation: sigmoid}
compile: {loss: binary_crossentropy}
"""


def test_shared_layer_uses_the_very_same_variables(tmp_path):
    built = api.build(_load(tmp_path, SHARED))
    model = built.model
    assert built.layers["lstm"] is built.layers["lstm_right"]
    lstm = model.get_layer("lstm")
    assert len(lstm._inbound_nodes) == 2  # called at two places
    # One set of LSTM weights, not two.
    assert len({id(v) for v in model.weights}) == len(model.weights) == len(lstm.weights) + 2
    left, right = keras.Input((None, 16)), keras.Input((None, 16))
    shared = keras.layers.LSTM(32)
    merged = keras.layers.Concatenate()([shared(left), shared(right)])
    ref = keras.Model([left, right], keras.layers.Dense(1, activation="sigmoid")(merged))
    assert model.count_params() == ref.count_params() == 4 * (16 + 32 + 1) * 32 + 65
    rng = np.random.default_rng(4)
    _same_outputs(model, ref, [rng.random((2, 5, 16), dtype=np.float32), rng.random((2, 5, 16), dtype=np.float32)])


NESTED = """
name: dual_camera
model:
  submodels:
    vision:
      inputs: {image: {shape: [32, 32, 3]}}
      layers:
        - {name: conv, type: Conv2D, filters: 8, kernel_size: 3, activation: relu}
        - {name: pool, type: GlobalAveragePooling2D}
  inputs:
    left: {shape: [32, 32, 3]}
    right: {shape: [32, 32, 3]}
  layers:
    - {name: left_features, type: vision, inputs: left}
    - {name: right_features, type: vision, inputs: right}
    - {name: merged, type: Concatenate, inputs: [left_features, right_features]}
    - {name: depth, type: Dense, units: 1}
compile: {loss: mse}
"""


def test_nested_model_used_twice_shares_weights(tmp_path):
    built = api.build(_load(tmp_path, NESTED))
    model = built.model
    vision = built.submodels["vision"]
    assert isinstance(vision, keras.Model)
    assert built.layers["left_features"] is built.layers["right_features"] is vision
    assert len({id(v) for v in model.weights}) == len(vision.weights) + 2
    image = keras.Input((32, 32, 3))
    feats = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu")(image))
    ref_vision = keras.Model(image, feats)
    left, right = keras.Input((32, 32, 3)), keras.Input((32, 32, 3))
    merged = keras.layers.Concatenate()([ref_vision(left), ref_vision(right)])
    ref = keras.Model([left, right], keras.layers.Dense(1)(merged))
    assert model.count_params() == ref.count_params() == (3 * 3 * 3 * 8 + 8) + (16 + 1)
    rng = np.random.default_rng(5)
    _same_outputs(
        model, ref, [rng.random((2, 32, 32, 3), dtype=np.float32), rng.random((2, 32, 32, 3), dtype=np.float32)]
    )


def test_output_of_a_shared_call_keeps_the_recipes_output_name(tmp_path):
    text = SHARED.replace("    - {name: both, type: Concatenate, inputs: [lstm, lstm_right]}\n", "").replace(
        "    - {name: same, type: Dense, units: 1, activation: sigmoid}\n", ""
    )
    text = text.replace("compile: {loss: binary_crossentropy}", "  outputs: [lstm, lstm_right]\ncompile: {loss: mse}")
    model = api.build_model(_load(tmp_path, text))
    assert model.output_names == ["lstm", "lstm_right"]


def test_shape_mismatch_names_both_layers_and_shapes(tmp_path):
    text = """
name: bad_add
model:
  inputs: {x: {shape: [8]}}
  layers:
    - {name: a, type: Dense, units: 4, inputs: x}
    - {name: b, type: Dense, units: 5, inputs: x}
    - {name: sum, type: Add, inputs: [a, b]}
compile: {loss: mse}
"""
    from dlrun.errors import RecipeError

    loaded = _load(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        api.build_model(loaded)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'recipe.yaml'}:8:7: model.layers[2]: Add 'sum' cannot take its input(s)")
    assert "a (None, 4)" in message and "b (None, 5)" in message


def test_learning_rate_schedule_is_built(tmp_path):
    from dlrun.graph.components import make
    from dlrun.importer import Importer

    text = SEQUENTIAL.replace(
        "optimizer: adam",
        "optimizer: {type: SGD, momentum: 0.9, learning_rate: {type: ExponentialDecay, initial_learning_rate: 0.1,"
        " decay_steps: 100, decay_rate: 0.5}}",
    )
    loaded = _load(tmp_path, text)
    opt = make("optimizers", loaded.recipe.compile.optimizer, Importer([], tmp_path))
    assert isinstance(opt, keras.optimizers.SGD)
    assert isinstance(opt._learning_rate, keras.optimizers.schedules.ExponentialDecay)
    assert float(opt._learning_rate(100)) == pytest.approx(0.05)


def test_auto_steps_per_execution_is_32_for_a_small_mlp_and_1_for_a_large_model_on_cpu(tmp_path):
    """`steps_per_execution: auto` (engine.compile): 32 steps per call while a training batch is cheap (the
    per-call overhead matters), one when a batch costs ONE_STEP_FROM_MULTIPLY_ADDS or more on a CPU-only host,
    or a stage trains fewer than ONE_STEP_BELOW_TRAINING_STEPS steps there."""
    from dlrun.engine.compile import (
        ONE_STEP_BELOW_TRAINING_STEPS,
        ONE_STEP_FROM_MULTIPLY_ADDS,
        compile_model,
        multiply_adds,
    )
    from dlrun.importer import Importer
    from dlrun.recipe.schema import CompileSpec

    assert all(d.startswith("cpu") for d in keras.distribution.list_devices())  # the rule is for CPU hosts
    spec = CompileSpec(loss="sparse_categorical_crossentropy")
    mlp = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512), keras.layers.Dense(10)])
    assert multiply_adds(mlp) == mlp.count_params() == 784 * 512 + 512 + 512 * 10 + 10
    compile_model(mlp, spec, ["y"], Importer([], tmp_path), batch_size=128, training_steps=469 * 5)
    assert mlp.steps_per_execution == 32
    # a short run (wine: 20 epochs of 9 steps) does not win back the multi-step loop's trace
    compile_model(mlp, spec, ["y"], Importer([], tmp_path), batch_size=16, training_steps=9 * 20)
    assert mlp.steps_per_execution == 1
    compile_model(mlp, spec, ["y"], Importer([], tmp_path), batch_size=16, training_steps=ONE_STEP_BELOW_TRAINING_STEPS)
    assert mlp.steps_per_execution == 32
    # a convolution is applied at every output pixel: 28 x 28 positions of 3 x 3 x 3 x 64 + 64 weights
    inputs = keras.Input((28, 28, 3))
    conv = keras.Model(inputs, keras.layers.Conv2D(64, 3, padding="same")(inputs))
    assert multiply_adds(conv) == 28 * 28 * (3 * 3 * 3 * 64 + 64)
    # MobileNetV2 on 64x64 images, nested as one layer: ~2.7e7 per image, counted through the nesting
    inputs = keras.Input((64, 64, 3))
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    big = keras.Model(inputs, keras.layers.Dense(10)(backbone(inputs)))
    assert multiply_adds(big) * 32 >= ONE_STEP_FROM_MULTIPLY_ADDS > multiply_adds(mlp) * 128
    compile_model(big, spec, ["y"], Importer([], tmp_path), batch_size=32)
    assert big.steps_per_execution == 1
    compile_model(big, spec, ["y"], Importer([], tmp_path), batch_size=2)  # a tiny batch: cheap steps again
    assert big.steps_per_execution == 32
    pinned = CompileSpec(loss="sparse_categorical_crossentropy", steps_per_execution=8)
    compile_model(big, pinned, ["y"], Importer([], tmp_path), batch_size=32)
    assert big.steps_per_execution == 8  # a number in the recipe is kept as it is
