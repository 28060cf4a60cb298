"""Tables: the rows of one split, either in memory (NumPy columns) or streamed from files (tf.data).

Every source yields `{split: Table}`. A table has named columns and a row count, and can be subset by
row indices (`take`), which is how splits, slices and folds are made without copying files. In-memory
tables hold NumPy arrays (strings as `object` arrays); streamed tables hold a reader (CSV, a list of
image/text files, JSON lines) plus the row indices they cover, and produce an unbatched `tf.data`
dataset of `{column: tensor}` records on demand.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dlrun.errors import RecipeError
from dlrun.util import did_you_mean

if TYPE_CHECKING:
    import tensorflow as tf

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Column:
    """Per-sample dtype and shape of a column (`string` for text)."""

    dtype: str
    shape: tuple[int | None, ...]


def first_non_finite(values: np.ndarray) -> int | None:
    """The first row holding a NaN or an infinity, or None."""
    bad = ~np.isfinite(values.astype("float64").reshape(len(values), -1)).all(axis=1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def is_string(array: np.ndarray) -> bool:
    """Whether a NumPy array holds text."""
    return array.dtype.kind in ("U", "S", "O")


def missing_column(name: str, known: list[str], where: KeyPath, origin: str, what: str = "column") -> RecipeError:
    """The did-you-mean error for a column (or an array file's key) that the data does not have."""
    shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    return RecipeError(
        f"{origin} has no {what} {name!r}{did_you_mean(name, known)}; it has: {shown or 'nothing'}", path=where
    )


class ArrayTable:
    """Rows held in memory as NumPy columns."""

    streamed = False

    def __init__(
        self, data: dict[str, np.ndarray], origin: str, rows: np.ndarray | None = None, source_split: str = "train"
    ) -> None:
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in data.items())
            raise RecipeError(f"{origin}: columns have different lengths ({sizes})", path=("data", "path"))
        self.data = data
        self.origin = origin
        self.count = lengths.pop() if lengths else 0
        self.rows = rows
        self.source_split = source_split

    def row_numbers(self) -> np.ndarray:
        """The rows of the source split (0-based, in file order) this table holds."""
        return np.arange(self.count) if self.rows is None else self.rows

    @property
    def names(self) -> list[str]:
        return list(self.data)

    def column(self, name: str, where: KeyPath = ("data",)) -> np.ndarray:
        if name not in self.data:
            raise missing_column(name, self.names, where, self.origin)
        return self.data[name]

    def spec(self, name: str) -> Column:
        x = self.data[name]
        return Column("string" if is_string(x) else str(x.dtype), tuple(x.shape[1:]))

    def take(self, indices: np.ndarray) -> ArrayTable:
        rows = self.row_numbers()[indices]
        return ArrayTable({k: v[indices] for k, v in self.data.items()}, self.origin, rows, self.source_split)


class Reader(Protocol):
    """What a streamed table reads its rows through: CSV, JSON lines, TFRecord, a file list, in-memory arrays."""

    origin: str
    columns: dict[str, Column]

    @property
    def count(self) -> int: ...
    def column(self, name: str, where: KeyPath) -> np.ndarray: ...
    def check_finite(self, wheres: dict[str, KeyPath]) -> None: ...
    def dataset(
        self, columns: list[str], indices: np.ndarray | None, shuffle_seed: int | None, buffer: int
    ) -> tf.data.Dataset: ...


class StreamTable:
    """Rows read from disk on demand: a reader plus the (sorted) row indices this table covers."""

    streamed = True

    def __init__(self, reader: Reader, indices: np.ndarray | None = None, source_split: str = "train") -> None:
        self.reader = reader
        self.indices = indices
        self.origin = reader.origin
        self.count = reader.count if indices is None else len(indices)
        self.source_split = source_split

    def row_numbers(self) -> np.ndarray:
        """The rows of the source split (0-based, in file order) this table holds."""
        return np.arange(self.reader.count) if self.indices is None else self.indices

    @property
    def names(self) -> list[str]:
        return list(self.reader.columns)

    def column(self, name: str, where: KeyPath = ("data",)) -> np.ndarray:
        """All values of one column (a light pass over the file, or free for folder labels)."""
        if name not in self.reader.columns:
            raise missing_column(name, self.names, where, self.origin)
        values = self.reader.column(name, where)
        return values if self.indices is None else values[self.indices]

    def spec(self, name: str) -> Column:
        return self.reader.columns[name]

    def take(self, indices: np.ndarray) -> StreamTable:
        return StreamTable(self.reader, np.sort(self.row_numbers()[indices]), self.source_split)

    def row_bytes(self) -> float:
        """Decoded bytes per row (for cache and shuffle-buffer sizing)."""
        total = 0.0
        for col in self.reader.columns.values():
            n = math.prod(d or 1 for d in col.shape)
            total += n * (64 if col.dtype == "string" else 4)
        return max(total, 1.0)

    def dataset(
        self, columns: list[str], *, shuffle_seed: int | None = None, buffer_rows: int = 10000
    ) -> tf.data.Dataset:
        """Unbatched tf.data records `{column: tensor}` of this table's rows (shuffled when a seed is given)."""
        return self.reader.dataset(columns, self.indices, shuffle_seed, buffer_rows)


