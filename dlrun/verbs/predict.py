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
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.engine.rundir import RunDir
from dlrun.errors import RecipeError
from dlrun.files import require_regular
from dlrun.verbs.predict_input import Fitted, check_images, input_kind, input_stem, load_fitted, read_input

if TYPE_CHECKING:
    import keras

    from dlrun.engine.outputs import OutputInfo
    from dlrun.recipe.compose import LoadedRecipe
    from dlrun.recipe.schema import DataSpec

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


def _fit_to_model(
    chunk: dict[str, np.ndarray], model: keras.Model, names: list[str], origin: str
) -> dict[str, np.ndarray]:
    """Per-sample shapes against the model's inputs (one error line), dtypes cast to the model's."""
    from dlrun.data.preprocess import _compatible

    out: dict[str, np.ndarray] = {}
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


def _run_model(model: keras.Model, chunk: dict[str, np.ndarray], names: list[str], batch: int) -> list[np.ndarray]:
    text = any(a.dtype.kind in "US" for a in chunk.values())
    x: np.ndarray | dict[str, np.ndarray] = chunk[names[0]] if len(names) == 1 else {n: chunk[n] for n in names}
    if text:
        import tensorflow as tf

        result = model.predict(tf.data.Dataset.from_tensor_slices(x).batch(batch), verbose=0)
    else:
        result = model.predict(x, batch_size=batch, verbose=0)
    return _as_list(result)


def _as_list(result: Any) -> list[np.ndarray]:
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


@dataclass
class Predictor:
    """A run loaded for prediction, once: its recipe, fitted state, model, and what each output is. `predict`
    and `serve` both feed it model-ready chunks (the recipe's steps applied by `predict_input`)."""

    loaded: LoadedRecipe
    fitted: Fitted
    model: keras.Model
    names: list[str]
    outputs: list[str]
    infos: dict[str, OutputInfo]
    batch: int

    @property
    def data(self) -> DataSpec:
        """The recipe's data section (`load_predictor` refuses a run without one)."""
        assert self.loaded.recipe.data is not None
        return self.loaded.recipe.data

    @property
    def kinds(self) -> dict[str, str]:
        return {o: info.kind for o, info in self.infos.items()}

    @property
    def classes(self) -> dict[str, list[str]]:
        return {o: info.classes for o, info in self.infos.items() if info.classifier}

    def run(self, chunk: dict[str, np.ndarray], origin: str, *, one_call: bool = False) -> list[np.ndarray]:
        """The raw model outputs on one chunk of prepared inputs. `one_call` (serve's small batches): one
        `predict_on_batch` call, the same compiled predict step without `predict`'s per-call set-up (~60x
        less overhead for a few rows); text inputs always go through `predict`'s tf.data path."""
        fitted = _fit_to_model(chunk, self.model, self.names, origin)
        if one_call and not any(a.dtype.kind in "US" for a in fitted.values()):
            x: np.ndarray | dict[str, np.ndarray] = fitted[self.names[0]] if len(self.names) == 1 else fitted
            return _as_list(self.model.predict_on_batch(x))
        return _run_model(self.model, fitted, self.names, self.batch)

    def finish(self, parts: list[list[np.ndarray]], id_name: str, ids: list[Any]) -> Predictions:
        """Chunks' outputs joined per output: probabilities for classifiers, original units for regressions."""
        values = {o: np.concatenate([p[i] for p in parts]) for i, o in enumerate(self.outputs)}
        for output, info in self.infos.items():
            values[output] = (
                info.probabilities(values[output]) if info.classifier else info.original_units(values[output])
            )
        return Predictions(id_name, ids, values, self.kinds, self.classes)


