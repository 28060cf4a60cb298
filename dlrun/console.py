"""Terminal output: one rich Console, plain lines when not a terminal (training's live display: engine.display).

Colours follow rich's rules (off when not a terminal, off when NO_COLOR is set). `--quiet` silences
progress; `--json` verbs print machine output with `print_json` and nothing else on stdout.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, TextIO

PIPE_WIDTH = 100_000  # rich's width when output is not a terminal (rich's own default there is 80)


def _is_terminal(stream: TextIO) -> bool:
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


def say(message: str, *, quiet: bool = False) -> None:
    """A status line on stderr (stdout stays clean for results)."""
    if not quiet:
        err_console.print(message)
