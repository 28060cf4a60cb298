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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.engine.artifacts import CLASSES_FILE, STATS_FILE, class_names
from dlrun.errors import RecipeError
from dlrun.graph.catalog import did_you_mean

KeyPath = tuple[str | int, ...]

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet")
ARRAY_SUFFIXES = (".npz", ".npy")
OUTPUT_SUFFIXES = (".csv", ".json")


REGRESSION_LOSSES = ("mse", "mae", "meansquared", "meanabsolute", "huber", "logcosh", "mape", "msle", "cosine")
CHUNK_ROWS = 1024


# ----------------------------------------------------------------------------------------------------
# fitted state: saved at training time, re-derived for older runs


@dataclass
class Fitted:
    """Statistics by `inputs.<name>` -> `steps[i]` -> {mean, std}; class names by target."""

    stats: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    classes: dict[str, list[Any]] = field(default_factory=dict)


def _stats_needed(spec: Any) -> list[str]:
    return [
        f"inputs.{name}/steps[{i}]" for name, f in spec.inputs.items() for i, s in enumerate(f.steps) if s.standardize
    ]


def _read_saved(run_path: Path) -> Fitted | None:
    file = run_path / CLASSES_FILE
    if not file.is_file():
        return None
    fitted = Fitted(classes=json.loads(file.read_text(encoding="utf-8")))
    stats_file = run_path / STATS_FILE
    if stats_file.is_file():
        with np.load(stats_file, allow_pickle=False) as archive:
            for key in archive.files:
                feature, step, name = key.split("/")
                fitted.stats.setdefault(feature, {}).setdefault(step, {})[name] = archive[key]
    return fitted


def _has_all(fitted: Fitted, needed: list[str]) -> bool:
    for key in needed:
        feature, step = key.split("/")
        if not {"mean", "std"} <= set(fitted.stats.get(feature, {}).get(step, {})):
            return False
    return True


def _check_fingerprint(run_path: Path) -> None:
    from dlrun.engine.rundir import file_fingerprint

    file = run_path / "data.json"
    info = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    for entry in info.get("files", []):
        path = Path(entry["path"])
        if path.is_file() and file_fingerprint(path)["sha256"] != entry["sha256"]:
            raise RecipeError(
                f"the run's training data {path} changed since training (sha256 differs from data.json); the "
                "standardize statistics cannot be re-derived from it"
            )


def load_fitted(run_path: Path, loaded: Any) -> Fitted:
    """The run's saved fitted state, else re-derived by preparing the run's training split."""
    spec = loaded.recipe.data
    needed = _stats_needed(spec)
    saved = _read_saved(run_path)
    if saved is not None and _has_all(saved, needed):
        return saved
    from dlrun.data.prepare import load_splits, prepare_tables

    try:
        if needed:
            _check_fingerprint(run_path)
        tables = load_splits(spec, loaded.base_dir, loaded.recipe.seed)
        prepared = prepare_tables(spec, {"train": tables["train"]}, loaded.recipe.seed)
        classes = class_names(spec, loaded.base_dir, prepared)
    except RecipeError as exc:
        if needed:
            raise RecipeError(
                f"this run has no saved {STATS_FILE} and its training data cannot be read to re-derive the "
                f"standardize statistics: {exc}"
            ) from None
        return saved or Fitted(classes={n: list(f.classes) for n, f in spec.targets.items() if f.classes})
    return Fitted(stats=prepared.stats, classes=saved.classes if saved is not None else classes)


# ----------------------------------------------------------------------------------------------------
# reading the input file


def input_kind(path: Path) -> str:
    """npz, npy, table, image or folder; anything else is an error."""
    if path.is_dir():
        return "folder"
    name = path.name.lower()
    if name.endswith(ARRAY_SUFFIXES):
        return name.rsplit(".", 1)[1]
    if name.endswith(TABLE_SUFFIXES):
        return "table"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    known = ", ".join((*ARRAY_SUFFIXES, *TABLE_SUFFIXES, *IMAGE_SUFFIXES))
    raise RecipeError(f"--input {path.name}: unsupported file type; predict reads {known} or a folder of images")