def load_predictor(
    run_path: Path, *, batch_size: int | None = None, trust: bool = False, unsafe: bool = False
) -> Predictor:
    """The run's recipe, fitted state and model (integrity-checked; its custom code only with `trust`)."""
    from dlrun.data.preprocess import input_names
    from dlrun.engine.artifacts import load_run
    from dlrun.engine.outputs import read_outputs
    from dlrun.engine.rundir import RunDir
    from dlrun.loading import load_recipe

    run = RunDir.open(run_path)
    loaded = load_recipe(run.recipe)
    spec = loaded.recipe.data
    if spec is None:
        raise RecipeError("the run's recipe has no data section: predict does not know how to read the input")
    fitted = load_fitted(run.path, loaded)
    model = load_run(run.path, trust=trust, unsafe=unsafe).model
    names = input_names(model)
    unknown = [n for n in names if n not in spec.inputs]
    if unknown:
        raise RecipeError(f"model input {unknown[0]!r} has no entry in the recipe's data.inputs")
    outputs = list(loaded.graph.outputs)
    if len(model.outputs) != len(outputs):
        outputs = [t._keras_history[0].name for t in model.outputs]
    infos = read_outputs(run.path, loaded, model, fitted.classes, fitted.stats)
    batch = batch_size or loaded.recipe.eval.batch_size or loaded.recipe.train.batch_size
    return Predictor(loaded, fitted, model, names, outputs, infos, batch)


def predict_run(
    run_path: Path, input_path: Path, *, batch_size: int | None = None, trust: bool = False, unsafe: bool = False
) -> Predictions:
    """Load the run, read and prepare the input, run the model: per-output arrays (probabilities for classifiers)."""
    from dlrun.loading import load_recipe

    run = _open(run_path, input_path)
    spec = load_recipe(run.recipe).recipe.data
    if spec is not None:
        check_images(input_path, spec)  # before the model is loaded
    predictor = load_predictor(run.path, batch_size=batch_size, trust=trust, unsafe=unsafe)
    batches = read_input(input_path, predictor.loaded, predictor.names, predictor.fitted)
    parts = [predictor.run(chunk, input_path.name) for chunk in batches.chunks()]
    return predictor.finish(parts, batches.id_name, batches.ids)


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


def _probability_columns(output: str, kind: str, names: list[str]) -> list[str]:
    """`P(<output>=<class>)` per class; for a binary output only P(positive), the second class."""
    return [f"P({output}={c})" for c in (names[1:] if kind == "binary" else names)]


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


def _row_cells(pred: Predictions, r: int) -> list[tuple[str, Any]]:
    """One row as (column, value) pairs in the CSV's column order (values as NumPy scalars or strings)."""
    cells: list[tuple[str, Any]] = []
    for output, values in pred.outputs.items():
        v = values[r]
        kind = pred.kinds[output]
        names = pred.classes.get(output, [])
        if kind == "regression":
            flat = np.asarray(v).reshape(-1)
            shape = values.shape[1:]
            columns = [output] if int(np.prod(shape)) == 1 else [f"{output}{i}" for i in _flat_index(shape)]
            cells += list(zip(columns, flat, strict=True))
            continue
        if kind == "softmax":
            chosen = names[int(np.argmax(v))]
        elif kind == "binary":
            chosen = names[int(v[0] >= 0.5)]
        else:
            chosen = "|".join(names[i] for i, p in enumerate(v) if p >= 0.5)
        cells += [(output, chosen), *zip(_probability_columns(output, kind, names), v, strict=True)]
    return cells


def to_table(pred: Predictions) -> tuple[list[str], list[list[str]]]:
    """CSV header and rows: per classifier output its predicted class(es), then `P(<output>=<class>)` per class
    (binary: only P(positive), the second class); regression outputs as `<output>` or `<output>[i]` columns."""
    header = [pred.id_name, *(c for c, _ in _row_cells(pred, 0))] if pred.ids else [pred.id_name]
    rows = [[str(ident), *(_cell(v) for _, v in _row_cells(pred, r))] for r, ident in enumerate(pred.ids)]
    return header, rows


def to_flat_records(pred: Predictions) -> list[dict[str, Any]]:
    """The CSV's rows as JSON objects (`{<output>: class, "P(<output>=<class>)": p, ...}`), numbers as numbers."""
    return [{c: v if isinstance(v, str) else _num(v) for c, v in _row_cells(pred, r)} for r in range(len(pred.ids))]


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
