"""Preprocessing that travels with the model: Keras preprocessing layers declared per input.

```yaml
data:
  inputs:
    petal:
      from: [petal length (cm), petal width (cm)]
      preprocess: [{type: Normalization}]          # z-score, statistics from the training split only
    review:
      from: text
      preprocess: [{type: TextVectorization, max_tokens: 20000, output_mode: multi_hot}]
    image:
      from: image
      preprocess:
        - {type: RandomFlip, mode: horizontal}      # augmentation: active in training only
        - {type: preprocess_input, application: MobileNetV2}
```

`attach_preprocessing` builds these layers, adapts the ones that learn from data (Normalization,
StringLookup, IntegerLookup, TextVectorization, Discretization, `MinMaxScaling`) on the training split
only, and returns one flat functional model `raw inputs -> preprocessing -> the recipe's layers`: the
model that is trained, saved and loaded, so `predict` takes raw data (text, uint8 pixels, categories).
It also checks the data against the model: feature shapes against model inputs, labels against output
units.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.data.prepare import Prepared
from dlrun.errors import RecipeError
from dlrun.importer import Importer
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import Component, FeatureSpec
from dlrun.util import did_you_mean, snake_case

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

KeyPath = tuple[str | int, ...]

# layers that learn from data, and the arguments that make `adapt` unnecessary
ADAPTABLE = {
    "Normalization": ("mean", "variance"),
    "StringLookup": ("vocabulary",),
    "IntegerLookup": ("vocabulary",),
    "TextVectorization": ("vocabulary",),
    "Discretization": ("bin_boundaries",),
}
SPECIAL = ("MinMaxScaling", "preprocess_input")


class Step:
    """One preprocessing item: how to apply it to a tensor, and the Keras layer behind it (if any)."""

    def __init__(
        self,
        comp: Component,
        where: KeyPath,
        layer: keras.layers.Layer | None = None,
        fn: Callable[[Any], Any] | None = None,
    ) -> None:
        self.comp = comp
        self.where = where
        self.layer = layer
        self.fn = fn

    def __call__(self, x: Any, training: bool | None = None) -> Any:
        if self.fn is not None:
            return self.fn(x)
        assert self.layer is not None  # a step is a function or a layer
        if training is None:
            return self.layer(x)
        return self.layer(x, training=training)


def _keras_layer(
    comp: Component, name: str, importer: Importer | None, where: KeyPath, **extra: Any
) -> keras.layers.Layer:
    import keras

    kwargs = {**comp.kwargs, **extra}
    if ":" in comp.type:
        if importer is None:
            raise RecipeError(f"custom layer {comp.type!r} needs an importer", path=(*where, "type"))
        cls = importer.load(comp.type, (*where, "type"))
    else:
        cls = getattr(keras.layers, comp.type, None)
        if not isinstance(cls, type) or not issubclass(cls, keras.layers.Layer):
            known = [n for n in dir(keras.layers) if n[:1].isupper()] + list(SPECIAL)
            hint = did_you_mean(comp.type, known)
            raise RecipeError(f"unknown preprocessing layer {comp.type!r}{hint}", path=(*where, "type"))
    kwargs.setdefault("name", name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{comp.type}: {str(exc).splitlines()[0]}", path=where) from None


def keep_vocabulary_in_config(layer: keras.layers.Layer) -> None:
    """Store an adapted lookup's vocabulary in the layer's config instead of Keras' vocabulary file.

    Keras writes the file joined by '\n' and reads it back with `str.splitlines()`, dropping trailing empty
    lines: a term holding '\x85', '\r', '\u2028', ... splits in two ("repeated term") and an empty string
    vanishes ("Old vocab size is 5, new vocab size is 4"), so the saved model does not load. The config (JSON)
    keeps every term exactly, and a layer built with a vocabulary skips the file.
    """
    lookup = getattr(layer, "_lookup_layer", layer)  # TextVectorization holds a StringLookup
    if not hasattr(lookup, "input_vocabulary") or lookup.input_vocabulary is not None:
        return
    vocabulary = lookup.get_vocabulary(include_special_tokens=False)
    lookup.input_vocabulary = vocabulary
    if lookup.output_mode == "tf_idf":  # the weights of the special tokens come first
        weights = np.asarray(lookup.idf_weights_const)
        lookup.input_idf_weights = weights[len(weights) - len(vocabulary) :]


def _needs_adapt(step: Step) -> bool:
    if step.layer is None or not hasattr(step.layer, "adapt"):
        return False
    preset = ADAPTABLE.get(step.comp.type)
    if preset is None:
        return not getattr(step.layer, "is_adapted", False)
    return not any(step.comp.kwargs.get(k) is not None for k in preset)


# ----------------------------------------------------------------------------------------------------
# preprocess_input of a keras.applications model, as layers


def application_affine(application: str, channels: int, where: KeyPath) -> tuple[bool, np.ndarray, np.ndarray]:
    """`keras.applications.<module>.preprocess_input` measured as `out = diag(scale) @ [flip](x) + offset`.

    Every application's preprocess_input is affine per channel (tf: x/127.5-1; torch: ImageNet mean/std;
    caffe: RGB->BGR and mean subtraction; identity for models that preprocess inside). Probing it gives
    layers (Rescaling/Normalization and a channel flip) that save with the model, no Lambda code.
    """
    import keras

    fn = getattr(keras.applications, application, None)
    module = inspect.getmodule(fn) if fn is not None else None
    pre = getattr(module, "preprocess_input", None)
    if pre is None:
        known = [n for n in dir(keras.applications) if n[:1].isupper()]
        hint = did_you_mean(application, known)
        raise RecipeError(f"unknown keras.applications model {application!r}{hint}", path=(*where, "application"))

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(pre(x.copy().reshape(1, 1, 1, channels)), dtype="float64").reshape(channels)

    offset = run(np.zeros(channels, dtype="float32"))
    matrix = np.stack([run(np.eye(channels, dtype="float32")[c] * 100) - offset for c in range(channels)], axis=1) / 100
    flip = False
    if not np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-6):
        flipped = matrix[:, ::-1]
        if not np.allclose(flipped, np.diag(np.diag(flipped)), atol=1e-6):
            raise RecipeError(
                f"{application}'s preprocess_input is not a per-channel affine map; write its layers yourself",
                path=where,
            )
        flip, matrix = True, flipped
    probe = np.random.default_rng(0).uniform(0, 255, channels).astype("float32")
    expected = np.diag(matrix) * (probe[::-1] if flip else probe) + offset
    if not np.allclose(run(probe), expected, rtol=1e-4, atol=1e-3):
        raise RecipeError(f"{application}'s preprocess_input is not affine; write its layers yourself", path=where)
    return flip, np.diag(matrix).astype("float32"), offset.astype("float32")


def _preprocess_input_steps(comp: Component, name: str, channels: int | None, where: KeyPath) -> list[Step]:
    import keras

    application = comp.kwargs.get("application")
    if not isinstance(application, str):
        raise RecipeError("preprocess_input needs `application: <keras.applications model>`", path=where)
    unknown = set(comp.kwargs) - {"application"}
    if unknown:
        raise RecipeError(f"preprocess_input takes only `application` (got {sorted(unknown)})", path=where)
    if channels is None:
        raise RecipeError("preprocess_input needs images with a known channel count", path=where)
    flip, scale, offset = application_affine(application, channels, where)
    steps = []
    if flip:
        steps.append(Step(comp, where, fn=lambda x: keras.ops.flip(x, axis=-1)))
    if np.allclose(scale, 1) and np.allclose(offset, 0):
        return steps
    if np.allclose(scale, scale[0]) and np.allclose(offset, offset[0]):
        layer = keras.layers.Rescaling(float(scale[0]), float(offset[0]), name=name)
    else:
        layer = keras.layers.Normalization(axis=-1, mean=-offset / scale, variance=1.0 / scale**2, name=name)
    steps.append(Step(comp, where, layer=layer))
    return steps


# ----------------------------------------------------------------------------------------------------
# adapting on the training split


def _as_batches(data: np.ndarray | tf.data.Dataset, batch: int = 256) -> tf.data.Dataset:
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        return data
    if data.dtype.kind == "O":
        data = data.astype(str)
    return tf.data.Dataset.from_tensor_slices(data).batch(batch)


def _min_max(ds: tf.data.Dataset, rank: int) -> tuple[np.ndarray, np.ndarray]:
    lo = hi = None
    for batch in ds:
        b = np.asarray(batch, dtype="float64")
        axes = tuple(range(b.ndim - 1)) if rank >= 1 else None
        bl, bh = b.min(axis=axes), b.max(axis=axes)
        lo = bl if lo is None else np.minimum(lo, bl)
        hi = bh if hi is None else np.maximum(hi, bh)
    if lo is None:
        raise RecipeError("MinMaxScaling: the training split is empty")
    return np.asarray(lo), np.asarray(hi)


def _collect(ds: tf.data.Dataset) -> np.ndarray:
    """A dataset of batches as one NumPy array (text as Python strings)."""
    parts = [np.asarray(b) for b in ds.as_numpy_iterator()]
    if not parts:
        raise RecipeError("the training split is empty")
    out = np.concatenate(parts)
    if out.dtype.kind == "S" or (out.dtype.kind == "O" and out.size and isinstance(out.flat[0], bytes)):
        out = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(out)
    return out


def _fill_step(name: str, feature: FeatureSpec, current: tf.data.Dataset) -> Step:
    """The `fill` of one input as a FillMissing layer, fitted on the training split."""
    from dlrun.data.layers import FillMissing, fit_fill

    where: KeyPath = ("data", "inputs", name, "fill")
    assert feature.fill is not None
    values = fit_fill(_collect(current), feature.fill, feature.fill_value, where)
    try:
        layer = FillMissing(values, feature.missing_indicator, name=f"{name}_fill_missing")
    except ValueError as exc:
        raise RecipeError(str(exc), path=(*where[:-1], "missing_indicator")) from None
    return Step(Component(type="FillMissing"), where, layer=layer)


def build_input_steps(
    name: str,
    comps: list[Component],
    data: np.ndarray | tf.data.Dataset,
    raw: keras.KerasTensor,
    importer: Importer | None,
    used: set[str],
    feature: FeatureSpec | None = None,
) -> tuple[list[Step], keras.KerasTensor]:
    """Build and adapt (on `data`, the training split only) the preprocessing of one input, in order:
    the feature's `fill` first, then its `preprocess` layers.

    Returns the steps and their output on the symbolic input `raw`.
    """
    import keras
    import tensorflow as tf

    steps: list[Step] = []
    current = _as_batches(data)
    sym = raw
    if feature is not None and feature.fill is not None:
        step = _fill_step(name, feature, current)
        steps.append(step)
        sym = step(sym)
        current = current.map(lambda b, s=step: s(b))
    channels = raw.shape[-1] if len(raw.shape) > 1 else None
    for i, comp in enumerate(comps):
        where: KeyPath = ("data", "inputs", name, "preprocess", i)
        base = f"{name}_{snake_case(comp.type)}"
        layer_name = base if base not in used else f"{base}_{i}"
        used.add(layer_name)
        if comp.type == "preprocess_input":
            new = _preprocess_input_steps(comp, layer_name, channels, where)
        elif comp.type == "MinMaxScaling":
            if comp.kwargs:
                raise RecipeError("MinMaxScaling takes no arguments", path=where)
            rank = len(current.element_spec.shape) - 1
            lo, hi = _min_max(current, rank)
            span = np.where(hi - lo > 0, hi - lo, 1.0)
            axis = -1 if rank >= 1 else None
            layer = keras.layers.Normalization(axis=axis, mean=lo, variance=span**2, name=layer_name)
            new = [Step(comp, where, layer=layer)]
        else:
            extra: dict[str, Any] = {}
            if comp.type == "CategoryEncoding" and "num_tokens" not in comp.kwargs:
                previous = next((s.layer for s in reversed(steps) if hasattr(s.layer, "vocabulary_size")), None)
                if previous is None:
                    raise RecipeError("CategoryEncoding needs `num_tokens` (or a lookup layer before it)", path=where)
                extra["num_tokens"] = int(previous.vocabulary_size())
            layer = _keras_layer(comp, layer_name, importer, where, **extra)
            step = Step(comp, where, layer=layer)
            if _needs_adapt(step):
                try:
                    layer.adapt(current)
                except (TypeError, ValueError, tf.errors.InvalidArgumentError) as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise RecipeError(
                        f"adapting {comp.type} on the training split failed: {first}", path=where
                    ) from None
                keep_vocabulary_in_config(layer)
            new = [step]
        for step in new:
            steps.append(step)
            sym = step(sym)  # builds the layer outside tf.data's graph
            current = current.map(lambda b, s=step: s(b, training=False) if s.layer is not None else s(b))
        channels = sym.shape[-1] if len(sym.shape) > 1 else None
    return steps, sym


# ----------------------------------------------------------------------------------------------------
# checks: data vs model


def _loss_name(loaded: LoadedRecipe, output: str) -> str:
    loss = loaded.recipe.compile.loss
    comp = loss.get(output) if isinstance(loss, dict) else loss
    return (comp.type if comp is not None else "").lower().replace("_", "")


def check_targets(
    model: keras.Model, loaded: LoadedRecipe, prepared: Prepared, inputs: list[str], outputs: list[str]
) -> None:
    """Target shapes and label ranges against each output's units and loss."""
    for output, tensor in zip(outputs, model.outputs, strict=True):
        where: KeyPath = ("data", "targets", output)
        units = tensor.shape[-1] if len(tensor.shape) > 1 else None
        info = prepared.target_info(output, inputs, outputs)
        shape = tuple(info["shape"])
        loss = _loss_name(loaded, output)
        out_shape = tuple(tensor.shape[1:])
        if shape and shape[-1] not in (None, 1) and units is not None and shape[-1] != units:
            raise RecipeError(
                f"targets have {shape[-1]} values per sample (shape {shape}) but output {output!r} has "
                f"{units} units (shape {out_shape})",
                path=where,
            )
        top = info.get("max")
        if top is None or units is None or not (not shape or shape == (1,)):
            continue
        count = len(info["classes"]) if info.get("classes") else top + 1
        if "sparse" in loss and count > units:
            raise RecipeError(
                f"labels have {count} classes (0..{count - 1}) but output {output!r} has {units} units",
                path=where,
            )
        if "categorical" in loss and "sparse" not in loss and units > 1:
            raise RecipeError(
                f"{loss} needs one-hot targets of {units} values; add `steps: [one_hot: {units}]` to this "
                "target or use sparse_categorical_crossentropy",
                path=where,
            )
        if "binary" in loss and units == 1 and (top > 1 or info.get("min", 0) < 0):
            raise RecipeError(f"binary labels must be 0 or 1; this target goes up to {top}", path=where)


