"""What the data of a run was: the source's fingerprint, the rows of every split, the classes they hold.

`describe` gives the one line `train` and `cv` print before any TensorFlow work; `save` writes `data.json`
(fingerprints, counts, a hash of each split's row list) and `splits.npz` (the row numbers themselves: split
`s` is rows `splits.npz[s]` of source split `data.json["splits"][s]["from"]`, 0-based in file order), so the
same split can be rebuilt outside dlrun.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.files import relative_paths

if TYPE_CHECKING:
    from dlrun.data.tables import Table
    from dlrun.recipe.schema import DataSpec

# largest / smallest class count from which a split is called imbalanced
IMBALANCE_RATIO = 3.0
SPLITS_FILE = "splits.npz"
SPLIT_ORDER = ("train", "validation", "test")


def file_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 and size of a data file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def file_list_fingerprint(root: Path, paths: list[str]) -> dict[str, Any]:
    """sha256 over the sorted `relative path, size` lines of a folder's files (contents are not read)."""
    digest = hashlib.sha256()
    total = 0
    ordered = sorted(paths)
    for p, name in zip(ordered, relative_paths(root, ordered), strict=True):
        size = os.path.getsize(p)
        total += size
        digest.update(f"{name}\t{size}\n".encode())
    return {"path": str(root), "sha256": digest.hexdigest(), "files": len(paths), "bytes": total}


def arrays_fingerprint(data: dict[str, np.ndarray]) -> str:
    """sha256 of in-memory columns (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name in sorted(data):
        a = np.asarray(data[name])
        digest.update(f"{name}|{a.dtype}|{a.shape}\n".encode())
        digest.update(a.astype(str).tobytes() if a.dtype.kind == "O" else np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def rows_sha256(rows: np.ndarray) -> str:
    """sha256 of a row list as little-endian int64 (what `splits.npz` holds)."""
    return hashlib.sha256(np.asarray(rows, dtype="<i8").tobytes()).hexdigest()


@dataclass
class SplitRecord:
    """One split: the source split it was drawn from, the rows it holds, its class counts (or None)."""

    source: str
    rows: np.ndarray
    classes: dict[str, int] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.source, "count": len(self.rows), "rows_sha256": rows_sha256(self.rows)}
        if self.classes is not None:
            out["classes"] = self.classes
        return out


@dataclass
class DataRecord:
    """The source (fingerprints; folder file counts) and every split of one prepared data section."""

    origin: str
    files: list[dict[str, Any]] = field(default_factory=list)
    content_sha256: str | None = None
    folders: dict[str, dict[str, int]] = field(default_factory=dict)  # source split -> class -> files
    splits: dict[str, SplitRecord] = field(default_factory=dict)
    target: str | None = None

    @property
    def sha256(self) -> str:
        if self.content_sha256 is not None:
            return self.content_sha256
        digest = hashlib.sha256("".join(f["sha256"] for f in self.files).encode())
        return self.files[0]["sha256"] if len(self.files) == 1 else digest.hexdigest()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"origin": self.origin, "sha256": self.sha256, "files": self.files}
        if self.folders:
            out["folders"] = self.folders
        out["samples"] = {s: len(r.rows) for s, r in self.splits.items()}
        out["splits"] = {s: r.as_json() for s, r in self.splits.items()}
        if self.target is not None:
            out["target"] = self.target
        return out


def _class_counts(values: np.ndarray, vocab: list[Any]) -> dict[str, int]:
    names, counts = np.unique(values.astype(str) if values.dtype.kind == "O" else values, return_counts=True)
    found = {str(n): int(c) for n, c in zip(names.tolist(), counts.tolist(), strict=True)}
    order = [str(v) for v in vocab]
    return {k: found.get(k, 0) for k in order} | {k: v for k, v in found.items() if k not in order}


def build_record(
    spec: DataSpec,
    tables: dict[str, Table],
    source_tables: dict[str, Table],
    files: list[Path],
    labels: dict[str, np.ndarray | None],
) -> DataRecord:
    """The record of `tables` (the final splits), drawn from `source_tables` (what the source gave); `labels` are
    each split's class labels (None for a regression target), as `prepare.class_values` reads them."""
    first = next(iter(source_tables.values()))
    record = DataRecord(origin=first.origin)
    record.files = [file_fingerprint(f) for f in files]
    for split, table in source_tables.items():
        reader = getattr(table, "reader", None)
        paths = getattr(reader, "paths", None)
        root = getattr(reader, "root", None)
        if paths is not None and root is not None:
            record.files.append(file_list_fingerprint(Path(root), [str(p) for p in paths]))
            names = reader.class_names
            record.folders[split] = {
                n: int(c) for n, c in zip(names, np.bincount(reader.labels, minlength=len(names)), strict=True)
            }
    if not record.files:
        record.content_sha256 = arrays_fingerprint(
            {f"{s}/{k}": v for s, t in source_tables.items() for k, v in getattr(t, "data", {}).items()}
        )
    target, feature = next(iter(spec.targets.items()))
    if all(v is None for v in labels.values()):
        for split, table in tables.items():
            record.splits[split] = SplitRecord(table.source_split, table.row_numbers())
        return record
    record.target = target
    reader = getattr(next(iter(tables.values())), "reader", None)
    folder_names = getattr(reader, "class_names", None) if feature.columns == ["label"] else None
    if folder_names is not None:  # folder labels are indices into the class folders' names
        labels = {s: np.asarray(folder_names, dtype=object)[v.astype("int64")] for s, v in labels.items()}
    vocab = feature.classes or folder_names or _union(labels)
    for split, table in tables.items():
        classes = _class_counts(labels[split], vocab) if labels[split] is not None else None
        record.splits[split] = SplitRecord(table.source_split, table.row_numbers(), classes)
    return record


