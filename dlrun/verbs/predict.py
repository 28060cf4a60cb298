"""`dlrun predict RUN --input FILE`: a finished run's model on new raw data -> CSV or JSON predictions.

The input holds raw data as the run's data section reads it: an `.npz` with the keys the inputs' `from`
name (or keyed by model input name), a `.npy` for a single-input model, a CSV / JSON-lines / Parquet file
with the input columns (targets absent), or an image file / a folder of images for image-folder recipes.
The recipe's input-side `steps` are applied exactly as in training, with `standardize` statistics fitted on
the training split (saved in the run as `preprocessing.npz` at training time; re-derived from the run's
training data for older runs). The `preprocess:` layers are part of `model.keras` and run inside the model.

Per output, one row per sample: the predicted class (by name where the data defined class names, else the
index) with its probability and every class's probability (softmax/sigmoid outputs), or the value(s).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.engine.rundir import RunDir
from dlrun.errors import RecipeError
from dlrun.files import require_regular
from dlrun.verbs.predict_input import check_images, input_kind, input_stem, load_fitted, read_input

OUTPUT_SUFFIXES = (".csv", ".json")


# ----------------------------------------------------------------------------------------------------
# the model


def _open(run_path: Path, input_path: Path) -> RunDir:
    """The run folder, checked together with the input (exists, a regular file or a folder, a known type)."""
    run = RunDir.open(run_path)
    if not input_path.exists():
        raise RecipeError(f"input file not found: {input_path}")
    if not input_path.is_dir():
        require_regular(input_path, "--input")  # a FIFO or device would block or never end
    input_kind(input_path)
    return run


def _fit_to_model(chunk: dict[str, np.ndarray], model: Any, names: list[str], origin: str) -> dict[str, Any]:
    """Per-sample shapes against the model's inputs (one error line), dtypes cast to the model's."""
    from dlrun.data.preprocess import _compatible

    out: dict[str, Any] = {}
    for name, tensor in zip(names, model.inputs, strict=True):
        x = chunk[name]
        want = tuple(tensor.shape[1:])
        got = tuple(x.shape[1:])
        if not _compatible(got, want):
            raise RecipeError(
                f"input {name!r}: {origin} gives samples of shape {got} after the recipe's steps, but the model "
                f"expects {want}"
            )
        if got == () and want == (1,):
            x = x.reshape(len(x), 1)
        dtype = str(tensor.dtype)
        if dtype == "string":
            x = x.astype(str)
        elif x.dtype.kind in "OUS":
            raise RecipeError(f"input {name!r}: {origin} gives text, but the model input takes {dtype} numbers")
        elif str(x.dtype) != dtype:
            x = x.astype(dtype)
        out[name] = x
    return out


def _run_model(model: Any, chunk: dict[str, np.ndarray], names: list[str], batch: int) -> list[np.ndarray]:
    text = any(a.dtype.kind in "US" for a in chunk.values())
    x: Any = chunk[names[0]] if len(names) == 1 else {n: chunk[n] for n in names}
    if text:
        import tensorflow as tf

        result = model.predict(tf.data.Dataset.from_tensor_slices(x).batch(batch), verbose=0)
    else:
        result = model.predict(x, batch_size=batch, verbose=0)
    if isinstance(result, dict):
        result = list(result.values())
    return [np.asarray(v) for v in (result if isinstance(result, list | tuple) else [result])]


@dataclass
class Predictions:
    """Model outputs for every row, with how to read them."""

    id_name: str
    ids: list[Any]
    outputs: dict[str, np.ndarray]
    kinds: dict[str, str]
    classes: dict[str, list[str]]


def predict_run(
    run_path: Path, input_path: Path, *, batch_size: int | None = None, trust: bool = False, unsafe: bool = False
) -> Predictions:
    """Load the run, read and prepare the input, run the model: per-output arrays (probabilities for classifiers)."""
    from dlrun.data.preprocess import input_names
    from dlrun.engine.artifacts import load_run
    from dlrun.engine.outputs import read_outputs
    from dlrun.loading import load_recipe

    run = _open(run_path, input_path)
    loaded = load_recipe(run.recipe)
    spec = loaded.recipe.data
    if spec is None:
        raise RecipeError("the run's recipe has no data section: predict does not know how to read the input")
    check_images(input_path, spec)  # before the model is loaded
    fitted = load_fitted(run.path, loaded)
    model = load_run(run.path, trust=trust, unsafe=unsafe).model
    names = input_names(model)
    unknown = [n for n in names if n not in spec.inputs]
    if unknown:
        raise RecipeError(f"model input {unknown[0]!r} has no entry in the recipe's data.inputs")
    batches = read_input(input_path, loaded, names, fitted)
    batch = batch_size or loaded.recipe.eval.batch_size or loaded.recipe.train.batch_size
    parts: list[list[np.ndarray]] = []
    for chunk in batches.chunks():
        parts.append(_run_model(model, _fit_to_model(chunk, model, names, input_path.name), names, batch))
    outputs = list(loaded.graph.outputs)
    if len(parts[0]) != len(outputs):
        outputs = [t._keras_history[0].name for t in model.outputs]
    values = {o: np.concatenate([p[i] for p in parts]) for i, o in enumerate(outputs)}
    infos = read_outputs(run.path, loaded, model, fitted.classes, fitted.stats)
    kinds: dict[str, str] = {o: info.kind for o, info in infos.items()}
    classes = {o: info.classes for o, info in infos.items() if info.classifier}
    for output, info in infos.items():
        values[output] = info.probabilities(values[output]) if info.classifier else info.original_units(values[output])
    return Predictions(batches.id_name, batches.ids, values, kinds, classes)


# ----------------------------------------------------------------------------------------------------
# rows and files


def _num(v: Any) -> float | int:
    """A JSON number: float32 values by their shortest repr (0.25, not 0.2500000037252903)."""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.float32) and math.isfinite(float(v)):
        return float(str(v))
    return float(v)


def _cell(v: Any) -> str:
    if isinstance(v, np.float32):
        return str(v)
    if isinstance(v, np.floating):
        return repr(float(v))
    return str(v)


def _flat_index(shape: tuple[int, ...]) -> list[str]:
    return ["[" + ",".join(map(str, ix)) + "]" for ix in np.ndindex(*shape)]


def to_records(pred: Predictions) -> list[dict[str, Any]]:
    """JSON rows: `{id: ..., <output>: {class, probabilities: {class: P(class)}} | {classes, probabilities} |
    {value}}`; a binary output's probabilities are `{positive class: P(positive)}`."""
    rows: list[dict[str, Any]] = []
    for r, ident in enumerate(pred.ids):
        row: dict[str, Any] = {pred.id_name: ident}
        for output, values in pred.outputs.items():
            v = values[r]
            kind = pred.kinds[output]
            names = pred.classes.get(output, [])
            if kind == "softmax":
                probabilities = {c: _num(p) for c, p in zip(names, v, strict=True)}
                row[output] = {"class": names[int(np.argmax(v))], "probabilities": probabilities}
            elif kind == "binary":
                row[output] = {"class": names[int(v[0] >= 0.5)], "probabilities": {names[1]: _num(v[0])}}
            elif kind == "multilabel":
                row[output] = {
                    "classes": [names[i] for i, p in enumerate(v) if p >= 0.5],
                    "probabilities": {c: _num(p) for c, p in zip(names, v, strict=True)},
                }
            else:
                arr = np.asarray(v)
                value = _num(arr.reshape(-1)[0]) if arr.size == 1 else np.vectorize(_num, otypes=[object])(arr).tolist()
                row[output] = {"value": value}
        rows.append(row)
    return rows