def _compatible(got: tuple, want: tuple) -> bool:
    if got == () and want == (1,):
        return True
    if len(got) != len(want):
        return False
    return all(g is None or w is None or g == w for g, w in zip(got, want, strict=True))


_VOCABULARY_LAYERS = ("TextVectorization", "StringLookup", "IntegerLookup")


def _unpadded_vocabulary(comps: list[Component]) -> bool:
    """Whether a vocabulary layer's output width follows what adapt found rather than max_tokens."""
    return any(
        comp.type in _VOCABULARY_LAYERS
        and comp.kwargs.get("output_mode", "int") in ("multi_hot", "count", "tf_idf", "one_hot")
        and comp.kwargs.get("max_tokens") is not None
        and not comp.kwargs.get("pad_to_max_tokens", False)
        for comp in comps
    )


def _check_input(name: str, tensor: keras.KerasTensor, core_input: keras.KerasTensor, comps: list[Component]) -> None:
    where: KeyPath = ("data", "inputs", name)
    got, want = tuple(tensor.shape[1:]), tuple(core_input.shape[1:])
    if str(tensor.dtype) == "string" and str(core_input.dtype) != "string":
        raise RecipeError(
            f"input {name!r} receives text; add a preprocess layer that turns text into numbers "
            "(TextVectorization, StringLookup, Hashing)",
            path=where,
        )
    if not _compatible(got, want):
        after = "after preprocessing " if comps else ""
        narrower = bool(got and want) and None not in (got[-1], want[-1]) and got[-1] < want[-1]
        hint = (
            "; the vocabulary adapted on the training data is smaller than max_tokens: set "
            "pad_to_max_tokens: true on the vocabulary layer so the width is always max_tokens"
            if narrower and _unpadded_vocabulary(comps)
            else ""
        )
        raise RecipeError(
            f"the data gives samples of shape {got} {after}but model input {name!r} expects {want}{hint}",
            path=where,
        )


