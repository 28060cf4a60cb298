"""The wide functional graph: layers and Keras objects as arguments, calls with several tensors by keyword,
layers with several outputs, `keras.ops` nodes and sub-models calling sub-models — each built model equal
to the same model written by hand in Keras (parameters, outputs on the same weights), and each misuse
reported at validate as one located line."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dlrun import api
from dlrun.errors import RecipeError, format_path
from tests.conftest import write_recipe


def _load(tmp_path, text):
    return api.load_recipe(write_recipe(tmp_path, text))


def _error(tmp_path, text) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        _load(tmp_path, text)
    return info.value


def _same(model, ref, inputs):
    assert model.count_params() == ref.count_params()
    ref.set_weights(model.get_weights())
    ours = model(inputs, training=False)
    theirs = ref(inputs, training=False)
    ours = ours if isinstance(ours, list | tuple) else [ours]
    theirs = theirs if isinstance(theirs, list | tuple) else [theirs]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


COMPILE = "compile: {optimizer: adam, loss: mse}\n"

WRAPPERS = (
    """
name: wrappers
model:
  inputs:
    frames: {shape: [3, 8, 8, 1]}
    seq: {shape: [5, 4]}
  layers:
    - {name: conv, type: TimeDistributed, inputs: frames,
       layer: {type: Conv2D, filters: 2, kernel_size: 3, kernel_regularizer: {type: L2, l2: 0.01}}}
    - {name: flat, type: TimeDistributed, layer: {type: Flatten}}
    - {name: bi, type: Bidirectional, inputs: seq, layer: {type: LSTM, units: 3, return_sequences: true},
       backward_layer: {type: GRU, units: 3, return_sequences: true, go_backwards: true}}
    - {name: cells, type: RNN, cell: [{type: LSTMCell, units: 2}, {type: GRUCell, units: 3}]}
    - {name: d, type: Dense, units: 2, inputs: flat, kernel_initializer: {type: Constant, value: 0.5},
       kernel_constraint: {type: MaxNorm, max_value: 2}}
    - {name: pooled, type: GlobalAveragePooling1D, inputs: d}
    - {name: out, type: Concatenate, inputs: [pooled, cells]}
"""
    + COMPILE
)


def test_layers_and_objects_as_arguments_equal_hand_written(tmp_path):
    model = api.build_model(_load(tmp_path, WRAPPERS))
    L = keras.layers
    frames, seq = keras.Input((3, 8, 8, 1), name="frames"), keras.Input((5, 4), name="seq")
    x = L.TimeDistributed(L.Conv2D(2, 3, kernel_regularizer=keras.regularizers.L2(0.01)))(frames)
    x = L.TimeDistributed(L.Flatten())(x)
    b = L.Bidirectional(
        L.LSTM(3, return_sequences=True), backward_layer=L.GRU(3, return_sequences=True, go_backwards=True)
    )(seq)
    c = L.RNN([L.LSTMCell(2), L.GRUCell(3)])(b)
    d = L.Dense(2, kernel_initializer=keras.initializers.Constant(0.5), kernel_constraint=keras.constraints.MaxNorm(2))
    y = L.Concatenate()([L.GlobalAveragePooling1D()(d(x)), c])
    ref = keras.Model([frames, seq], y)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 3, 8, 8, 1)).astype("float32"), rng.normal(size=(2, 5, 4)).astype("float32")]
    _same(model, ref, inputs)
    assert len(model.losses) == 1  # the nested regularizer is live
    dense = model.get_layer("d")
    assert isinstance(dense.kernel_constraint, keras.constraints.MaxNorm)
    np.testing.assert_allclose(np.asarray(dense.kernel), 0.5)  # the nested initializer was used


@pytest.mark.parametrize(
    ("layer", "where", "message"),
    [
        (
            "{type: Dense, units: 2, kernel_regularizer: {type: L1L3, l1: 0.1}}",
            "model.layers[0].kernel_regularizer.type",
            "unknown regularizer 'L1L3' (did you mean 'L1L2'?)",
        ),
        (
            "{type: Dense, units: 2, kernel_regularizer: {type: L2, l3: 0.1}}",
            "model.layers[0].kernel_regularizer.l3",
            "L2 has no argument 'l3'",
        ),
        (
            "{type: Bidirectional, layer: {type: LSTM, unit: 3}}",
            "model.layers[0].layer.unit",
            "LSTM has no argument 'unit' (did you mean 'units'?)",
        ),
        (
            "{type: RNN, cell: [{type: LSTMCell, units: 2}, {type: GRUCel, units: 2}]}",
            "model.layers[0].cell[1].type",
            "unknown layer 'GRUCel' (did you mean 'GRUCell'?)",
        ),
    ],
)
def test_bad_nested_spec_is_a_located_validate_error(tmp_path, layer, where, message):
    text = f"name: bad\nmodel:\n  inputs: {{x: {{shape: [5, 4]}}}}\n  layers:\n    - {layer}\n{COMPILE}"
    err = _error(tmp_path, text)
    assert err.message == message
    assert format_path(err.path) == where
    assert err.location is not None and err.location.line == 5


ATTENTION = (
    """