def to_table(pred: Predictions) -> tuple[list[str], list[list[str]]]:
    """CSV header and rows: per classifier output its predicted class(es), then `P(<output>=<class>)` per class
    (binary: only P(positive), the second class); regression outputs as `<output>` or `<output>[i]` columns."""
    header = [pred.id_name]
    for output, values in pred.outputs.items():
        kind = pred.kinds[output]
        if kind != "regression":
            names = pred.classes[output][1:] if kind == "binary" else pred.classes[output]
            header += [output, *(f"P({output}={c})" for c in names)]
        else:
            shape = values.shape[1:]
            header += [output] if int(np.prod(shape)) == 1 else [f"{output}{i}" for i in _flat_index(shape)]
    rows = []
    for r, ident in enumerate(pred.ids):
        row = [str(ident)]
        for output, values in pred.outputs.items():
            v = values[r]
            kind = pred.kinds[output]
            names = pred.classes.get(output, [])
            if kind == "softmax":
                row += [names[int(np.argmax(v))], *[_cell(p) for p in v]]
            elif kind == "binary":
                row += [names[int(v[0] >= 0.5)], _cell(v[0])]
            elif kind == "multilabel":
                row += ["|".join(names[i] for i, p in enumerate(v) if p >= 0.5), *[_cell(p) for p in v]]
            else:
                row += [_cell(x) for x in np.asarray(v).reshape(-1)]
        rows.append(row)
    return header, rows


def default_output(run_path: Path, input_path: Path) -> Path:
    """`RUN/predictions/<input stem>.csv`."""
    return run_path / "predictions" / f"{input_stem(input_path.resolve())}.csv"


def check_output(output: Path, overwrite: bool) -> str:
    """The output format by suffix; an existing file is refused unless `overwrite`."""
    fmt = output.suffix.lower().lstrip(".")
    if f".{fmt}" not in OUTPUT_SUFFIXES:
        raise RecipeError(f"--output {output.name}: predictions are written as .csv or .json, not {output.suffix!r}")
    if output.is_dir():
        raise RecipeError(f"--output {output} is a folder; give a .csv or .json file")
    if output.exists() and not overwrite:
        raise RecipeError(f"{output} exists; pass --overwrite to replace it")
    return fmt


def predict_file(
    run_path: Path,
    input_path: Path,
    *,
    output: Path | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    trust: bool = False,
    unsafe: bool = False,
) -> dict[str, Any]:
    """Predict on `input_path` and write the rows (CSV or JSON, atomically); returns a summary."""
    from dlrun.engine.rundir import atomic_write_text

    _open(run_path, input_path)
    target = output if output is not None else default_output(run_path, input_path)
    fmt = check_output(target, overwrite)
    if batch_size is not None and batch_size < 1:
        raise RecipeError(f"--batch-size must be at least 1, not {batch_size}")
    pred = predict_run(run_path, input_path, batch_size=batch_size, trust=trust, unsafe=unsafe)
    outputs = {o: {"kind": k, "classes": pred.classes.get(o)} for o, k in pred.kinds.items()}
    if fmt == "json":
        doc = {"run": str(run_path), "input": str(input_path), "outputs": outputs, "predictions": to_records(pred)}
        text = json.dumps(doc, indent=1, allow_nan=True) + "\n"
    else:
        header, rows = to_table(pred)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        text = buffer.getvalue()
    if target.exists() and not overwrite:  # appeared while predicting
        raise RecipeError(f"{target} exists; pass --overwrite to replace it")
    atomic_write_text(target, text)
    return {
        "run": str(run_path),
        "input": str(input_path),
        "output": str(target),
        "format": fmt,
        "count": len(pred.ids),
        "outputs": outputs,
    }
