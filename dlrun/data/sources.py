"""Where rows come from: `keras.datasets` names, `.npz`/`.npy`, CSV, Parquet, JSON lines, folders of
images or text (one subfolder per class, or a `.tar.gz` of such a folder) and scikit-learn's bundled sets.

`load_tables` returns `{split: Table}` with splits `train` and, where the data has them, `test` and
`validation`. Small files are read into memory (NumPy); files larger than the memory budget, and image
folders, are streamed from disk through tf.data. For keras datasets the columns are `x` and `y`, as
`load_data()` returns them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.tables import (
    ArrayTable,
    CsvReader,
    FileListReader,
    JsonlReader,
    StreamTable,
    Table,
    TFRecordReader,
    read_csv,
    read_jsonl,
    read_parquet,
)
from dlrun.errors import RecipeError
from dlrun.files import check_extracted_size, relative_paths, require_regular
from dlrun.recipe.schema import KERAS_DATASETS, DataSpec

Splits = dict[str, dict[str, np.ndarray]]
Tables = dict[str, Table]  # by split

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
# Reading CSV/JSON text into Python objects costs several times the file's size.
TEXT_EXPANSION = 8
GZIP_RATIO = 4


def keras_cache_dir() -> Path:
    """Keras' own dataset cache (`~/.keras/datasets`, or under $KERAS_HOME)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def dlrun_cache_dir() -> Path:
    """Where extracted archives go: $DLRUN_CACHE_DIR, else $XDG_CACHE_HOME/dlrun, else ~/.cache/dlrun."""
    if os.environ.get("DLRUN_CACHE_DIR"):
        return Path(os.environ["DLRUN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlrun"


def _split_npz(file: Path) -> Splits:
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read {file}: {exc}", path=("data", "path")) from None
    return _by_suffix(arrays)


def _by_suffix(arrays: dict[str, np.ndarray]) -> Splits:
    """`x_train`, `y_test`, `x_val` ... -> `{train: {x: ...}, test: {y: ...}, validation: {x: ...}}`."""
    splits: Splits = {}
    for key, value in arrays.items():
        for split in ("train", "test", "val", "validation"):
            if key.endswith(f"_{split}"):
                name = "validation" if split == "val" else split
                splits.setdefault(name, {})[key[: -len(split) - 1]] = value
                break
        else:
            splits.setdefault("train", {})[key] = value
    return splits


def _read_npy(file: Path) -> dict[str, np.ndarray]:
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read {file}: {exc}", path=("data", "path")) from None
    if array.dtype.names:  # a structured array: one column per field
        return {name: np.asarray(array[name]) for name in array.dtype.names}
    return {file.stem: array}


def _download(name: str) -> Splits:
    import keras

    loader = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # network errors surface as many types; all mean the same to the user
        raise RecipeError(
            f"cannot load keras dataset {name!r}: download failed ({type(exc).__name__}); offline? Put "
            f"{name}.npz in {keras_cache_dir()} or set data.path (or $DLRUN_DATA_DIR) to a folder/file holding it",
            path=("data", "source"),
        ) from None
    return {"train": {"x": x_train, "y": y_train}, "test": {"x": x_test, "y": y_test}}


def find(raw: str, base_dir: Path, where: tuple[str | int, ...]) -> Path:
    """A path from the recipe: relative to the recipe's folder, else to $DLRUN_DATA_DIR; must exist."""
    path = Path(raw).expanduser()
    candidates = [path] if path.is_absolute() else [base_dir / path]
    if not path.is_absolute() and os.environ.get("DLRUN_DATA_DIR"):
        data_dir = Path(os.environ["DLRUN_DATA_DIR"])
        candidates += [data_dir / path, data_dir / path.name]
    for candidate in candidates:
        if candidate.exists():
            if not candidate.is_dir():
                require_regular(candidate, "data file", where)  # a FIFO or device would block or never end
            return candidate.resolve()
    raise RecipeError(f"data file not found: {candidates[0]}", path=where)


GLOB_CHARS = ("*", "?", "[")


def find_shards(raw: str, base_dir: Path, where: tuple[str | int, ...]) -> list[Path]:
    """The files of a sharded source: a glob (`data/train-*.tfrecord`, relative like `find`), a folder (its
    `*.tfrecord*` files) or one file; sorted, at least one."""
    if not any(c in raw for c in GLOB_CHARS):
        found = find(raw, base_dir, where)
        shards = sorted(p for p in found.glob("*.tfrecord*") if p.is_file()) if found.is_dir() else [found]
        if not shards:
            raise RecipeError(f"{found} holds no .tfrecord files", path=where)
        return shards
    path = Path(raw).expanduser()
    bases = [Path(path.anchor)] if path.is_absolute() else [base_dir]
    if not path.is_absolute() and os.environ.get("DLRUN_DATA_DIR"):
        bases.append(Path(os.environ["DLRUN_DATA_DIR"]))
    pattern = str(path.relative_to(path.anchor)) if path.is_absolute() else raw
    for base in bases:
        shards = sorted(p.resolve() for p in base.glob(pattern) if p.is_file())
        if shards:
            return shards
    raise RecipeError(f"no file matches {raw!r} (looked in {', '.join(map(str, bases))})", path=where)


def resolve_path(spec: DataSpec, base_dir: Path) -> Path | None:
    """The one file a data spec reads (for fingerprints), or None (a download, a folder, several files)."""
    if spec.source in ("sklearn", "tfrecord"):
        return None
    if spec.path is not None:
        file = find(spec.path, base_dir, ("data", "path"))
        if file.is_dir() and spec.source in KERAS_DATASETS:
            file = file / f"{spec.source}.npz"
            if not file.is_file():
                raise RecipeError(f"data file not found: {file}", path=("data", "path"))
        if spec.files is not None:
            if not file.is_dir():
                raise RecipeError("with `files`, `path` must be a folder", path=("data", "path"))
            return find(spec.files["train"], file, ("data", "files", "train"))
        return file if file.is_file() else None
    if spec.files is not None:
        return find(spec.files["train"], base_dir, ("data", "files", "train"))
    if spec.source not in KERAS_DATASETS:
        raise RecipeError(f"source `{spec.source}` needs `path:` (or `files:`)", path=("data", "path"))
    candidates = []
    if os.environ.get("DLRUN_DATA_DIR"):
        candidates.append(Path(os.environ["DLRUN_DATA_DIR"]) / f"{spec.source}.npz")
    candidates.append(keras_cache_dir() / f"{spec.source}.npz")
    return next((c for c in candidates if c.is_file()), None)


def source_files(spec: DataSpec, base_dir: Path) -> list[Path]:
    """The data files a spec reads (for fingerprints): one per split with `files`, else the one file;
    none for folders (their file lists are fingerprinted instead), downloads and scikit-learn sets."""
    if spec.source in ("images", "text", "sklearn"):
        return []
    if spec.source == "tfrecord":
        root = find(spec.path, base_dir, ("data", "path")) if spec.path and spec.files else base_dir
        if spec.files is not None:
            return [f for s, rel in spec.files.items() for f in find_shards(rel, root, ("data", "files", s))]
        assert spec.path is not None
        return find_shards(spec.path, base_dir, ("data", "path"))
    if spec.files is not None:
        root = find(spec.path, base_dir, ("data", "path")) if spec.path else base_dir
        found = [find(rel, root, ("data", "files", split)) for split, rel in spec.files.items()]
        return [f for f in found if f.is_file()]
    file = resolve_path(spec, base_dir)
    return [file] if file is not None else []


def absolute_data_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The data section with `path`/`files` made absolute (a run folder's recipe must find the data)."""
    out = dict(data)
    out = _matched_columns(out, base_dir)
    if out.get("source") in KERAS_DATASETS and out.get("path") is None:
        spec = DataSpec.model_validate(data)
        file = resolve_path(spec, base_dir)
        if file is not None:
            out["path"] = str(file.resolve())  # a relative $DLRUN_DATA_DIR is relative to today's folder only
        return out
    if out.get("source") == "tfrecord" and isinstance(out.get("path"), str) and not out.get("files"):
        raw = out["path"]
        if any(c in raw for c in GLOB_CHARS):  # the shards' folder made absolute, the pattern kept
            shards = find_shards(raw, base_dir, ("data", "path"))
            out["path"] = str(shards[0].parent / Path(raw).name)
        else:
            out["path"] = str(find(raw, base_dir, ("data", "path")))
    elif isinstance(out.get("path"), str):
        out["path"] = str(find(out["path"], base_dir, ("data", "path")))
    elif isinstance(out.get("files"), dict):
        out["files"] = {k: str(find(v, base_dir, ("data", "files", k))) for k, v in out["files"].items()}
    return out


def _matched_columns(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """`from` patterns replaced by the column lists they match in the data (a run folder's recipe names the
    columns the model was trained on, whatever order a later file has them in)."""
    sections = ("inputs", "targets")
    if not any(
        isinstance(f, dict) and isinstance(f.get("from"), dict) for s in sections for f in (data.get(s) or {}).values()
    ):
        return data
    spec = DataSpec.model_validate(data)
    load_tables(spec, base_dir)
    out = dict(data)
    for section, features in (("inputs", spec.inputs), ("targets", spec.targets)):
        out[section] = {
            name: {**data[section][name], "from": feature.columns}
            if feature.pattern is not None
            else data[section][name]
            for name, feature in features.items()
        }
    return out


# ----------------------------------------------------------------------------------------------------
# folders and archives


def extract(archive: Path) -> Path:
    """Unpack an archive once into the cache (keyed by path, size and mtime); returns the folder."""
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    name = archive.name
    for ext in ARCHIVES:
        name = name.removesuffix(ext)
    target = dlrun_cache_dir() / "extracted" / f"{name}-{key}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                check_extracted_size([i.file_size for i in zf.infolist()], archive, ("data", "path"))
                for member in zf.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise RecipeError(f"{archive.name} has an unsafe member {member!r}", path=("data", "path"))
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                check_extracted_size([m.size for m in tf.getmembers()], archive, ("data", "path"))
                tf.extractall(tmp, filter="data")
        try:
            tmp.rename(target)
        except OSError:  # another process extracted it first
            shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RecipeError(f"cannot extract {archive}: {exc}", path=("data", "path")) from None
    return target


def _folder_root(folder: Path) -> Path:
    """Descend through lone wrapper folders (archives often put their content in one)."""
    while True:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].name in SPLIT_FOLDERS:
            return folder
        inner = [e for e in entries[0].iterdir() if not e.name.startswith(".")]
        if not inner or not all(e.is_dir() for e in inner):
            return folder
        folder = entries[0]


def _list_class_folder(kind: str, folder: Path, spec: DataSpec, class_names: list[str] | None) -> FileListReader:
    """Files of a class-per-subfolder layout: listed by keras' dataset utilities, loaded lazily."""
    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[spec.color_mode]
    size = (spec.image_size[0], spec.image_size[1]) if spec.image_size else (256, 256)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if class_names is not None and classes != class_names:
        raise RecipeError(f"{folder} has classes {classes}, the train folder has {class_names}", path=("data", "path"))
    if not classes:
        raise RecipeError(f"{folder} has no class subfolders (expected <class>/<file>)", path=("data", "path"))
    if kind == "images":
        import keras

        ds = keras.utils.image_dataset_from_directory(
            str(folder),
            labels="inferred",
            batch_size=None,
            shuffle=False,
            image_size=size,
            verbose=False,
            color_mode=spec.color_mode,
        )
        paths = list(ds.file_paths)
        classes = list(ds.class_names)
    else:  # the layout keras.utils.text_dataset_from_directory reads: <class>/*.txt
        paths = [str(p) for c in classes for p in sorted((folder / c).rglob("*.txt"))]
    if not paths:
        raise RecipeError(f"{folder} has no {kind} files in its class folders", path=("data", "path"))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[name.split("/", 1)[0]] for name in relative_paths(folder, paths)], dtype="int64")
    path_array = np.empty(len(paths), dtype=object)
    path_array[:] = paths
    return FileListReader(kind, path_array, labels, classes, folder.name, size, channels, root=folder)


def _load_folder(spec: DataSpec, folder: Path) -> Tables:
    if folder.is_file():
        if not folder.name.endswith(ARCHIVES):
            raise RecipeError(
                f"source {spec.source} reads a folder or an archive, not {folder.name}", path=("data", "path")
            )
        folder = extract(folder)
    folder = _folder_root(folder)
    split_dirs = {SPLIT_FOLDERS[d.name]: d for d in folder.iterdir() if d.is_dir() and d.name in SPLIT_FOLDERS}
    if "train" not in split_dirs:
        split_dirs = {"train": folder}
    train = _list_class_folder(spec.source, split_dirs["train"], spec, None)
    readers = {"train": train}
    for split, d in split_dirs.items():
        if split != "train":
            readers[split] = _list_class_folder(spec.source, d, spec, train.class_names)
    tables: Tables = {}
    for split, reader in readers.items():
        table = StreamTable(reader)
        if spec.source == "text" and not _stream(spec, sum(os.path.getsize(p) for p in reader.paths)):
            data = {"text": reader.column("text", ("data",)), "label": reader.labels, "path": reader.paths}
            table = ArrayTable(data, reader.origin)
        tables[split] = table
    return tables


# ----------------------------------------------------------------------------------------------------
# files


def _stream(spec: DataSpec, nbytes: float) -> bool:
    if spec.stream != "auto":
        return bool(spec.stream)
    return nbytes * TEXT_EXPANSION > spec.memory_budget_mb * 2**20


def _file_bytes(file: Path) -> float:
    return file.stat().st_size * (GZIP_RATIO if file.suffix == ".gz" else 1)


def _dtypes(spec: DataSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    for feature in [*spec.inputs.values(), *spec.targets.values()]:
        if feature.dtype is not None and feature.pattern is None:  # a pattern's dtype is applied after reading
            out.update(dict.fromkeys(feature.columns, feature.dtype))
    return out


def _read_table(spec: DataSpec, file: Path) -> Table:
    if not file.is_file():
        raise RecipeError(f"source {spec.source} reads a file, but {file} is a folder", path=("data", "path"))
    if spec.source == "csv":
        if _stream(spec, _file_bytes(file)):
            return StreamTable(CsvReader(file, spec.delimiter, _dtypes(spec)))
        return read_csv(file, spec.delimiter, _dtypes(spec), spec.head)
    if spec.source == "jsonl":
        if _stream(spec, _file_bytes(file)):
            return StreamTable(JsonlReader(file))
        return read_jsonl(file, spec.head)
    if spec.source == "parquet":
        return read_parquet(file, spec.head)
    raise AssertionError(spec.source)


def _sklearn(name: str) -> Tables:
    try:
        import sklearn.datasets as skd
    except ImportError:
        raise RecipeError(
            "source sklearn needs scikit-learn: pip install scikit-learn", path=("data", "source")
        ) from None
    bunch = getattr(skd, f"load_{name}")()
    x = np.asarray(bunch.data, dtype="float32")
    y = np.asarray(bunch.target)
    y = y.astype("float32") if y.dtype.kind == "f" else y.astype("int64")
    data: dict[str, np.ndarray] = {"x": x, "y": y}
    for j, feature in enumerate(getattr(bunch, "feature_names", None) or []):
        data[str(feature)] = x[:, j]
    target_names = getattr(bunch, "target_names", None)
    if y.ndim == 2 and target_names is not None:
        for j, t in enumerate(target_names):
            data[str(t)] = y[:, j]
    return {"train": ArrayTable(data, f"sklearn {name}")}


def load_tables(spec: DataSpec, base_dir: Path) -> Tables:
    """The source's natural splits as tables; `from` patterns are matched against the train split's columns."""
    tables = _load_tables(spec, base_dir)
    match_columns(spec, tables["train"].names)
    return tables


def match_columns(spec: DataSpec, names: list[str]) -> None:
    """Resolve every `from: {glob|regex}` of `spec` against `names`; a pattern that matches nothing is an error."""
    for section, features in (("inputs", spec.inputs), ("targets", spec.targets)):
        for name, feature in features.items():
            if feature.pattern is not None and not feature.match_columns(names):
                shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
                raise RecipeError(
                    f"this pattern matches none of the columns: {shown}", path=("data", section, name, "from")
                )


def _load_tables(spec: DataSpec, base_dir: Path) -> Tables:
    if spec.source == "tfrecord":
        assert spec.features is not None
        features = {k: (f.dtype, tuple(f.shape)) for k, f in spec.features.items()}
        if spec.files is not None:
            root = find(spec.path, base_dir, ("data", "path")) if spec.path else base_dir
            return {
                s: StreamTable(TFRecordReader(find_shards(rel, root, ("data", "files", s)), features))
                for s, rel in spec.files.items()
            }
        if spec.path is None:
            raise RecipeError(
                "source tfrecord needs `path:` (a file, folder or glob) or `files:`", path=("data", "path")
            )
        return {"train": StreamTable(TFRecordReader(find_shards(spec.path, base_dir, ("data", "path")), features))}
    if spec.source == "sklearn":
        assert spec.name is not None
        return _sklearn(spec.name)
    if spec.source in ("images", "text"):
        if spec.files is not None:
            root = find(spec.path, base_dir, ("data", "path")) if spec.path else base_dir
            tables: Tables = {}
            for split, rel in spec.files.items():
                folder_tables = _load_folder(spec, find(rel, root, ("data", "files", split)))
                tables[split] = folder_tables["train"]
            return tables
        if spec.path is None:
            raise RecipeError(f"source {spec.source} needs `path:` (a folder or .tar.gz)", path=("data", "path"))
        return _load_folder(spec, find(spec.path, base_dir, ("data", "path")))
    if spec.files is not None:
        root = find(spec.path, base_dir, ("data", "path")) if spec.path else base_dir
        tables = {}
        for split, rel in spec.files.items():
            file = find(rel, root, ("data", "files", split))
            tables[split] = _one_file(spec, file, split)
        return tables
    if spec.source == "npy" and spec.path is not None:  # a .npy file or a folder of them
        target = find(spec.path, base_dir, ("data", "path"))
        return {k: ArrayTable(v, target.name) for k, v in _npy(target).items()}
    file = resolve_path(spec, base_dir)
    if file is None:
        if spec.source in KERAS_DATASETS:
            return {k: ArrayTable(v, spec.source) for k, v in _download(spec.source).items()}
        raise RecipeError(f"source {spec.source} needs a file", path=("data", "path"))
    if spec.source in KERAS_DATASETS or spec.source == "npz":
        splits = _split_npz(file)
        if spec.source in KERAS_DATASETS and not {"x", "y"} <= set(splits.get("train", {})):
            raise RecipeError(
                f"{file} is not in keras.datasets format (x_train, y_train, x_test, y_test)", path=("data", "path")
            )
        return {k: ArrayTable(v, file.name) for k, v in splits.items()}
    if spec.source == "npy":
        return {k: ArrayTable(v, file.name) for k, v in _npy(file).items()}
    return {"train": _read_table(spec, file)}


def _npy(path: Path) -> Splits:
    if path.is_dir():
        arrays: dict[str, np.ndarray] = {}
        for f in sorted(path.glob("*.npy")):
            arrays.update(_read_npy(f))
        if not arrays:
            raise RecipeError(f"{path} has no .npy files", path=("data", "path"))
        return _by_suffix(arrays)
    return {"train": _read_npy(path)}


def _one_file(spec: DataSpec, file: Path, split: str) -> Table:
    if spec.source in KERAS_DATASETS or spec.source == "npz":
        splits = _split_npz(file)
        return ArrayTable(splits.get(split) or splits["train"], file.name)
    if spec.source == "npy":
        splits = _npy(file)
        return ArrayTable(splits.get(split) or splits["train"], file.name)
    return _read_table(spec, file)