def input_stem(path: Path) -> str:
    """`data.csv.gz` -> `data`; a folder -> its name."""
    name = path.name
    for suffix in sorted((*ARRAY_SUFFIXES, *TABLE_SUFFIXES, *IMAGE_SUFFIXES), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "predictions"
    return name or "predictions"


def _missing(what: str, name: str, known: list[str], origin: str) -> RecipeError:
    shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    return RecipeError(f"{origin} has no {what} {name!r}{did_you_mean(name, known)}; it has: {shown or 'nothing'}")


def _read_table(path: Path, spec: Any) -> Any:
    from dlrun.data.sources import _dtypes
    from dlrun.data.tables import read_csv, read_jsonl, read_parquet

    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".tsv")):
        delimiter = "\t" if name.endswith(".tsv") else spec.delimiter
        return read_csv(path, delimiter, _dtypes(spec))
    if name.endswith(".parquet"):
        return read_parquet(path)
    return read_jsonl(path)


def _read_arrays(path: Path, kind: str, spec: Any, names: list[str]) -> Any:
    from dlrun.data.tables import ArrayTable

    try:
        if kind == "npy":
            array = np.load(path, allow_pickle=False)
            if array.dtype.names:
                return ArrayTable({n: np.asarray(array[n]) for n in array.dtype.names}, path.name)
            if len(names) != 1:
                raise RecipeError(
                    f"a .npy file feeds a single-input model; this model has inputs {', '.join(names)}: use an .npz"
                )
            return {names[0]: array}
        with np.load(path, allow_pickle=False) as archive:
            return ArrayTable({k: archive[k] for k in archive.files}, path.name)
    except (OSError, ValueError) as exc:
        raise RecipeError(
            f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def _gather(table: Any, name: str, feature: Any) -> np.ndarray:
    """The raw value of one input: its `from` columns, or (arrays) a key named like the input."""
    from dlrun.data.prepare import gather_columns

    missing = [c for c in feature.columns if c not in table.names]
    if not missing:
        return gather_columns(table, feature, ("data", "inputs", name))
    if name in table.names and table.origin.lower().endswith(ARRAY_SUFFIXES):
        return table.column(name)
    what = "key" if table.origin.lower().endswith(ARRAY_SUFFIXES) else "column"
    raise _missing(what, missing[0], table.names, table.origin)


def _image_paths(path: Path) -> tuple[list[Path], list[str]]:
    if path.is_file():
        return [path], [path.name]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
        raise RecipeError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files, [p.relative_to(path).as_posix() for p in files]


@dataclass
class Batches:
    """The model-ready inputs: ids per row and a way to produce `{input: array}` chunks."""

    id_name: str
    ids: list[Any]
    chunks: Any  # callable () -> iterator of {input name: array}


def _numeric_steps(feature: Any, name: str, x: np.ndarray, fitted: Fitted) -> np.ndarray:
    from dlrun.data.prepare import _apply

    where: KeyPath = ("data", "inputs", name)
    for i, step in enumerate(feature.steps):
        stats = fitted.stats.get(f"inputs.{name}", {}).get(f"steps[{i}]") if step.standardize else None
        x = _apply(step, x, (*where, "steps", i), stats)
    return x


def _image_loader(spec: Any, feature: Any, name: str) -> Any:
    """Decode + resize exactly as the image-folder reader does, then the steps as the training stream does
    (image folders are always streamed, so their steps never include `standardize`)."""
    from dlrun.data.prepare import _tf_step
    from dlrun.data.tables import FileListReader

    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[spec.color_mode]
    reader = FileListReader(
        "images", np.empty(0, dtype=object), np.empty(0, dtype="int64"), [], "images",
        (spec.image_size[0], spec.image_size[1]), channels,
    )  # fmt: skip
    where: KeyPath = ("data", "inputs", name)

    def load(path: Path) -> np.ndarray:
        import tensorflow as tf

        try:
            x = reader.load(tf.constant(str(path)))
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RecipeError(f"cannot decode image {path}: {first[:200]}") from None
        for i, step in enumerate(feature.steps):
            x = _tf_step(step, x, (*where, "steps", i))
        return np.asarray(x)

    return load


def read_input(path: Path, loaded: Any, names: list[str], fitted: Fitted) -> Batches:
    """The input file as model-ready chunks (the recipe's steps applied), plus a row id per sample."""
    spec = loaded.recipe.data
    kind = input_kind(path)
    if kind in ("image", "folder"):
        image_inputs = [n for n in names if spec.inputs[n].columns == ["image"]]
        if spec.source != "images" or not image_inputs:
            raise RecipeError(
                f"--input {path.name} is {'an image' if kind == 'image' else 'a folder'}; images feed recipes whose "
                f"data reads an image folder (source: images), this run's data source is {spec.source!r}"
            )
        if len(names) > 1:
            raise RecipeError(f"this model has inputs {', '.join(names)}; images alone can feed only one: use an .npz")
        files, ids = _image_paths(path)
        load = _image_loader(spec, spec.inputs[names[0]], names[0])

        def image_chunks() -> Any:
            for start in range(0, len(files), CHUNK_ROWS):
                yield {names[0]: np.stack([load(f) for f in files[start : start + CHUNK_ROWS]])}

        return Batches("file", ids, image_chunks)
    table = _read_table(path, spec) if kind == "table" else _read_arrays(path, kind, spec, names)
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        feature = spec.inputs[name]
        # a plain .npy holds the (stacked) raw value of the single input
        raw = np.asarray(table[name]) if isinstance(table, dict) else _gather(table, name, feature)
        arrays[name] = _numeric_steps(feature, name, raw, fitted)
    counts = {n: len(a) for n, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise RecipeError(f"{path.name}: inputs have different numbers of samples ({counts})")
    count = next(iter(counts.values()))
    if count == 0:
        raise RecipeError(f"{path.name} holds no samples")
    return Batches("row", list(range(count)), lambda: iter([arrays]))


# ----------------------------------------------------------------------------------------------------
# the model


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

        x = tf.data.Dataset.from_tensor_slices(x).batch(batch)
        result = model.predict(x, verbose=0)
    else:
        result = model.predict(x, batch_size=batch, verbose=0)
    if isinstance(result, dict):
        return [np.asarray(v) for v in result.values()]
    if isinstance(result, list | tuple):
        return [np.asarray(v) for v in result]
    return [np.asarray(result)]


def _activation(tensor: Any) -> str | None:
    layer = tensor._keras_history[0]
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None) or (fn if isinstance(fn, str) else None)
    if name is None and type(layer).__name__ == "Softmax":
        name = "softmax"
    return name


def _loss(loaded: Any, output: str) -> tuple[str, bool]:
    loss = loaded.recipe.compile.loss
    comp = loss.get(output) if isinstance(loss, dict) else loss
    if comp is None:
        return "", False
    return comp.type.lower().replace("_", ""), bool(comp.kwargs.get("from_logits", False))


def output_kind(tensor: Any, loaded: Any, output: str) -> str:
    """softmax, binary (one sigmoid unit), multilabel (several sigmoid units) or regression."""
    shape = tuple(tensor.shape[1:])
    activation = _activation(tensor)
    loss, logits = _loss(loaded, output)
    if len(shape) != 1:
        return "regression"
    if logits and "crossentropy" in loss:
        activation = "sigmoid" if "binary" in loss else "softmax"
    if activation == "softmax" and shape[0] and shape[0] > 1:
        return "softmax"
    if activation == "sigmoid" and not any(r in loss for r in REGRESSION_LOSSES):
        return "binary" if shape[0] == 1 else "multilabel"
    return "regression"


def _as_probabilities(values: np.ndarray, tensor: Any, loaded: Any, output: str, kind: str) -> np.ndarray:
    loss, logits = _loss(loaded, output)
    if not logits or "crossentropy" not in loss or _activation(tensor) in ("softmax", "sigmoid"):
        return values
    v = values.astype("float64")
    if kind == "softmax":
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype("float32")
    return (1.0 / (1.0 + np.exp(-v))).astype("float32")


@dataclass
class Predictions:
    """Model outputs for every row, with how to read them."""

    id_name: str
    ids: list[Any]
    outputs: dict[str, np.ndarray]
    kinds: dict[str, str]
    classes: dict[str, list[str]]


def _names_for(kind: str, units: int, names: list[Any] | None) -> list[str]:
    count = 2 if kind == "binary" else units
    return [str(names[i]) if names and i < len(names) else str(i) for i in range(count)]


def predict_run(
    run_path: Path, input_path: Path, *, batch_size: int | None = None, trust: bool = False, unsafe: bool = False
) -> Predictions:
    """Load the run, read and prepare the input, run the model: per-output arrays (probabilities for classifiers)."""
    from dlrun.data.preprocess import input_names
    from dlrun.engine.artifacts import load_run
    from dlrun.engine.rundir import RunDir
    from dlrun.loading import load_recipe

    run = RunDir.open(run_path)
    if not input_path.exists():
        raise RecipeError(f"input file not found: {input_path}")
    kind = input_kind(input_path)
    loaded = load_recipe(run.recipe)
    spec = loaded.recipe.data
    if spec is None:
        raise RecipeError("the run's recipe has no data section: predict does not know how to read the input")
    if kind in ("image", "folder") and spec.source != "images":
        raise RecipeError(
            f"--input {input_path.name} is {'an image' if kind == 'image' else 'a folder'}; images feed recipes "
            f"whose data reads an image folder (source: images), this run's data source is {spec.source!r}"
        )
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
    kinds: dict[str, str] = {}
    classes: dict[str, list[str]] = {}
    for output, tensor in zip(outputs, model.outputs, strict=True):
        kind = output_kind(tensor, loaded, output)
        kinds[output] = kind
        if kind != "regression":
            values[output] = _as_probabilities(values[output], tensor, loaded, output, kind)
            classes[output] = _names_for(kind, int(tensor.shape[-1]), fitted.classes.get(output))
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
    """JSON rows: `{id: ..., <output>: {class, probability, probabilities} | {value}}`."""
    rows: list[dict[str, Any]] = []
    for r, ident in enumerate(pred.ids):
        row: dict[str, Any] = {pred.id_name: ident}
        for output, values in pred.outputs.items():
            v = values[r]
            kind = pred.kinds[output]
            names = pred.classes.get(output, [])
            if kind == "softmax":
                k = int(np.argmax(v))
                row[output] = {"class": names[k], "probability": _num(v[k]), "probabilities": [_num(p) for p in v]}
            elif kind == "binary":
                p = v[0]
                k = int(p >= 0.5)
                row[output] = {
                    "class": names[k],
                    "probability": _num(p if k else np.float32(1) - p),
                    "probabilities": [_num(np.float32(1) - p), _num(p)],
                }
            elif kind == "multilabel":
                row[output] = {
                    "classes": [names[i] for i, p in enumerate(v) if p >= 0.5],
                    "probabilities": [_num(p) for p in v],
                }
            else:
                arr = np.asarray(v)
                value = _num(arr.reshape(-1)[0]) if arr.size == 1 else np.vectorize(_num, otypes=[object])(arr).tolist()
                row[output] = {"value": value}
        rows.append(row)
    return rows


def to_table(pred: Predictions) -> tuple[list[str], list[list[str]]]:
    """CSV header and rows: per output its class and `<output>_probability`, then `<output>:<class>` columns;
    regression outputs as `<output>` (one value) or `<output>[i]` columns."""
    header = [pred.id_name]
    for output, values in pred.outputs.items():
        kind = pred.kinds[output]
        if kind in ("softmax", "binary"):
            header += [output, f"{output}_probability", *[f"{output}:{c}" for c in pred.classes[output]]]
        elif kind == "multilabel":
            header += [output, *[f"{output}:{c}" for c in pred.classes[output]]]
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
                k = int(np.argmax(v))
                row += [names[k], _cell(v[k]), *[_cell(p) for p in v]]
            elif kind == "binary":
                p = v[0]
                q = np.float32(1) - p if isinstance(p, np.float32) else 1 - p
                k = int(p >= 0.5)
                row += [names[k], _cell(p if k else q), _cell(q), _cell(p)]
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
    from dlrun.engine.rundir import RunDir, atomic_write_text

    RunDir.open(run_path)
    if not input_path.exists():
        raise RecipeError(f"input file not found: {input_path}")
    input_kind(input_path)
    target = output if output is not None else default_output(run_path, input_path)
    fmt = check_output(target, overwrite)
    if batch_size is not None and batch_size < 1:
        raise RecipeError(f"--batch-size must be at least 1, not {batch_size}")
    pred = predict_run(run_path, input_path, batch_size=batch_size, trust=trust, unsafe=unsafe)
    if fmt == "json":
        doc = {
            "run": str(run_path),
            "input": str(input_path),
            "outputs": {o: {"kind": k, "classes": pred.classes.get(o)} for o, k in pred.kinds.items()},
            "predictions": to_records(pred),
        }
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
        "outputs": {o: {"kind": k, "classes": pred.classes.get(o)} for o, k in pred.kinds.items()},
    }
