"""Where arrays come from: `keras.datasets` names (file, cache or download) and `.npz` files.

Every source returns `{split: {key: array}}` with splits `train` and, where the data has one, `test`.
For keras datasets the keys are `x` and `y`, as `load_data()` returns them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dlrun.errors import RecipeError
from dlrun.recipe.schema import KERAS_DATASETS, DataSpec

Splits = dict[str, dict[str, np.ndarray]]


def keras_cache_dir() -> Path:
    """Keras' own dataset cache (`~/.keras/datasets`, or under $KERAS_HOME)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def _split_npz(file: Path) -> Splits:
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read {file}: {exc}", path=("data", "path")) from None
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


def resolve_path(spec: DataSpec, base_dir: Path) -> Path | None:
    """The file a data spec reads, or None when Keras must download it."""
    if spec.path is not None:
        file = Path(spec.path).expanduser()
        file = file if file.is_absolute() else base_dir / file
        if file.is_dir() and spec.source in KERAS_DATASETS:
            file = file / f"{spec.source}.npz"
        if not file.is_file():
            raise RecipeError(f"data file not found: {file}", path=("data", "path"))
        return file
    if spec.source == "npz":
        raise RecipeError("source `npz` needs `path:`", path=("data", "path"))
    candidates = []
    if os.environ.get("DLRUN_DATA_DIR"):
        candidates.append(Path(os.environ["DLRUN_DATA_DIR"]) / f"{spec.source}.npz")
    candidates.append(keras_cache_dir() / f"{spec.source}.npz")
    return next((c for c in candidates if c.is_file()), None)


def load_source(spec: DataSpec, base_dir: Path) -> Splits:
    """Load the arrays a data spec names."""
    file = resolve_path(spec, base_dir)
    if file is None:
        return _download(spec.source)
    splits = _split_npz(file)
    if spec.source in KERAS_DATASETS and not {"x", "y"} <= set(splits.get("train", {})):
        raise RecipeError(
            f"{file} is not in keras.datasets format (x_train, y_train, x_test, y_test)", path=("data", "path")
        )
    return splits
