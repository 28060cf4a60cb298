"""`dlrun export RUN --format keras|savedmodel|tflite|onnx`: write the model, load it back, compare outputs.

Every export is verified on a sample batch (random inputs shaped like the model's inputs): the
exported artifact, loaded by its own runtime, must reproduce the Keras model's outputs within tolerance.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.errors import RecipeError

if TYPE_CHECKING:
    import keras

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
TOLERANCE = {"keras": 1e-6, "savedmodel": 1e-5, "tflite": 1e-4, "onnx": 1e-4}


def sample_inputs(model: keras.Model, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Random inputs shaped (and typed) like each model input; free axes get length 8."""
    rng = np.random.default_rng(seed)
    out = []
    for tensor in model.inputs:
        shape = (batch, *[d or 8 for d in tensor.shape[1:]])
        dtype = str(tensor.dtype)
        if dtype.startswith(("int", "uint")):
            out.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            out.append(rng.random(shape, dtype=np.float32).astype(dtype))
    return out


def _augments_by_default(layer: keras.layers.Layer) -> bool:
    """True for layers whose `call` trains unless told otherwise (Keras' random augmentation layers)."""
    try:
        parameter = inspect.signature(layer.call).parameters.get("training")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is True


def inference_model(model: keras.Model) -> keras.Model:
    """`model` as the exporters should trace it: with augmentation switched off.

    SavedModel and ONNX (under TensorFlow) trace `model.__call__` without `training`, and Keras' random
    augmentation layers (RandomFlip, RandomRotation, ...) default to training=True, so the exported
    artifact would flip and rotate at serving time. Such models are wrapped in one that calls them with
    training=False; the outputs keep their names, so signatures and ONNX outputs read as before.
    """
    import keras

    if not any(_augments_by_default(layer) for layer in model._flatten_layers(include_self=False)):
        return model
    called = keras.tree.flatten(model(model.input, training=False))
    named = [keras.layers.Identity(name=name)(out) for out, name in zip(called, model.output_names, strict=True)]
    outputs = keras.tree.pack_sequence_as(model.output, named)
    return keras.Model(model.input, outputs, name=f"{model.name}_inference")


def _as_list(value: Any) -> list[np.ndarray]:
    if isinstance(value, dict):
        return [np.asarray(v) for v in value.values()]
    if isinstance(value, list | tuple):
        return [np.asarray(v) for v in value]
    return [np.asarray(value)]


def _keras(model: keras.Model, target: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import keras

    model.save(str(target))
    loaded = keras.saving.load_model(str(target), compile=False)
    return _as_list(loaded.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))


