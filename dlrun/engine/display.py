"""The live training display on stderr: a status line from the first second (before TensorFlow loads), an
epoch bar with exact step counts, steps/s, samples/s and ETA, stage headers, and the closing summary.

On a terminal one rich `Progress` (transient) shows the status and the current epoch, and each finished epoch
leaves one line above it. When stderr is not a terminal only those lines are written: exactly one plain line
per epoch (logs and CI parse them), no status, no bar. No Keras here: `status` runs before Keras is imported;
`dlrun.engine.progress` is the Keras callback that feeds `EpochMeter`.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.console import err_console, format_metrics

if TYPE_CHECKING:
    from dlrun.recipe.schema import DataSpec


def live() -> bool:
    """Whether stderr is a terminal that shows a live display (not when piped, not under `TERM=dumb`)."""
    return bool(err_console.is_terminal) and not err_console.is_dumb_terminal


class _Screen:
    """The one rich Progress of this process: a status task, and an epoch task once training starts."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.status_task: Any = None
        self.epoch_task: Any = None

    def start(self, message: str = "") -> Any:
        if self.progress is None:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(bar_width=28),
                TextColumn("{task.fields[figures]}", markup=False),
                console=_rich_console(),
                transient=True,
                redirect_stdout=False,  # results on stdout stay on stdout
                refresh_per_second=8,
            )
            self.status_task = self.progress.add_task(message, total=None, figures="")
            self.progress.start()
        return self.progress

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = self.status_task = self.epoch_task = None


def _rich_console() -> Any:
    """The rich Console behind the lazy `err_console` (created now if it was not)."""
    err_console.is_terminal  # noqa: B018 - the first attribute read creates it
    return err_console._console


_screen = _Screen()
atexit.register(_screen.stop)  # an error before the session ends must not leave the terminal's cursor hidden


def status(message: str, *, quiet: bool = False) -> None:
    """Show what is happening now (`loading TensorFlow`, `reading data: 3 files`) on a terminal's status line;
    nothing when not a terminal or quiet (the status is transient, not a log line)."""
    if quiet or not live():
        return
    progress = _screen.start(message)
    if _screen.epoch_task is not None:
        progress.update(_screen.epoch_task, visible=False)
    progress.update(_screen.status_task, description=message, visible=True)
    progress.refresh()


_BACKENDS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def loading(backend: str, *, quiet: bool = False) -> None:
    """The first status, shown before the backend's import (several seconds) starts."""
    if "keras" not in sys.modules:
        status(f"loading {_BACKENDS.get(backend, backend)}", quiet=quiet)


def loading_tensorflow() -> Callable[[], None] | None:
    """For verbs without a display of their own (eval, predict, summary, export, ...): `loading TensorFlow` on
    a terminal while TensorFlow loads, gone once it has (`quiet_tensorflow.before_load`, registered by the CLI);
    returns what ends it, or None when a display (train's) already shows its own status."""
    if _screen.progress is not None or not live():
        return None
    status("loading TensorFlow")
    return stop


def reading(spec: DataSpec, base_dir: Path) -> str:
    """`reading data: 3 files` (or the source's name when it is not a set of files: a download, a folder)."""
    from dlrun.data.sources import source_files
    from dlrun.errors import RecipeError

    try:
        files = source_files(spec, base_dir)
    except RecipeError:  # reported where the data is read, with its location
        files = []
    if not files:
        return f"reading data: {spec.source}"
    return f"reading data: {len(files)} file{'s' if len(files) != 1 else ''}"


def stop() -> None:
    """End the live display (its lines vanish; the epoch lines printed above it stay)."""
    _screen.stop()


def stage_header(text: str, *, quiet: bool = False) -> None:
    """A multi-stage recipe's stage header: a rule on a terminal, one plain line otherwise."""
    if quiet:
        return
    if live():
        err_console.rule(f"[bold]{text}[/bold]", align="left")
    else:
        err_console.print(text, markup=False)


