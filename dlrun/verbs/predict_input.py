"""`dlrun predict`'s input side: the run's fitted state (class names, step statistics) and raw input files
(npz, npy, CSV / JSON lines / Parquet, images) read and prepared as the run's data section reads them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.prepare import StepStats, StreamSplit, apply_steps, gather_columns, load_recorded_splits, prepare_tables
from dlrun.data.sources import _dtypes
from dlrun.data.tables import (
    ArrayTable,
    FileListReader,
    StreamTable,
    Table,
    missing_column,
    read_csv,
    read_jsonl,
    read_parquet,
)
from dlrun.engine.artifacts import CLASSES_FILE, STATS_FILE, class_names
from dlrun.errors import RecipeError
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import DataSpec, FeatureSpec

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet")
ARRAY_SUFFIXES = (".npz", ".npy")
CHUNK_ROWS = 1024


# ----------------------------------------------------------------------------------------------------
# fitted state: saved at training time, re-derived for older runs


@dataclass
class Fitted:
    """Statistics by `inputs.<name>` -> `steps[i]` -> {mean, std}; class names by target."""

    stats: dict[str, StepStats] = field(default_factory=dict)
    classes: dict[str, list[Any]] = field(default_factory=dict)


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


def _check_fingerprint(run_path: Path) -> None:
    from dlrun.data.record import file_fingerprint

    file = run_path / "data.json"
    info = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    for entry in info.get("files", []):
        path = Path(entry["path"])
        if path.is_file() and file_fingerprint(path)["sha256"] != entry["sha256"]:
            raise RecipeError(
                f"the run's training data {path} changed since training (sha256 differs from data.json); the "
                "standardize statistics cannot be re-derived from it"
            )


def load_fitted(run_path: Path, loaded: LoadedRecipe) -> Fitted:
    """The run's saved fitted state, else re-derived by preparing the run's training split."""
    spec = loaded.recipe.data
    assert spec is not None  # predict_run refuses a recipe without data first
    needed = [
        (f"inputs.{n}", f"steps[{i}]") for n, f in spec.inputs.items() for i, s in enumerate(f.steps) if s.standardize
    ]
    saved = _read_saved(run_path)
    if saved is not None and all({"mean", "std"} <= set(saved.stats.get(f, {}).get(s, {})) for f, s in needed):
        return saved
    try:
        if needed:
            _check_fingerprint(run_path)
        tables = load_recorded_splits(spec, loaded.base_dir, loaded.recipe.seed)[0]
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


def _read_table(path: Path, spec: DataSpec) -> ArrayTable:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".tsv")):
        delimiter = "\t" if name.endswith(".tsv") else spec.delimiter
        return read_csv(path, delimiter, _dtypes(spec))
    if name.endswith(".parquet"):
        return read_parquet(path)
    return read_jsonl(path)


def _read_arrays(path: Path, kind: str, names: list[str]) -> ArrayTable:
    try:
        if kind == "npy":
            array = np.load(path, allow_pickle=False)
            if array.dtype.names:
                return ArrayTable({n: np.asarray(array[n]) for n in array.dtype.names}, path.name)
            if len(names) != 1:
                raise RecipeError(
                    f"a .npy file feeds a single-input model; this model has inputs {', '.join(names)}: use an .npz"
                )
            return ArrayTable({names[0]: array}, path.name)  # the (stacked) raw value of the single input
        with np.load(path, allow_pickle=False) as archive:
            return ArrayTable({k: archive[k] for k in archive.files}, path.name)
    except (OSError, ValueError) as exc:
        raise RecipeError(
            f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def _gather(table: ArrayTable, name: str, feature: FeatureSpec) -> np.ndarray:
    """The raw value of one input: its `from` columns, or (arrays) a key named like the input."""
    missing = [c for c in feature.columns if c not in table.names]
    if not missing:
        return gather_columns(table, feature, ("data", "inputs", name))
    if name in table.names and table.origin.lower().endswith(ARRAY_SUFFIXES):
        return table.column(name)
    what = "key" if table.origin.lower().endswith(ARRAY_SUFFIXES) else "column"
    raise missing_column(missing[0], table.names, (), table.origin, what)


def check_images(path: Path, spec: DataSpec) -> None:
    """Images (a file or a folder) feed only a recipe reading an image folder, through its `image` input."""
    kind = input_kind(path)
    images = [n for n in spec.inputs if spec.inputs[n].columns == ["image"]]
    if kind in ("image", "folder") and (spec.source != "images" or not images):
        raise RecipeError(
            f"--input {path.name} is {'an image' if kind == 'image' else 'a folder'}; images feed recipes whose "
            f"data reads an image folder (source: images), this run's data source is {spec.source!r}"
        )


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
    chunks: Callable[[], Iterator[dict[str, np.ndarray]]]


def _image_chunks(path: Path, files: list[Path], spec: DataSpec, names: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """The images read, decoded, resized and stepped by the training stream's own code (`StreamSplit`)."""
    import tensorflow as tf

    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[spec.color_mode]
    size = (spec.image_size[0], spec.image_size[1]) if spec.image_size else (256, 256)
    paths = np.array([str(f) for f in files], dtype=object)
    reader = FileListReader("images", paths, np.zeros(len(files), "int64"), [], path.name, size, channels)
    split = StreamSplit(StreamTable(reader), spec, {}, None, 0, "predict")
    try:
        yield from split.input_batches(names, CHUNK_ROWS).as_numpy_iterator()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecipeError(f"cannot decode an image of {path}: {first[:200]}") from None


def read_input(path: Path, loaded: LoadedRecipe, names: list[str], fitted: Fitted) -> Batches:
    """The input file as model-ready chunks (the recipe's steps applied), plus a row id per sample."""
    spec = loaded.recipe.data
    assert spec is not None
    kind = input_kind(path)
    if kind in ("image", "folder"):
        if len(names) > 1:
            raise RecipeError(f"this model has inputs {', '.join(names)}; images alone can feed only one: use an .npz")
        files, ids = _image_paths(path)
        return Batches("file", ids, lambda: _image_chunks(path, files, spec, names))
    table = _read_table(path, spec) if kind == "table" else _read_arrays(path, kind, names)
    arrays = prepare_table(table, spec, names, fitted, path.name)
    count = len(next(iter(arrays.values())))
    return Batches("row", list(range(count)), lambda: iter([arrays]))


def prepare_table(table: Table, spec: DataSpec, names: list[str], fitted: Fitted, origin: str) -> dict[str, np.ndarray]:
    """Raw columns (a table; a plain .npy is an ArrayTable) -> `{input: array}` with the recipe's steps applied, as
    training applies them; `serve` passes a request's rows here as a table."""
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        feature = spec.inputs[name]
        raw = _gather(table, name, feature)
        arrays[name] = apply_steps(feature, raw, ("data", "inputs", name), fitted.stats.get(f"inputs.{name}", {}))
    counts = {n: len(a) for n, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise RecipeError(f"{origin}: inputs have different numbers of samples ({counts})")
    if next(iter(counts.values())) == 0:
        raise RecipeError(f"{origin} holds no samples")
    return arrays
