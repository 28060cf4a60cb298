"""Terminal output: one rich Console, epoch progress, plain lines when not a terminal.

Colours follow rich's rules (off when not a terminal, off when NO_COLOR is set). `--quiet` silences
progress; `--json` verbs print machine output with `print_json` and nothing else on stdout.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

PIPE_WIDTH = 100_000  # rich's width when output is not a terminal (rich's own default there is 80)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _LazyConsole:
    """A rich Console created on first use: `dlrun validate` prints without importing rich (~0.1 s)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            # rich's NO_COLOR drops colours but keeps bold/italic escapes; here it means no escape codes at all.
            plain: dict[str, Any] = {"color_system": None} if os.environ.get("NO_COLOR", "") != "" else {}
            stream = sys.stderr if self._options.get("stderr") else sys.stdout
            if not os.environ.get("COLUMNS") and not _is_terminal(stream):
                plain["width"] = PIPE_WIDTH  # piped: tables as wide as their cells (`dlrun runs | cat` keeps paths)
            self._console = Console(highlight=False, soft_wrap=True, **plain, **self._options)
        return getattr(self._console, name)


console: Any = _LazyConsole()
err_console: Any = _LazyConsole(stderr=True)


def format_metrics(logs: dict[str, Any]) -> str:
    """`loss 0.1234 · accuracy 0.9712` with stable, short number formatting."""
    parts = []
    for key, value in logs.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if key == "learning_rate":
            parts.append(f"lr {number:.3g}")
        elif math.isfinite(number) and abs(number) >= 1e-3:
            parts.append(f"{key} {number:.4f}")
        else:
            parts.append(f"{key} {number:.3g}")
    return " · ".join(parts)


def make_progress_callback(total_epochs: int, steps: int | None, *, quiet: bool = False) -> Any:
    """A Keras callback that shows live per-epoch progress (terminal) or one line per epoch (pipes)."""
    import keras

    live = err_console.is_terminal and not quiet

    class EpochProgress(keras.callbacks.Callback):
        """Epoch bar with live metrics on a terminal; a plain line per epoch otherwise."""

        def __init__(self) -> None:
            super().__init__()
            self.started = 0.0
            self.last_draw = 0.0
            self.epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.started = time.perf_counter()
            self.epoch = epoch

        if live:

            def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
                now = time.perf_counter()
                if now - self.last_draw < 0.25:
                    return
                self.last_draw = now
                done = batch + 1
                width = 24
                filled = int(width * done / steps) if steps else 0
                bar = "█" * filled + "·" * (width - filled)
                text = (
                    f"epoch {self.epoch + 1}/{total_epochs} {bar} {done}/{steps or '?'}  {format_metrics(logs or {})}"
                )
                sys.stderr.write("\r\x1b[2K" + text[: err_console.width - 1])
                sys.stderr.flush()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if quiet:
                return
            seconds = time.perf_counter() - self.started
            if live:
                sys.stderr.write("\r\x1b[2K")
            err_console.print(f"epoch {epoch + 1}/{total_epochs} {seconds:.1f}s  {format_metrics(logs or {})}")

    return EpochProgress()


def say(message: str, *, quiet: bool = False) -> None:
    """A status line on stderr (stdout stays clean for results)."""
    if not quiet:
        err_console.print(message)
