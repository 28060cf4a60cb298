"""`dlrun predict`'s input side: the run's fitted state (class names, step statistics) and raw input files
(npz, npy, CSV / JSON lines / Parquet, images) read and prepared as the run's data section reads them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.engine.artifacts import CLASSES_FILE, STATS_FILE, class_names
from dlrun.errors import RecipeError
from dlrun.util import did_you_mean

KeyPath = tuple[str | int, ...]

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet")
ARRAY_SUFFIXES = (".npz", ".npy")
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
    arrays = prepare_table(table, spec, names, fitted, path.name)
    count = len(next(iter(arrays.values())))
    return Batches("row", list(range(count)), lambda: iter([arrays]))


def prepare_table(table: Any, spec: Any, names: list[str], fitted: Fitted, origin: str) -> dict[str, np.ndarray]:
    """Raw columns (a table, or `{input: array}` from a plain .npy) -> `{input: array}` with the recipe's steps
    applied; `serve` passes a request's rows here as a table."""
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        feature = spec.inputs[name]
        # a plain .npy holds the (stacked) raw value of the single input
        raw = np.asarray(table[name]) if isinstance(table, dict) else _gather(table, name, feature)
        arrays[name] = _numeric_steps(feature, name, raw, fitted)
    counts = {n: len(a) for n, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise RecipeError(f"{origin}: inputs have different numbers of samples ({counts})")
    if next(iter(counts.values())) == 0:
        raise RecipeError(f"{origin} holds no samples")
    return arrays