# ----------------------------------------------------------------------------------------------------
# the wrapped model


def input_names(model: keras.Model) -> list[str]:
    """The model's input names in the model's own order."""
    return [t._keras_history[0].name for t in model.inputs]


def _preprocessed_input(
    name: str,
    feature: FeatureSpec,
    prepared: Prepared,
    names: list[str],
    outputs: list[str],
    importer: Importer | None,
    used: set[str],
) -> tuple[Any, Any] | None:
    """(raw symbolic input, its output after `fill` and `preprocess`, adapted on the training split), or None
    when the input declares neither."""
    import keras

    if not feature.preprocess and feature.fill is None:
        return None
    shape, dtype = prepared.input_spec(name, names, outputs)
    data = prepared.adapt_data(name)
    if shape == () and dtype != "string":  # one numeric column: layers want a feature axis; Keras
        # expands (n,) arrays to (n, 1). Text stays scalar, as TextVectorization and lookups expect.
        shape = (1,)
        if isinstance(data, np.ndarray):
            data = data.reshape(-1, 1)
        else:
            import tensorflow as tf

            data = data.map(lambda b: tf.reshape(b, (-1, 1)))
    raw = keras.Input(shape=shape, dtype=dtype, name=name)
    _, x = build_input_steps(name, feature.preprocess, data, raw, importer, used, feature)
    return raw, x


