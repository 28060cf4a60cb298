"""The callbacks a session adds to the recipe's: module-level Keras callbacks, plus the recipe's own made
with their files placed inside the run folder.

Keras' own are used where they fit (the recipe's ModelCheckpoint, CSVLogger, TensorBoard, BackupAndRestore
are Keras' classes). Three are dlrun's because Keras' differ in what a run needs: `NonFiniteGuard` records
where the loss stopped being finite (TerminateOnNaN only prints it); `HistoryWriter` keeps one history
across stages and a resumed run, written atomically as CSV and JSON (CSVLogger appends one fit's rows);
`ResumeState` saves every model and optimizer variable and the history after each complete epoch (and
inside epochs, engine.checkpoints), and `--resume`/`--run-id` continue from it in any stage
(BackupAndRestore restores within one `fit` call only).
Imported only when training, so Keras is imported at the top.
"""

from __future__ import annotations

import io
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import numpy as np

from dlrun.engine.rundir import RunDir, atomic_target, atomic_write_bytes, atomic_write_text
from dlrun.errors import RecipeError
from dlrun.graph.components import make
from dlrun.importer import Importer
from dlrun.recipe.schema import Component
from dlrun.trust import check_network

Logs = dict[str, Any] | None


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes to a temporary file and renames: a failed save keeps the old file."""

    def _save_model(self, epoch: int, batch: int | None, logs: dict[str, Any]) -> None:
        filepath = Path(self._get_file_path(epoch, batch, logs))
        if not self._should_save_model(epoch, batch, logs, str(filepath)):
            return
        suffix = ".weights.h5" if str(filepath).endswith(".weights.h5") else filepath.suffix
        try:
            with atomic_target(filepath, suffix) as tmp:
                if self.save_weights_only:
                    self.model.save_weights(str(tmp), overwrite=True)
                else:
                    self.model.save(str(tmp), overwrite=True)
        except OSError as exc:
            kept = " the previous checkpoint is intact" if filepath.exists() else ""
            raise RecipeError(
                f"saving checkpoint {filepath.name} failed ({exc.strerror or exc}): disk full?{kept}"
            ) from None


# Keras callbacks that write files: the argument naming the file, and its default inside the run folder.
_FILE_ARGUMENTS = {
    "TensorBoard": ("log_dir", lambda run: run.tensorboard),
    "CSVLogger": ("filename", lambda run: run.path / "history_log.csv"),
    "BackupAndRestore": ("backup_dir", lambda run: run.path / "backup"),
}


def make_callbacks(
    comps: list[Component], run: RunDir, importer: Importer, base: tuple[str | int, ...]
) -> list[keras.callbacks.Callback]:
    """Instantiate the recipe's callbacks, placing their files inside the run folder."""
    out = []
    for i, comp in enumerate(comps):
        kwargs = comp.kwargs
        path = (*base, i)
        check_network(comp.type, importer.trust, path)  # RemoteMonitor needs --trust
        if comp.type == "ModelCheckpoint":
            best_only = bool(kwargs.get("save_best_only", False))
            default = "best.weights.h5" if best_only else "epoch-{epoch:03d}.weights.h5"
            file = Path(kwargs.get("filepath", default))
            kwargs = {
                **kwargs,
                "filepath": str(file if file.is_absolute() else run.checkpoints / file),
                "save_weights_only": kwargs.get("save_weights_only", str(file).endswith(".weights.h5")),
            }
            try:
                out.append(AtomicModelCheckpoint(**kwargs))
            except (TypeError, ValueError) as exc:
                raise RecipeError(f"ModelCheckpoint: {exc}", path=path) from None
            continue
        if comp.type in _FILE_ARGUMENTS:
            key, where = _FILE_ARGUMENTS[comp.type]
            value = Path(kwargs.get(key, where(run)))
            kwargs = {**kwargs, key: str(value if value.is_absolute() else run.path / value)}
        if comp.type == "TensorBoard":
            try:
                out.append(EpochTensorBoard(**kwargs))
            except (TypeError, ValueError) as exc:
                raise RecipeError(f"TensorBoard: {exc}", path=path) from None
            continue
        out.append(make("callbacks", Component(type=comp.type, **kwargs), importer, path))
    return out


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard without its per-batch `batch_<metric>` summary calls when it logs per epoch
    (`update_freq: epoch`, the default): Keras then sets no writer for them, so they are no-ops that still cost
    ~0.3 ms CPU a step (issue 21; ~0.14 s an epoch for MNIST at one step per call, on the 2-core machine)."""

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        super().on_train_batch_end(batch, None if self.update_freq == "epoch" else logs)


def restore_best(model: keras.Model, callbacks: list[Any], importer: Importer) -> str | None:
    """Load the best checkpoint's weights (the seeds' load-best-weights step); returns its path."""
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.ModelCheckpoint) and cb.save_best_only:
            file = Path(cb.filepath)
            if "{" in cb.filepath or not file.is_file():
                continue
            if cb.save_weights_only:
                model.load_weights(str(file))
            else:
                best = keras.saving.load_model(str(file), custom_objects=importer.custom_objects())
                model.set_weights(best.get_weights())
            return str(file)
    return None


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, remembering where."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = f"the loss became {float(loss)} in epoch {self.epoch + 1}, batch {batch + 1}"
            self.model.stop_training = True


class TorchEpochSeed(keras.callbacks.Callback):
    """Deterministic mode under torch: reseeds torch's global generator before each epoch's first step from
    (seed, epoch). Keras' torch Dropout without a `seed` draws from that generator (not from a SeedGenerator
    variable, as under tensorflow and jax) and so does torch's DataLoader when fit starts, so without this a
    run resumed at epoch k would draw other dropout masks than the uninterrupted run did."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.epoch: int | None = None

    @classmethod
    def needed(cls, seed: int, *, deterministic: bool) -> list[TorchEpochSeed]:
        """The reseeding callback in deterministic mode under torch; none otherwise."""
        return [cls(seed)] if deterministic and keras.backend.backend() == "torch" else []

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        if self.epoch is not None:  # after fit's own draws (the data loader starts on the first step)
            import torch

            torch.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
            self.epoch = None