def clock(seconds: float) -> str:
    """`0:42`, `12:05`, `1:02:03`."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class EpochMeter:
    """Counts one session's steps exactly and renders them.

    Keras reports a batch at the end of each `steps_per_execution` chunk with the chunk's last step index, so
    the index runs past the epoch's real step count at the last (partial) chunk; the count is clamped to it.
    """

    epochs: int  # the run's total, across stages
    steps: int | None  # training steps per epoch, when known
    batch_size: int
    quiet: bool = False
    show: bool = field(default_factory=live)
    epoch: int = 0
    done: int = 0
    rate: float | None = None  # steps per second: this epoch's so far, else the previous epoch's
    _began: float = 0.0
    _first: tuple[float, int] | None = None  # (time, steps) of the epoch's first report: compile time excluded
    _last_step_at: float = 0.0

    def begin_epoch(self, epoch: int, steps: int | None = None) -> None:
        """Epoch `epoch` (0-based) starts; `steps` is Keras' own count when it knows it."""
        self.epoch, self.done, self._first = epoch, 0, None
        self.steps = steps or self.steps
        self._began = self._last_step_at = time.perf_counter()
        if self.quiet or not self.show:
            return
        progress = _screen.start()
        progress.update(_screen.status_task, visible=False)
        if _screen.epoch_task is None:
            _screen.epoch_task = progress.add_task("", total=None, figures="")
        progress.reset(
            _screen.epoch_task, total=self.steps, completed=0, description=self._title(), figures="", visible=True
        )

    def batch_end(self, last_step: int, logs: dict[str, Any] | None) -> None:
        """Keras' `on_train_batch_end(last_step)`: steps 0..last_step are done."""
        done = last_step + 1
        self.done = min(done, self.steps) if self.steps else done
        now = time.perf_counter()
        self._last_step_at = now
        if self._first is None:
            self._first = (now, self.done)
        elif now > self._first[0] and self.done > self._first[1]:
            self.rate = (self.done - self._first[1]) / (now - self._first[0])
        if self.quiet or not self.show or _screen.epoch_task is None:
            return
        _screen.progress.update(
            _screen.epoch_task, completed=self.done, total=self.steps, figures=self.figures(logs or {})
        )

    def end_epoch(self, logs: dict[str, Any] | None, *, complete: bool = True) -> str:
        """The epoch's one line (printed unless quiet); a complete epoch counts all its steps."""
        if complete and self.steps:
            self.done = self.steps
        elif complete:
            self.steps = self.done  # now known: an unknown-length stream's epoch ended
        seconds = time.perf_counter() - self._began
        training = max(self._last_step_at - self._began, 1e-9)
        if self.done:
            self.rate = self.done / training
        line = self.line(seconds, logs or {})
        if not self.quiet:
            if self.show and _screen.epoch_task is not None:
                progress = _screen.progress
                progress.update(_screen.epoch_task, completed=self.done, total=self.steps, figures=self.figures(logs))
                progress.refresh()  # the final count is drawn before the epoch's line
            err_console.print(line, markup=False, highlight=False)
        return line

    def _title(self) -> str:
        return f"epoch {self.epoch + 1}/{self.epochs}"

    def _counter(self) -> str:
        return f"{self.done}/{self.steps if self.steps else '?'}"

    def figures(self, logs: dict[str, Any] | None) -> str:
        """`47/94 · 310 steps/s · 9,920 samples/s · ETA 0:01 · run 0:05 · loss 0.12` (the live part)."""
        parts = [self._counter()]
        if self.rate:
            parts.append(f"{self.rate:,.0f} steps/s · {self.rate * self.batch_size:,.0f} samples/s")
            if self.steps:
                left = (self.steps - self.done) / self.rate
                later = (self.epochs - self.epoch - 1) * self.steps / self.rate
                parts.append(f"ETA {clock(left)}" + (f" · run {clock(left + later)}" if later else ""))
        else:
            parts.append("ETA -:--")
        metrics = format_metrics(logs or {})
        return " · ".join([*parts, metrics] if metrics else parts)

    def line(self, seconds: float, logs: dict[str, Any]) -> str:
        """`epoch 2/5 · 469/469 steps · 3.1s · 19,355 samples/s · loss 0.0712 · accuracy 0.9781`."""
        parts = [self._title(), f"{self._counter()} steps", f"{seconds:.1f}s"]
        if self.rate:
            parts.append(f"{self.rate * self.batch_size:,.0f} samples/s")
        metrics = format_metrics(logs)
        return " · ".join([*parts, metrics] if metrics else parts)