def _savedmodel(model: keras.Model, target: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    model.export(str(target), format="tf_saved_model", verbose=False)
    restored = tf.saved_model.load(str(target))
    result = restored.serve(inputs if len(inputs) > 1 else inputs[0])
    return _as_list(result)


def _tflite_bytes(model: keras.Model) -> bytes:
    """The converted flatbuffer; a recurrent loop TFLite cannot hold is refused with what to change."""
    import tensorflow as tf

    try:
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()
    except Exception as exc:
        if "tensor list ops" not in str(exc).lower():
            raise
    # A Keras 3 RNN layer loops over time with a TensorList whose elements have a free batch axis; TFLite's
    # builtin ops cannot hold it. Select TF ops could (the converter suggests them), but the result needs
    # the Flex delegate, which TensorFlow's own tf.lite.Interpreter lacks, so it could not be verified here.
    raise RecipeError(
        "tflite cannot hold a recurrent layer's loop over time: give the sequence inputs a fixed length and set "
        "unroll: true on the recurrent layers (e.g. --set model.inputs.NAME.shape=[40,128] --set "
        "model.layers[I].unroll=true, then retrain), or export savedmodel or onnx"
    )


def _tflite(model: keras.Model, target: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    target.write_bytes(_tflite_bytes(model))
    # The signature runner feeds inputs by name and resizes them; its outputs are named output_0, output_1, ...
    # in the model's output order (the interpreter's raw output list is ordered by tensor name instead).
    runner = tf.lite.Interpreter(model_path=str(target)).get_signature_runner()
    names = [t.name for t in model.inputs]
    result = runner(**{name: x for name, x in zip(names, inputs, strict=True)})
    if set(result) == set(model.output_names):
        outputs = [np.asarray(result[name]) for name in model.output_names]
    else:
        outputs = [np.asarray(result[f"output_{i}"]) for i in range(len(result))]
    return outputs


@contextlib.contextmanager
def _captured_tensors_as_variables(model: keras.Model) -> Iterator[None]:
    """Under TensorFlow, hold layer constants (an adapted Normalization's mean and variance) in variables
    while tf2onnx converts the model.

    tf2onnx lists every non-variable tensor a traced function captures as an input of the ONNX graph, so
    an exported model asked for its normalization statistics at run time. Variables are frozen into the
    graph instead. Attributes are set past the layers' tracking and restored afterwards.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    swapped = []
    for layer in model._flatten_layers(include_self=True):
        for name, value in list(vars(layer).items()):
            if isinstance(value, tf.Tensor) and not isinstance(value, tf.Variable) and hasattr(value, "numpy"):
                swapped.append((layer, name, value))
                object.__setattr__(layer, name, tf.Variable(value, trainable=False))
    try:
        yield
    finally:
        for layer, name, value in swapped:
            object.__setattr__(layer, name, value)


def _onnx(model: keras.Model, target: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    try:
        import onnxruntime
    except ImportError:
        raise RecipeError("ONNX export needs the `onnx` extra: pip install 'dlrun[onnx]'") from None
    with _captured_tensors_as_variables(model):
        model.export(str(target), format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    names = [t.name for t in model.inputs]
    graph_inputs = [spec.name for spec in session.get_inputs()]
    if sorted(graph_inputs) != sorted(names):  # the model's own names, unless a converter renamed them
        names = graph_inputs
    feeds = dict(zip(names, inputs, strict=True))
    return [np.asarray(v) for v in session.run(None, feeds)]


# An exporter writes the model to a path, loads it back with its own runtime and predicts the sample inputs.
Exporter = Callable[["keras.Model", Path, list[np.ndarray]], list[np.ndarray]]
_EXPORTERS: dict[str, tuple[Exporter, str]] = {"keras": (_keras, ".keras"), "savedmodel": (_savedmodel, ""),
              "tflite": (_tflite, ".tflite"), "onnx": (_onnx, ".onnx")}  # fmt: skip


def _refuse_unsupported_backend(fmt: str) -> None:
    """SavedModel and TFLite trace the model with TensorFlow (or jax2tf). A torch model cannot feed
    TFLiteConverter, and Keras' torch SavedModel path needs torch_xla (not a dependency); with Keras 3.15.1
    and torch 2.13 it already fails in torch.export on single- and multi-input functional models."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch" and fmt in ("savedmodel", "tflite"):
        raise RecipeError(
            f"{fmt} export needs the tensorflow or jax backend, not torch; model.keras loads on any backend: "
            f"run KERAS_BACKEND=tensorflow dlrun export RUN --format {fmt}"
        )
    if backend == "jax" and fmt == "onnx" and importlib.util.find_spec("jax2onnx") is None:
        # Keras converts JAX models with jax2onnx, which brings flax, orbax and more: not in dlrun's extras.
        raise RecipeError(
            "onnx export under jax needs jax2onnx (pip install jax2onnx); or export with TensorFlow, which "
            "loads the same model.keras: KERAS_BACKEND=tensorflow dlrun export RUN --format onnx"
        )


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


@contextlib.contextmanager
def _converter_output() -> Iterator[None]:
    """What converters print goes nowhere (to stderr with DLRUN_VERBOSE)."""
    from dlrun.quiet_tensorflow import silenced_fd2, verbose

    if verbose():
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    with contextlib.redirect_stdout(io.StringIO()), silenced_fd2():
        yield


def _export_and_compare(model: keras.Model, fmt: str, exporter: Exporter, target: Path) -> float:
    """Write `model` to `target` with `exporter`; the largest difference between its outputs and Keras'."""
    import keras

    inputs = sample_inputs(model)
    servable = inference_model(model) if fmt in ("savedmodel", "onnx") else model
    # Keras' exporters refuse a model that has never been called; predict under JAX does not count as a call.
    servable(inputs if len(inputs) > 1 else inputs[0], training=False)
    expected = _as_list(model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))
    try:
        # Converters print progress ("Saved artifact at ...": stdout is for results, stderr for dlrun's own
        # lines), TFLite's native side announces its XNNPACK delegate on fd 2, and they warn about NumPy 2
        # deprecations they patch and tf.lite.Interpreter's own deprecation. DLRUN_VERBOSE=1 shows it all.
        with _converter_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings(
                "ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated", category=UserWarning
            )
            actual = exporter(servable, target, inputs)
    except RecipeError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = ""
        if fmt != "keras" and keras.backend.backend() != "tensorflow":
            # jax2tf and torch.export fail on graphs TensorFlow traces directly (seed state, for one).
            hint = f"; TensorFlow may convert it: KERAS_BACKEND=tensorflow dlrun export RUN --format {fmt}"
        raise RecipeError(f"{fmt} export failed: {first}{hint}") from None
    worst = max(float(np.max(np.abs(a - e))) for a, e in zip(actual, expected, strict=True))
    if worst > TOLERANCE[fmt] * max(1.0, max(float(np.max(np.abs(e))) for e in expected)):
        raise RecipeError(f"{fmt} export does not reproduce the model: max difference {worst:.3g}")
    return worst


def export_model(model: keras.Model, fmt: str, target: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Export `model` to `target` in `fmt`, verify by loading it back; returns the comparison."""
    if fmt not in FORMATS:
        raise RecipeError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    _refuse_unsupported_backend(fmt)
    exporter, suffix = _EXPORTERS[fmt]
    if suffix and target.suffix != suffix:
        target = target.with_suffix(suffix)
    if target.exists() and not overwrite:
        raise RecipeError(f"{target} exists; pass --overwrite or choose another --output")
    target.parent.mkdir(parents=True, exist_ok=True)  # tf.io.gfile makes it under tensorflow; jax/torch do not
    # Written beside the target and moved into place once verified: a failed export leaves nothing behind
    # and does not cost the file it was to overwrite.
    partial = target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
    try:
        worst = _export_and_compare(model, fmt, exporter, partial)
    except BaseException:
        if partial.exists():
            _remove(partial)
        raise
    if target.exists():
        _remove(target)
    os.replace(partial, target)
    return {"format": fmt, "path": str(target), "max_abs_difference": worst, "verified": True}