name: attention
model:
  inputs:
    x: {shape: [6, 8]}
    enc: {shape: [4, 8]}
    mask: {shape: [6, 4], dtype: bool}
  layers:
    - {name: self_att, type: MultiHeadAttention, num_heads: 2, key_dim: 4, inputs: x,
       call: {value: x, use_causal_mask: true}}
    - {name: cross, type: MultiHeadAttention, num_heads: 2, key_dim: 4,
       call: {query: self_att, value: enc, key: enc, attention_mask: mask}}
    - {name: res, type: Add, inputs: [self_att, cross]}
"""
    + COMPILE
)


def test_calls_with_several_tensors_by_keyword(tmp_path):
    model = api.build_model(_load(tmp_path, ATTENTION))
    L = keras.layers
    x, enc = keras.Input((6, 8), name="x"), keras.Input((4, 8), name="enc")
    mask = keras.Input((6, 4), dtype="bool", name="mask")
    a = L.MultiHeadAttention(2, 4)(x, x, use_causal_mask=True)
    b = L.MultiHeadAttention(2, 4)(query=a, value=enc, key=enc, attention_mask=mask)
    ref = keras.Model([x, enc, mask], L.Add()([a, b]))
    rng = np.random.default_rng(1)
    m = rng.random((2, 6, 4)) > 0.3
    _same(model, ref, [rng.normal(size=(2, 6, 8)), rng.normal(size=(2, 4, 8)), m])


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            "{type: MultiHeadAttention, num_heads: 2, key_dim: 4, inputs: [x, x]}",
            "MultiHeadAttention needs call argument 'value' (e.g. `call: {value: <node>}`); "
            "`inputs` gives only its first argument 'query'",
        ),
        (
            "{type: MultiHeadAttention, num_heads: 2, key_dim: 4, inputs: x, call: {value: enk}}",
            "'enk' in call argument 'value' of node 'multi_head_attention' is not defined (did you mean 'enc'?)",
        ),
        (
            "{type: MultiHeadAttention, num_heads: 2, key_dim: 4, inputs: x, call: {valeu: enc}}",
            "MultiHeadAttention.call() has no argument 'valeu' (did you mean 'value'?); it takes query, value, "
            "key, query_mask, value_mask, key_mask, attention_mask, return_attention_scores, training, "
            "use_causal_mask",
        ),
        (
            "{type: MultiHeadAttention, num_heads: 2, key_dim: 4, inputs: x, call: {query: x, value: x}}",
            "node 'multi_head_attention' gives 'query' both in `inputs` and in `call`; keep one",
        ),
    ],
)
def test_bad_call_tensors_are_located_validate_errors(tmp_path, node, message):
    text = (
        "name: bad\nmodel:\n  inputs: {x: {shape: [6, 8]}, enc: {shape: [4, 8]}}\n  layers:\n"
        f"    - {node}\n{COMPILE}"
    )
    err = _error(tmp_path, text)
    assert err.message == message
    assert err.location is not None and err.location.line == 5


def test_a_cycle_through_a_call_tensor_is_found(tmp_path):
    text = (
        """