def _union(labels: dict[str, np.ndarray | None]) -> list[str]:
    found = {str(v) for values in labels.values() if values is not None for v in values.tolist()}
    numeric = all(k.lstrip("-").isdigit() for k in found)
    return sorted(found, key=lambda k: (int(k), k) if numeric else (0, k))


def describe(record: DataRecord) -> str:
    """One line: samples per split, the classes and their counts (imbalance and absent classes flagged), the
    source and its fingerprint; folders first say how many files they hold."""
    parts = []
    if record.folders:
        total = sum(sum(c.values()) for c in record.folders.values())
        kinds = max(len(c) for c in record.folders.values())
        parts.append(f"found {total} files in {kinds} classes")
    order = sorted(record.splits, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 3)
    parts.append(", ".join(f"{s} {len(record.splits[s].rows)}" for s in order))
    train = record.splits.get("train")
    if train is not None and train.classes is not None:
        counts = train.classes
        shown = " ".join(f"{k}:{v}" for k, v in list(counts.items())[:12]) + (" ..." if len(counts) > 12 else "")
        text = f"{len(counts)} classes of {record.target!r} (train {shown})"
        present = [v for v in counts.values() if v > 0]
        if present and max(present) >= IMBALANCE_RATIO * min(present):
            text += f", imbalanced: largest/smallest {max(present) / min(present):.1f}"
        lacking = [
            f"{s} lacks {', '.join(k for k, v in r.classes.items() if v == 0)}"
            for s, r in record.splits.items()
            if r.classes is not None and any(v == 0 for v in r.classes.values())
        ]
        parts.append("; ".join([text, *lacking]))
    parts.append(f"{record.origin} sha256 {record.sha256[:12]}")
    return "data: " + " · ".join(parts)


def save(
    run_path: Path,
    record: DataRecord,
    write_bytes: Callable[[Path, bytes], None],
    write_json: Callable[[str, Any], None],
) -> None:
    """Write `data.json` and `splits.npz` into the run folder (through the run folder's atomic writers)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{s: np.asarray(r.rows, dtype="<i8") for s, r in record.splits.items()})
    write_bytes(run_path / SPLITS_FILE, buffer.getvalue())
    write_json("data.json", record.as_json())
