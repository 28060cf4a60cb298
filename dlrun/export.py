"""`dlrun export RUN --format keras|savedmodel|tflite|onnx`: write the model, load it back, compare outputs.

Every export is verified on a sample batch (random inputs shaped like the model's inputs): the
exported artifact, loaded by its own runtime, must reproduce the Keras model's outputs within tolerance.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import RecipeError

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
TOLERANCE = {"keras": 1e-6, "savedmodel": 1e-5, "tflite": 1e-4, "onnx": 1e-4}


def sample_inputs(model: Any, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
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


def _as_list(value: Any) -> list[np.ndarray]:
    if isinstance(value, dict):
        return [np.asarray(v) for v in value.values()]
    if isinstance(value, list | tuple):
        return [np.asarray(v) for v in value]
    return [np.asarray(value)]


def _keras(model: Any, target: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import keras

    model.save(str(target))
    loaded = keras.saving.load_model(str(target), compile=False)
    return _as_list(loaded.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))


def _savedmodel(model: Any, target: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    model.export(str(target), format="tf_saved_model", verbose=False)
    restored = tf.saved_model.load(str(target))
    result = restored.serve(inputs if len(inputs) > 1 else inputs[0])
    return _as_list(result)


def _tflite(model: Any, target: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    target.write_bytes(converter.convert())
    interpreter = tf.lite.Interpreter(model_path=str(target))
    details = interpreter.get_input_details()
    for spec in details:
        index = next(i for i, t in enumerate(model.inputs) if spec["name"].split(":")[0].endswith(t.name)) \
            if len(details) > 1 else 0  # fmt: skip
        interpreter.resize_tensor_input(spec["index"], inputs[index].shape)
    interpreter.allocate_tensors()
    for spec in interpreter.get_input_details():
        index = next(i for i, t in enumerate(model.inputs) if spec["name"].split(":")[0].endswith(t.name)) \
            if len(details) > 1 else 0  # fmt: skip
        interpreter.set_tensor(spec["index"], inputs[index])
    interpreter.invoke()
    outs = interpreter.get_output_details()
    # TFLite orders outputs by name; map back to the model's output order.
    by_name = {o["name"]: interpreter.get_tensor(o["index"]) for o in outs}
    if len(outs) == 1:
        return [next(iter(by_name.values()))]
    ordered = []
    for name in model.output_names:
        match = [v for k, v in by_name.items() if name in k]
        ordered.append(match[0] if match else None)
    if any(o is None for o in ordered):
        return list(by_name.values())
    return ordered


def _onnx(model: Any, target: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    try:
        import onnxruntime
    except ImportError:
        raise RecipeError("ONNX export needs the `onnx` extra: pip install 'dlrun[onnx]'") from None
    model.export(str(target), format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    feeds = {spec.name: x for spec, x in zip(session.get_inputs(), inputs, strict=True)}
    return [np.asarray(v) for v in session.run(None, feeds)]


_EXPORTERS = {"keras": (_keras, ".keras"), "savedmodel": (_savedmodel, ""), "tflite": (_tflite, ".tflite"),
              "onnx": (_onnx, ".onnx")}  # fmt: skip


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


def export_model(model: Any, fmt: str, target: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Export `model` to `target` in `fmt`, verify by loading it back; returns the comparison."""
    if fmt not in FORMATS:
        raise RecipeError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    _refuse_unsupported_backend(fmt)
    exporter, suffix = _EXPORTERS[fmt]
    if suffix and target.suffix != suffix:
        target = target.with_suffix(suffix)
    if target.exists():
        if not overwrite:
            raise RecipeError(f"{target} exists; pass --overwrite or choose another --output")
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)  # tf.io.gfile makes it under tensorflow; jax/torch do not
    inputs = sample_inputs(model)
    expected = _as_list(model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # converters print progress; stdout is for results
            actual = exporter(model, target, inputs)
    except RecipeError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecipeError(f"{fmt} export failed: {first}") from None
    worst = max(float(np.max(np.abs(a - e))) for a, e in zip(actual, expected, strict=True))
    if worst > TOLERANCE[fmt] * max(1.0, max(float(np.max(np.abs(e))) for e in expected)):
        raise RecipeError(f"{fmt} export does not reproduce the model: max difference {worst:.3g}")
    return {"format": fmt, "path": str(target), "max_abs_difference": worst, "verified": True}