Table = ArrayTable | StreamTable


# ----------------------------------------------------------------------------------------------------
# CSV


def open_text(file: Path) -> io.TextIOBase:
    """A text handle on a plain or gzip-compressed file."""
    if file.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(file, "rb"), encoding="utf-8-sig", newline="")
    return file.open("r", encoding="utf-8-sig", newline="")  # a byte-order mark is not part of the first name


MISSING = ("", "nan", "inf", "-inf", "+inf")


def _to_float(value: str) -> float:
    return float(value) if value.strip() else math.nan


class ColumnKind:
    """What the text values of one column look like, seen one at a time: the one type inference of both
    the in-memory and the streaming CSV reader (so the same file gives the same arrays either way).

    Numeric when every non-missing value parses as a number; int64 when, besides, none is missing and none
    is written with a decimal point or an exponent; else float32 (missing cells are NaN). Anything else is
    text (`string`). A missing value is an empty cell, `nan` or an infinity.
    """

    __slots__ = ("first_missing", "first_text", "integer", "numeric")

    def __init__(self) -> None:
        self.numeric = True
        self.integer = True
        self.first_missing: int | None = None  # line of the first missing value
        self.first_text: str | None = None  # the first value that is not a number

    def add(self, value: str, line: int) -> None:
        """Account for one cell (at `line` of the file)."""
        v = value.strip()
        if v.lower() in MISSING:
            if self.first_missing is None:
                self.first_missing = line
            self.integer = False
            return
        if not self.numeric:
            return
        try:
            float(v)
        except ValueError:
            self.numeric = self.integer = False
            self.first_text = value
            return
        if self.integer and ("." in v or "e" in v.lower() or "n" in v.lower()):
            self.integer = False

    def dtype(self, given: str | None = None) -> str:
        """The column's dtype: `given` (the recipe's `dtype`), else the inferred one."""
        if given is not None:
            return given
        if not self.numeric:
            return "string"
        return "int64" if self.integer else "float32"


def _column_array(name: str, values: list[str], dtype: str, origin: str) -> np.ndarray:
    if dtype == "string":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    try:
        array = np.array([_to_float(v) for v in values], dtype="float64")
    except ValueError:
        bad = next(v for v in values if v.strip() and not _is_number(v))
        raise RecipeError(f"{origin}: column {name!r} has non-numeric value {bad!r}", path=("data",)) from None
    if dtype.startswith(("int", "uint")):
        if not np.isfinite(array).all():
            raise RecipeError(f"{origin}: column {name!r} is read as {dtype} but has missing values", path=("data",))
        return np.array([_to_int(v) for v in values], dtype=dtype)
    return array.astype(dtype)


def _to_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:  # 1e3, 2.0: exact while they fit a float
        return int(float(value))


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_csv(file: Path, delimiter: str, dtypes: dict[str, str], limit: int | None = None) -> ArrayTable:
    """A whole CSV file in memory: numeric columns as int64/float32 (`ColumnKind`), others as strings."""
    with open_text(file) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise RecipeError(f"{file} is empty", path=("data", "path")) from None
        columns: list[list[str]] = [[] for _ in header]
        kinds = [ColumnKind() for _ in header]
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                break
            if len(row) != len(header):
                if not row:
                    continue
                raise RecipeError(
                    f"{file.name} line {reader.line_num} has {len(row)} fields, the header has {len(header)}",
                    path=("data", "path"),
                )
            for col, kind, value in zip(columns, kinds, row, strict=True):
                col.append(value)
                kind.add(value, reader.line_num)
    data = {
        name: _column_array(name, values, kind.dtype(dtypes.get(name)), file.name)
        for name, values, kind in zip(header, columns, kinds, strict=True)
    }
    table = ArrayTable(data, file.name)
    table.missing_lines = {n: k.first_missing for n, k in zip(header, kinds, strict=True) if k.first_missing}
    return table