def resolve_input_shapes(loaded: LoadedRecipe, prepared: Prepared, importer: Importer | None = None) -> None:
    """Give every model input declared `shape: auto` (or without a shape) the prepared data's per-sample
    shape: after the steps, and after `fill` and the `preprocess` layers (adapted here on the training split,
    once: `attach_preprocessing` reuses them). Replaces those inputs in `loaded.graph` before it is built."""
    graph = loaded.graph
    auto = [n for n, s in graph.inputs.items() if s.shape == "auto"]
    if not auto:
        return
    names, outputs = list(graph.inputs), list(graph.outputs)
    used = {node.name for node in graph.nodes}
    built: dict[str, tuple[Any, Any]] = {}
    for name in auto:
        feature = loaded.recipe.data.inputs[name]
        result = _preprocessed_input(name, feature, prepared, names, outputs, importer, used)
        if result is not None:
            built[name] = result
            shape = tuple(result[1].shape[1:])
        else:
            shape, _ = prepared.input_spec(name, names, outputs)
            shape = shape or (1,)  # one value per sample: Keras feeds (n,) arrays as (n, 1)
        graph.inputs[name] = graph.inputs[name].model_copy(update={"shape": list(shape)})
    prepared.preprocessed = built


def shapes_from_data(loaded: LoadedRecipe, importer: Importer | None = None) -> None:
    """Resolve `shape: auto` inputs by preparing the recipe's data, for commands that build the model without
    training it (`check`, `summary`); nothing is read when every input has its shape."""
    if loaded.recipe.data is None or all(s.shape != "auto" for s in loaded.graph.inputs.values()):
        return
    from dlrun.data.prepare import prepare

    resolve_input_shapes(loaded, prepare(loaded.recipe.data, loaded.base_dir, loaded.recipe.seed), importer)