name: bad
model:
  inputs: {x: {shape: [6, 8]}}
  layers:
    - {name: a, type: MultiHeadAttention, num_heads: 1, key_dim: 2, inputs: x, call: {value: b}}
    - {name: b, type: Dense, units: 8, inputs: a}
"""
        + COMPILE
    )
    assert _error(tmp_path, text).message == "the graph has a cycle: a -> b -> a"


SEQ2SEQ = """
name: seq2seq
model:
  inputs:
    source: {shape: [7], dtype: int32}
    target_in: {shape: [6], dtype: int32}
  layers:
    - {name: src_emb, type: Embedding, input_dim: 12, output_dim: 8, inputs: source}
    - {name: encoder, type: LSTM, units: 16, return_state: true}
    - {name: tgt_emb, type: Embedding, input_dim: 12, output_dim: 8, inputs: target_in}
    - {name: decoder, type: LSTM, units: 16, return_sequences: true,
       call: {initial_state: ["encoder[1]", "encoder[2]"]}}
    - {name: next_token, type: Dense, units: 12, activation: softmax}
  outputs: [next_token, "encoder[1]"]
compile: {optimizer: adam, loss: {next_token: sparse_categorical_crossentropy, "encoder[1]": mse}}
"""


def test_several_outputs_picked_by_index(tmp_path):
    model = api.build_model(_load(tmp_path, SEQ2SEQ))
    L = keras.layers
    source, target = keras.Input((7,), dtype="int32"), keras.Input((6,), dtype="int32")
    _, h, c = L.LSTM(16, return_state=True)(L.Embedding(12, 8)(source))
    seq = L.LSTM(16, return_sequences=True)(L.Embedding(12, 8)(target), initial_state=[h, c])
    ref = keras.Model([source, target], [L.Dense(12, activation="softmax")(seq), h])
    rng = np.random.default_rng(2)
    _same(model, ref, [rng.integers(0, 12, (2, 7)), rng.integers(0, 12, (2, 6))])
    assert model.output_names == ["next_token", "encoder[1]"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('"encoder[3]"', "output index 3 is out of range: node 'encoder' (LSTM) gives 3 tensors (encoder[0] to encoder[2])"),
        ("encoder", "node 'encoder' (LSTM) gives 3 tensors; pick one: encoder[0] to encoder[2]"),
        ('"src_emb[1]"', "node 'src_emb' (Embedding) gives one tensor; drop [1]"),
        ('"source[0]"', "model input 'source' is one tensor; drop [0]"),
        ('"encoder[h]"', "'encoder[h]': outputs are picked by name only from sub-models; 'encoder' is a LSTM: use an index, e.g. encoder[0]"),
    ],
)  # fmt: skip
def test_bad_output_picks_are_validate_errors(tmp_path, change, message):
    text = SEQ2SEQ.replace('"encoder[2]"', change)
    assert _error(tmp_path, text).message == message


OPS = (
    """
name: ops
model:
  inputs: {x: {shape: [4, 3]}, y: {shape: [4, 3]}}
  layers:
    - {name: plus, type: ops.add, inputs: [x, y]}
    - {name: scaled, type: ops.multiply, x2: 0.5}
    - {name: shifted, type: ops.subtract, x1: 3.0, x2: scaled}
    - {name: mean, type: ops.mean, axis: 1}
    - {name: out, type: Dense, units: 2}