def _parsed_as(dtype: str) -> str:
    """The dtype tf.data parses a CSV column as before casting to `dtype`: text, 64-bit integers or floats."""
    if dtype == "string":
        return "string"
    return "int64" if dtype.startswith(("int", "uint")) else "float32"


class CsvReader:
    """A CSV file streamed with tf.data (parsed in C++, bounded memory).

    One pass over the file at construction (memory: one row at a time) counts the records, checks their
    widths and infers every column's type exactly as `read_csv` does (`ColumnKind`); a single column
    (labels, weights) can be read whole.
    """

    def __init__(self, file: Path, delimiter: str, dtypes: dict[str, str]) -> None:
        self.file = file
        self.delimiter = delimiter
        self.origin = file.name
        with open_text(file) as fh:
            try:
                self.header = next(csv.reader(fh, delimiter=delimiter))
            except StopIteration:
                raise RecipeError(f"{file} is empty", path=("data", "path")) from None
        with gzip.open(file, "rb") if file.suffix == ".gz" else file.open("rb") as raw:
            self.crlf = raw.readline().endswith(b"\r\n")
        kinds = [ColumnKind() for _ in self.header]
        width = len(self.header)
        count = 0
        previous = 1
        regular = True  # one record per line, no blank lines: lines can be parsed in parallel batches
        for line, row in self._rows():
            count += 1
            regular = regular and line == previous + 1
            previous = line
            if len(row) != width:
                raise RecipeError(
                    f"{self.origin} line {line} has {len(row)} fields, the header has {width}", path=("data", "path")
                )
            for kind, value in zip(kinds, row, strict=True):
                kind.add(value, line)
        self.count = count
        self.one_record_per_line = regular and not self.crlf
        self.columns: dict[str, Column] = {
            name: Column(kind.dtype(dtypes.get(name)), ()) for name, kind in zip(self.header, kinds, strict=True)
        }
        self.missing_lines = {n: k.first_missing for n, k in zip(self.header, kinds, strict=True) if k.first_missing}
        self._cache: dict[str, np.ndarray] = {}

    def _rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line number where the record ends, fields) of every non-empty record."""
        with open_text(self.file) as fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            next(reader)
            for row in reader:
                if row:
                    yield reader.line_num, row

    def check_finite(self, wheres: dict[str, KeyPath]) -> None:
        """Missing or NaN values in the numeric columns of `wheres` are errors (named by column and line)."""
        for name, where in wheres.items():
            line = self.missing_lines.get(name)
            if line is not None and self.columns[name].dtype != "string":
                raise RecipeError(
                    f"column {name!r} has a missing or NaN value at line {line} of {self.origin}", path=where
                )

    def column(self, name: str, where: KeyPath) -> np.ndarray:
        """One column's values for the whole file (one pass; memory: that column only)."""
        if name not in self._cache:
            j = self.header.index(name)
            self._cache[name] = _column_array(
                name, [row[j] for _, row in self._rows()], self.columns[name].dtype, self.origin
            )
        return self._cache[name]

    def dataset(
        self, columns: list[str], indices: np.ndarray | None, shuffle_seed: int | None, buffer: int
    ) -> tf.data.Dataset:
        import tensorflow as tf

        cols = sorted({self.header.index(c) for c in columns})
        names = [self.header[j] for j in cols]
        parsed = {n: _parsed_as(self.columns[n].dtype) for n in names}  # string, int64 or float32
        # an empty numeric cell reads as NaN: a declared `fill` replaces it, else the scan has refused it
        defaults = [tf.constant([math.nan] if parsed[n] == "float32" else [], dtype=parsed[n]) for n in names]
        chunk = 4096  # rows are parsed in C++; the Python-defined mapping runs once per chunk
        compression = "GZIP" if self.file.suffix == ".gz" else None
        if self.one_record_per_line:  # batches of lines parsed in parallel by decode_csv
            lines = tf.data.TextLineDataset(str(self.file), compression_type=compression).skip(1).batch(chunk)
            ds = lines.map(
                lambda batch: dict(
                    zip(
                        names,
                        tf.io.decode_csv(batch, defaults, field_delim=self.delimiter, select_cols=cols),
                        strict=True,
                    )
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        else:  # quoted newlines, blank lines or CRLF: Python's csv module, one record at a time (slower)
            convert = [{"string": str, "int64": int, "float32": _to_float}[parsed[n]] for n in names]

            def records() -> Iterator[tuple[Any, ...]]:
                for _, row in self._rows():
                    yield tuple(f(row[j]) for j, f in zip(cols, convert, strict=True))

            signature = tuple(tf.TensorSpec((), parsed[n]) for n in names)
            ds = tf.data.Dataset.from_generator(records, output_signature=signature)
            ds = ds.batch(chunk).map(lambda *fields: dict(zip(names, fields, strict=True)))
        casts = {n: self.columns[n].dtype for n in names if self.columns[n].dtype != parsed[n]}
        if casts:
            ds = ds.map(lambda r: {k: tf.cast(v, casts[k]) if k in casts else v for k, v in r.items()})
        return rows_of_chunks(ds, chunk, self.count, indices, shuffle_seed, buffer)


# ----------------------------------------------------------------------------------------------------
# JSON lines


def _json_rows(file: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    with open_text(file) as fh:
        for i, line in enumerate(fh):
            if limit is not None and i >= limit:
                return
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecipeError(f"{file.name} line {i + 1} is not JSON: {exc.msg}", path=("data", "path")) from None
            if not isinstance(row, dict):
                raise RecipeError(f"{file.name} line {i + 1} is not a JSON object", path=("data", "path"))
            yield row


def _json_array(name: str, values: list[Any], origin: str) -> np.ndarray:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, str) for v in present):  # a missing (null) text value is the empty string
        out = np.empty(len(values), dtype=object)
        out[:] = ["" if v is None else v for v in values]
        return out
    if any(v is None for v in values):
        return np.array([math.nan if v is None else v for v in values], dtype="float32")
    try:
        array = np.asarray(values)
    except ValueError:
        raise RecipeError(f"{origin}: field {name!r} has values of different shapes", path=("data",)) from None
    if array.dtype.kind == "f":
        return array.astype("float32")
    if array.dtype.kind in "iub":
        return array.astype("int64")
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v) for v in values]
    return out