def attach_preprocessing(
    model: keras.Model, loaded: LoadedRecipe, prepared: Prepared, importer: Importer | None = None
) -> keras.Model:
    """The model to train: `raw inputs -> preprocessing (adapted on train) -> model`, after checking the
    data against the model. Also records the recipe's batch size and shuffle flag in `prepared` for its
    tf.data pipelines. Returns `model` itself when no input declares `preprocess` or `fill`."""
    import keras

    recipe = loaded.recipe
    spec = recipe.data
    prepared.batch_size = recipe.train.batch_size
    prepared.shuffle = recipe.train.shuffle
    names = input_names(model)
    outputs = list(loaded.graph.outputs)
    check_targets(model, loaded, prepared, names, outputs)
    core = dict(zip(names, model.inputs, strict=True))
    raw: dict[str, Any] = {}
    pre: dict[str, Any] = {}
    used = {layer.name for layer in model.layers}
    ready = prepared.preprocessed  # built by resolve_input_shapes
    for name in names:
        feature = spec.inputs[name]
        result = ready.get(name) or _preprocessed_input(name, feature, prepared, names, outputs, importer, used)
        if result is None:
            shape, dtype = prepared.input_spec(name, names, outputs)
            if dtype != "string" and _compatible(shape, tuple(core[name].shape[1:])):
                continue
            _check_input(name, keras.KerasTensor((None, *shape), dtype=dtype), core[name], [])
            continue
        raw[name], pre[name] = result
        _check_input(name, pre[name], core[name], feature.preprocess)
    if not raw:
        return model
    for name in names:
        if name not in raw:
            raw[name] = pre[name] = keras.Input(
                shape=tuple(core[name].shape[1:]), dtype=core[name].dtype, name=f"{name}"
            )
    flat = model._run_through_graph([pre[n] for n in names], operation_fn=lambda op: op)
    ins = [raw[n] for n in names]
    return keras.Model(ins[0] if len(ins) == 1 else ins, flat, name=model.name)
