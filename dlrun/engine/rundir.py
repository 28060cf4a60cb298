"""The run directory: `runs/<name>/<timestamp>/`, never overwritten, written atomically.

Layout:
  recipe.yaml      the fully resolved recipe (replay with `dlrun train <run>/recipe.yaml`)
  run.json         source recipe, overrides, seed, environment (versions, backend, device, host)
  data.json        fingerprints of the data files used (sha256, size)
  history.csv/json per-epoch metrics, across all stages
  tensorboard/     TensorBoard logs
  checkpoints/     checkpoints (best weights when a best-only ModelCheckpoint is configured)
  resume/          state.npz: the resumable state (engine.callbacks.ResumeState), state.json its position
  model.keras      the final model
  eval.json        metrics of `dlrun eval` / the end of training
  error.log        traceback of an internal error, if any
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dlrun.errors import RecipeError
from dlrun.files import atomic_write_bytes, atomic_write_text  # noqa: F401 (the run folder's writes)


@contextlib.contextmanager
def atomic_target(path: Path, suffix: str) -> Iterator[Path]:
    """A temporary path to save into (e.g. with `model.save`), renamed over `path` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def environment() -> dict[str, Any]:
    """Versions, backend, devices and host: what a replay needs to know."""
    import keras

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    if env["backend"] == "tensorflow":
        import tensorflow as tf

        env["tensorflow"] = tf.__version__
        env["devices"] = [d.name for d in tf.config.list_logical_devices()]
    elif env["backend"] == "jax":
        import jax

        env["jax"] = jax.__version__
        env["devices"] = [str(d) for d in jax.devices()]
    elif env["backend"] == "torch":
        import torch

        env["torch"] = torch.__version__
        # every device torch sees (like TensorFlow's list), the one Keras places tensors on first
        used = str(keras.ops.zeros(()).device)
        seen = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
        seen += ["mps"] if torch.backends.mps.is_available() else []
        env["devices"] = [used, *(d for d in seen if d != used)]
    return env


@dataclass
class RunDir:
    """One run's folder."""

    path: Path

    @classmethod
    def create(cls, root: Path, name: str, *, now: datetime | None = None) -> RunDir:
        """A new, empty run folder under `root/name/`; never reuses an existing one."""
        if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name:
            raise RecipeError(f"run name {name!r} is not a plain folder name")
        root = root.resolve()
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
        base = (root / name).resolve()
        if root not in base.parents:
            raise RecipeError(f"run name {name!r} escapes the runs folder {root}")
        base.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            candidate = base / (stamp if i == 0 else f"{stamp}-{i}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return cls(candidate)
        raise RecipeError(f"too many runs named {name!r} started at {stamp}")

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run folder (must hold recipe.yaml)."""
        if not (path / "recipe.yaml").is_file():
            raise RecipeError(f"{path} is not a run folder (no recipe.yaml)")
        return cls(path)

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def model(self) -> Path:
        return self.path / "model.keras"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def write_json(self, name: str, data: Any) -> None:
        """Atomically write `name` as indented JSON."""
        atomic_write_text(self.path / name, json.dumps(data, indent=2, default=_json_default) + "\n")

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the run, or None when absent."""
        file = self.path / name
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def resume_source(resume: Path | None, recipe: Path | None, overrides: list[str] | tuple[str, ...]) -> Path:
    """The recipe file a train command runs: RECIPE, or the run folder's own recipe.yaml with --resume
    (`--resume auto` finds the run from RECIPE)."""
    if resume is not None and resume == Path("auto"):
        if recipe is None:
            raise RecipeError("--resume auto continues the latest resumable run of a RECIPE: give the RECIPE")
        return recipe
    if resume is not None:
        if recipe is not None or overrides:
            raise RecipeError("--resume continues a run with its own recipe; give no RECIPE and no --set")
        return RunDir.open(resume).recipe
    if recipe is None:
        raise RecipeError("give a RECIPE to train, or --resume RUN_DIR")
    return recipe