def read_jsonl(file: Path, limit: int | None = None) -> ArrayTable:
    """A JSON-lines file (optionally .gz) in memory, one column per field."""
    columns: dict[str, list[Any]] = {}
    for n, row in enumerate(_json_rows(file, limit)):
        for key in row:
            if key not in columns:
                columns[key] = [None] * n
        for key, values in columns.items():
            values.append(row.get(key))
    return ArrayTable({k: _json_array(k, v, file.name) for k, v in columns.items()}, file.name)


class JsonlReader:
    """JSON lines streamed through a Python generator (bounded memory; slower than CSV)."""

    def __init__(self, file: Path, sample_rows: int = 200) -> None:
        self.file = file
        self.origin = file.name
        sample = []
        count = 0
        for row in _json_rows(file):
            if len(sample) < sample_rows:
                sample.append(row)
            count += 1
        self.count = count
        self.columns: dict[str, Column] = {}
        for key in sample[0] if sample else {}:
            values = [r.get(key) for r in sample]
            array = _json_array(key, values, self.origin)
            self.columns[key] = Column("string" if is_string(array) else str(array.dtype), tuple(array.shape[1:]))
        self._cache: dict[str, np.ndarray] = {}

    def column(self, name: str, where: KeyPath) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = _json_array(name, [r.get(name) for r in _json_rows(self.file)], self.origin)
        return self._cache[name]

    def check_finite(self, wheres: dict[str, KeyPath]) -> None:
        for name, where in wheres.items():
            if self.columns[name].dtype != "string" and (row := first_non_finite(self.column(name, where))) is not None:
                raise RecipeError(
                    f"field {name!r} has a missing or NaN value at line {row + 1} of {self.origin}", path=where
                )

    def dataset(
        self, columns: list[str], indices: np.ndarray | None, shuffle_seed: int | None, buffer: int
    ) -> tf.data.Dataset:
        import tensorflow as tf

        keep = None if indices is None else set(indices.tolist())
        specs = {
            c: tf.TensorSpec(
                self.columns[c].shape, tf.string if self.columns[c].dtype == "string" else self.columns[c].dtype
            )
            for c in columns
        }

        def rows() -> Iterator[dict[str, Any]]:
            for i, row in enumerate(_json_rows(self.file)):
                if keep is None or i in keep:
                    yield {c: row.get(c) for c in columns}

        ds = tf.data.Dataset.from_generator(rows, output_signature=specs)
        if shuffle_seed is not None:
            ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds


# ----------------------------------------------------------------------------------------------------
# TFRecord (tf.train.Example)


class TFRecordReader:
    """`tf.train.Example` records in one or more shards (read in order), parsed by a declared feature spec
    (`{name: (dtype, shape)}`, `tf.io.FixedLenFeature` each); always streamed. GZIP shards end in `.gz`."""

    def __init__(self, files: list[Path], features: dict[str, tuple[str, tuple[int, ...]]]) -> None:
        self.files = files
        self.features = features
        self.origin = files[0].name if len(files) == 1 else f"{files[0].name} (+{len(files) - 1} shards)"
        self.columns = {name: Column(dtype, shape) for name, (dtype, shape) in features.items()}
        self._count: int | None = None
        self._cache: dict[str, np.ndarray] = {}

    def _records(self) -> tf.data.TFRecordDataset:
        import tensorflow as tf

        compression = "GZIP" if self.files[0].suffix == ".gz" else None
        return tf.data.TFRecordDataset([str(f) for f in self.files], compression_type=compression)

    def _parse(self, names: list[str]) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
        import tensorflow as tf

        spec = {n: tf.io.FixedLenFeature(self.features[n][1], self.features[n][0]) for n in names}

        def parse(batch: tf.Tensor) -> dict[str, tf.Tensor]:
            try:
                return tf.io.parse_example(batch, spec)
            except (TypeError, ValueError) as exc:  # raised while tracing: a bad spec
                raise RecipeError(f"data.features: {exc}", path=("data", "features")) from None

        return parse

    @property
    def count(self) -> int:
        if self._count is None:
            self._count = int(self._records().reduce(np.int64(0), lambda n, _: n + 1).numpy())
        return self._count

    def column(self, name: str, where: KeyPath) -> np.ndarray:
        """One feature's values for every record (one pass over the shards)."""
        import tensorflow as tf

        if name not in self._cache:
            ds = self._records().batch(4096).map(self._parse([name]))
            try:
                parts = [b[name] for b in ds.as_numpy_iterator()]
            except tf.errors.InvalidArgumentError as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise RecipeError(f"{self.origin}: cannot parse feature {name!r}: {first[:300]}", path=where) from None
            dtype, shape = self.features[name]
            values = np.concatenate(parts) if parts else np.empty((0, *shape))
            if dtype == "string":
                out = np.empty(values.shape, dtype=object)
                out[...] = np.vectorize(lambda b: b.decode("utf-8", errors="replace"), otypes=[object])(values)
                values = out
            self._cache[name] = values
        return self._cache[name]

    def check_finite(self, wheres: dict[str, KeyPath]) -> None:
        for name, where in wheres.items():
            if (
                self.columns[name].dtype == "float32"
                and (row := first_non_finite(self.column(name, where))) is not None
            ):
                raise RecipeError(f"feature {name!r} has a NaN value in record {row} of {self.origin}", path=where)

    def dataset(
        self, columns: list[str], indices: np.ndarray | None, shuffle_seed: int | None, buffer: int
    ) -> tf.data.Dataset:
        import tensorflow as tf

        chunk = 4096
        ds = self._records().batch(chunk).map(self._parse(columns), num_parallel_calls=tf.data.AUTOTUNE)
        return rows_of_chunks(ds, chunk, self.count, indices, shuffle_seed, buffer)


# ----------------------------------------------------------------------------------------------------
# Parquet (optional: needs pyarrow)