class HistoryWriter(keras.callbacks.Callback):
    """Per-epoch metrics to history.csv and history.json, atomically, across all stages."""

    def __init__(self, run: RunDir, history: dict[str, list[float]], interrupted: Callable[[], bool]) -> None:
        super().__init__()
        self.run, self.history, self.interrupted = run, history, interrupted
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self.interrupted():
            return  # a partial epoch is not history
        history = self.history
        history.setdefault("epoch", []).append(epoch + 1)
        history.setdefault("seconds", []).append(round(time.perf_counter() - self.started, 4))
        for key, value in dict(logs or {}).items():
            history.setdefault(key, []).append(float(value))
        keys = list(history)
        rows = [",".join(keys)]
        for i in range(len(history["epoch"])):
            rows.append(",".join(repr(history[k][i]) if i < len(history[k]) else "" for k in keys))
        atomic_write_text(self.run.path / "history.csv", "\n".join(rows) + "\n")
        self.run.write_json("history.json", history)


class ResumeState:
    """The run's resumable state: every model and optimizer variable after the last completed epoch, or (step
    checkpoints, engine.checkpoints) after `step` batches of the next one, with the metrics accumulated so far.

    One file, `resume/state.npz`, holds the arrays and the position (`meta`: epoch, step, history) and is
    replaced atomically, so a kill at any moment leaves the previous complete state; `state.json` repeats the
    position for people and `dlrun runs` (written after it, so it may lag by one save, never lead)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.folder = run.path / "resume"
        self._cached: dict[str, Any] | None = None

    def exists(self) -> bool:
        return (self.folder / "state.npz").is_file() and (self.folder / "state.json").is_file()

    def _meta(self) -> dict[str, Any]:
        if self._cached is None:
            with np.load(self.folder / "state.npz") as archive:
                if "meta" in archive.files:
                    self._cached = json.loads(archive["meta"].tobytes().decode("utf-8"))
            if self._cached is None:  # written before the position moved into state.npz
                self._cached = json.loads((self.folder / "state.json").read_text(encoding="utf-8"))
        return self._cached

    def epoch(self) -> int:
        """Number of completed epochs saved (0 when none)."""
        return int(self._meta()["epoch"]) if self.exists() else 0

    def step(self) -> int:
        """Batches of epoch `epoch()` already trained on (0: the state is at an epoch boundary)."""
        return int(self._meta().get("step", 0)) if self.exists() else 0

    def history(self) -> dict[str, list[float]]:
        return self._meta()["history"] if self.exists() else {}

    def save(self, model: keras.Model, epoch: int, history: dict[str, list[float]], step: int = 0) -> None:
        meta = {"epoch": epoch, "step": step, "history": history}
        # Variable.numpy() reads a TensorFlow variable in one op; np.asarray takes twice as long through
        # __array__ (20 variables: 3.35 vs 1.77 ms, every epoch: issue 21).
        arrays = {f"model_{i}": v.numpy() for i, v in enumerate(model.variables)}
        if model.optimizer is not None and model.optimizer.built:
            arrays.update({f"optimizer_{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
        if step:  # mid-epoch: the epoch's running loss and metrics, so its logs match an uninterrupted epoch
            arrays.update({f"metric_{i}": v.numpy() for i, v in enumerate(model.metrics_variables)})
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.folder / "state.npz", buffer.getvalue())
        self._cached = meta
        atomic_write_text(self.folder / "state.json", json.dumps(meta) + "\n")

    def restore(self, model: keras.Model) -> None:
        with np.load(self.folder / "state.npz") as archive:
            for i, v in enumerate(model.variables):
                v.assign(archive[f"model_{i}"])
            if any(k.startswith("optimizer_") for k in archive.files):
                model.optimizer.build(model.trainable_variables)
                for i, v in enumerate(model.optimizer.variables):
                    v.assign(archive[f"optimizer_{i}"])

    def restore_metrics(self, model: keras.Model) -> None:
        """The cut epoch's running metrics (call after fit has reset them, before its first step)."""
        with np.load(self.folder / "state.npz") as archive:
            for i, v in enumerate(model.metrics_variables):
                if f"metric_{i}" in archive.files:
                    v.assign(archive[f"metric_{i}"])

    def callback(self, history: dict[str, list[float]], interrupted: Callable[[], bool]) -> SaveResumeState:
        return SaveResumeState(self, history, interrupted)


class SaveResumeState(keras.callbacks.Callback):
    """Saves the `ResumeState` after each complete, finite epoch."""

    def __init__(self, state: ResumeState, history: dict[str, list[float]], interrupted: Callable[[], bool]) -> None:
        super().__init__()
        self.state, self.history, self.interrupted = state, history, interrupted

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self.interrupted():
            return  # a partial epoch: the state stays at the last complete one
        if self.model.stop_training and any(
            isinstance(v, float) and not math.isfinite(v) for v in (logs or {}).values()
        ):
            return  # never overwrite the last good state with a diverged one
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps the latest values outside the variables until synced
            sync()
        self.state.save(self.model, epoch + 1, self.history)


@contextmanager
def stop_on_signals(model: keras.Model) -> Iterator[dict[str, int | None]]:
    """SIGINT/SIGTERM ask Keras to stop at the next step boundary instead of killing the process."""
    state: dict[str, int | None] = {"signum": None}

    def handler(signum: int, frame: Any) -> None:
        state["signum"] = signum
        model.stop_training = True

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