"""
    + COMPILE
)


def test_ops_nodes_with_scalar_operands_and_keyword_arguments(tmp_path):
    loaded = _load(tmp_path, OPS)
    model = api.build_model(loaded)
    x, y = keras.Input((4, 3)), keras.Input((4, 3))
    z = keras.ops.mean(3.0 - keras.ops.add(x, y) * 0.5, axis=1)
    ref = keras.Model([x, y], keras.layers.Dense(2)(z))
    rng = np.random.default_rng(3)
    _same(model, ref, [rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))])
    assert loaded.graph.node("shifted").refs == ["scaled"]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("{type: ops.addd, inputs: [x, x]}", "unknown keras.ops function 'addd' (did you mean 'ops.add'?)"),
        ("{type: ops.mean, axes: 1}", "ops.mean has no argument 'axes' (did you mean 'axis'?)"),
        ("{type: ops.add, inputs: [x, x, x]}", "ops.add takes 2 argument(s) (x1, x2), got 3 inputs"),
        ("{type: ops.add}", "ops.add needs argument 'x2'"),
        (
            "{type: ops.arange, start: 0, stop: 4}",
            "ops.arange takes no tensor here: its result would be a constant outside the model's graph; compute it "
            "from an input (e.g. positions as ops.cumsum of ops.ones_like(tokens))",
        ),
    ],
)
def test_bad_ops_nodes_are_validate_errors(tmp_path, node, message):
    text = f"name: bad\nmodel:\n  inputs: {{x: {{shape: [4]}}}}\n  layers:\n    - {node}\n{COMPILE}"
    assert _error(tmp_path, text).message == message


NESTED = (
    """
name: nested
model:
  submodels:
    unit:
      inputs: {u: {shape: [4]}}
      layers:
        - {name: d, type: Dense, units: 4, activation: relu}
    tower:
      inputs: {t: {shape: [4]}}
      layers:
        - {name: first, type: unit}
        - {name: second, type: unit, inputs: t}
        - {name: both, type: Concatenate, inputs: [first, second]}
      outputs: [both, second]
  inputs: {a: {shape: [4]}, b: {shape: [4]}}
  layers:
    - {name: left, type: tower, inputs: a}
    - {name: right, share: left, inputs: b}
    - {name: out, type: Concatenate, inputs: ["left[both]", "right[second]"]}
"""
    + COMPILE
)


def test_sub_models_call_sub_models_with_shared_weights(tmp_path):
    model = api.build_model(_load(tmp_path, NESTED))
    L = keras.layers
    u = keras.Input((4,))
    unit = keras.Model(u, L.Dense(4, activation="relu")(u), name="unit")
    t = keras.Input((4,))
    s1, s2 = unit(t), unit(t)
    tower = keras.Model(t, [L.Concatenate()([s1, s2]), s2], name="tower")
    a, b = keras.Input((4,)), keras.Input((4,))
    ref = keras.Model([a, b], L.Concatenate()([tower(a)[0], tower(b)[1]]))
    rng = np.random.default_rng(4)
    _same(model, ref, [rng.normal(size=(2, 4)), rng.normal(size=(2, 4))])
    assert model.count_params() == 20  # one Dense(4) on 4 inputs, shared by every call
    err = _error(tmp_path, NESTED.replace('"left[both]"', '"left[bothh]"'))
    assert err.message == "sub-model 'tower' has no output 'bothh' (did you mean 'both'?); its outputs: both, second"


@pytest.mark.parametrize("text", [WRAPPERS, ATTENTION, SEQ2SEQ, OPS, NESTED])
def test_ejected_code_builds_the_same_model(tmp_path, text):
    loaded = _load(tmp_path, text)
    model = api.build_model(loaded)
    namespace: dict = {}
    exec(compile(api.eject(loaded), "ejected.py", "exec"), namespace)
    ejected = namespace["build_model"]()
    assert ejected.count_params() == model.count_params()
    assert [w.shape for w in ejected.weights] == [w.shape for w in model.weights]


def test_an_output_index_known_only_when_built_is_a_located_build_error(tmp_path):
    text = (
        """
name: bad
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {name: halves, type: ops.split, indices_or_sections: 2, axis: 1}
    - {name: third, type: Dense, units: 1, inputs: "halves[2]"}
"""
        + COMPILE
    )
    loaded = _load(tmp_path, text)  # how many tensors ops.split gives is known only when built
    with pytest.raises(RecipeError) as info:
        api.build_model(loaded)
    assert info.value.message == "'halves[2]': output index 2 is out of range; 'halves' gives 2 tensor(s)"
    assert format_path(info.value.path) == "model.layers[1].inputs[0]"
    assert info.value.location is not None and info.value.location.line == 7