def read_parquet(file: Path, limit: int | None = None) -> ArrayTable:
    """A Parquet file in memory through pyarrow (`pip install 'dlrun[tables]'`)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RecipeError(
            "source parquet needs pyarrow: pip install 'dlrun[tables]' (or convert the file to CSV)",
            path=("data", "source"),
        ) from None
    table = pq.read_table(file)
    if limit is not None:
        table = table.slice(0, limit)
    data: dict[str, np.ndarray] = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        data[name] = _json_array(name, values, file.name)
    return ArrayTable(data, file.name)


# ----------------------------------------------------------------------------------------------------
# folders of files (one subfolder per class)


class FileListReader:
    """Image or text files with integer labels (from their class folder), loaded per row by tf.data."""

    shuffles_itself = True  # the whole list of names, before decoding

    def __init__(
        self,
        kind: str,
        paths: np.ndarray,
        labels: np.ndarray,
        class_names: list[str],
        origin: str,
        image_size: tuple[int, int] = (256, 256),
        channels: int = 3,
        root: Path | None = None,
    ) -> None:
        self.kind = kind
        self.root = root
        self.paths = paths
        self.labels = labels.astype("int64")
        self.class_names = class_names
        self.origin = origin
        self.count = len(paths)
        self.image_size = image_size
        self.channels = channels
        content = Column("float32", (*image_size, channels)) if kind == "images" else Column("string", ())
        self.columns = {
            "image" if kind == "images" else "text": content,
            "label": Column("int64", ()),
            "path": Column("string", ()),
        }

    def column(self, name: str, where: KeyPath) -> np.ndarray:
        if name == "label":
            return self.labels
        if name == "path":
            return self.paths
        if name == "text":
            out = np.empty(self.count, dtype=object)
            out[:] = [Path(p).read_text(encoding="utf-8", errors="replace") for p in self.paths]
            return out
        raise RecipeError(f"column {name!r} of an image folder is only available as a stream", path=where)

    def check_finite(self, wheres: dict[str, KeyPath]) -> None:
        return None

    def load(self, path: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        raw = tf.io.read_file(path)
        if self.kind == "text":
            return raw
        image = tf.io.decode_image(raw, channels=self.channels, expand_animations=False)
        image = tf.image.resize(image, self.image_size, method="bilinear")
        image.set_shape((*self.image_size, self.channels))
        return image

    def dataset(
        self, columns: list[str], indices: np.ndarray | None, shuffle_seed: int | None, buffer: int
    ) -> tf.data.Dataset:
        import tensorflow as tf

        idx = np.arange(self.count) if indices is None else indices
        ds = tf.data.Dataset.from_tensor_slices({"path": self.paths[idx].astype(str), "label": self.labels[idx]})
        if shuffle_seed is not None:  # shuffling file names is cheap: the whole split, before decoding
            ds = ds.shuffle(len(idx), seed=shuffle_seed, reshuffle_each_iteration=True)
        content = "image" if self.kind == "images" else "text"

        def record(r: dict[str, Any]) -> dict[str, Any]:
            out = {k: r[k] for k in ("path", "label") if k in columns}
            if content in columns:
                out[content] = self.load(r["path"])
            return out

        record = tf.autograph.experimental.do_not_convert(record)  # plain graph code: autograph's rewrite is cost
        return ds.map(record, num_parallel_calls=tf.data.AUTOTUNE)


class ArrayReader:
    """In-memory columns read like a stream (when other splits of the same data are streamed)."""

    shuffles_itself = True

    def __init__(self, table: ArrayTable) -> None:
        self.table = table
        self.origin = table.origin
        self.count = table.count
        self.columns = {name: table.spec(name) for name in table.names}

    def column(self, name: str, where: KeyPath) -> np.ndarray:
        return self.table.column(name, where)

    def check_finite(self, wheres: dict[str, KeyPath]) -> None:
        return None

    def dataset(
        self, columns: list[str], indices: np.ndarray | None, shuffle_seed: int | None, buffer: int
    ) -> tf.data.Dataset:
        import tensorflow as tf

        idx = np.arange(self.count) if indices is None else indices
        data = {}
        for c in columns:
            a = self.table.data[c][idx]
            data[c] = a.astype(str) if a.dtype.kind == "O" else a
        ds = tf.data.Dataset.from_tensor_slices(data)
        if shuffle_seed is not None:
            ds = ds.shuffle(min(buffer, len(idx)), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds


def rows_of_chunks(
    ds: tf.data.Dataset, chunk: int, count: int, indices: np.ndarray | None, shuffle_seed: int | None, buffer: int
) -> tf.data.Dataset:
    """A stream of `chunk`-row record batches -> its rows: only `indices` (when a subset), shuffled when seeded."""
    import tensorflow as tf

    if indices is not None and len(indices) < count:
        mask = np.zeros(count, dtype=bool)
        mask[indices] = True
        keep = tf.constant(mask)

        def subset(b: tf.Tensor, r: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            n = tf.shape(next(iter(r.values())))[0]
            rows = keep[b * chunk : b * chunk + tf.cast(n, tf.int64)]
            return {k: tf.boolean_mask(v, rows) for k, v in r.items()}

        ds = ds.enumerate().map(subset)
    ds = ds.unbatch()
    if shuffle_seed is not None:
        ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds
