"""The one user-error type and the process exit codes.

Every mistake a user can make (recipe, data, arguments) becomes a `RecipeError` carrying where it came
from; the CLI prints it as one line and exits with `EXIT_USER`. Anything else is a bug.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


@dataclass(frozen=True)
class Location:
    """A place in a source file: 1-based line and column."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


def format_path(path: tuple[str | int, ...]) -> str:
    """Render a key path the way a user reads it: `model.layers[3].units`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part or " " in part or not part.isprintable():
            out += f"[{part!r}]"  # a key with spaces or control characters: keep the line one line
        else:
            out += f".{part}" if out else str(part)
    return out


class RecipeError(Exception):
    """A mistake the user can fix: one line, with file:line:column and key path where known."""

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        path: tuple[str | int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.path = tuple(path)

    def __str__(self) -> str:
        prefix = []
        if self.location is not None:
            prefix.append(str(self.location))
        if self.path:
            prefix.append(format_path(self.path))
        text = " ".join(self.message.split())  # one line, always
        return ": ".join([*prefix, text]) if prefix else text


class RunInterrupted(Exception):
    """Training stopped by a signal after saving a resumable state."""

    def __init__(self, signum: int, run: Path | None = None) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.run = run  # the run folder, when the session knows it


# TensorFlow's errors that a recipe or its data cause (a dtype a layer cannot take, an undecodable image,
# shapes that disagree at run time); matched by name so this module never imports TensorFlow.
_FRAMEWORK_DATA_ERRORS = frozenset({"InvalidArgumentError", "UnimplementedError", "FailedPreconditionError"})
_NODE_DETAIL = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\].*|\s*\[Op:[^\]]*\]", re.S)


def framework_error(exc: BaseException) -> RecipeError | None:
    """The `RecipeError` for an exception the recipe, the data or the disk caused; None for a dlrun bug."""
    if isinstance(exc, OSError) and (
        exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or "No space left" in str(exc)
    ):
        where = f" writing {exc.filename}" if exc.filename else ""
        return RecipeError(f"disk full{where}: no space left on the device; free some and run again")
    kind = type(exc)
    if kind.__module__.startswith("tensorflow") and kind.__name__ in _FRAMEWORK_DATA_ERRORS:
        text = str(getattr(exc, "message", None) or exc)
        node = re.search(r"\{\{node ([^}]+)\}\}", text)
        parts = node.group(1).split("/") if node else []  # `model/layer/Op`
        text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", _NODE_DETAIL.sub("", text))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else kind.__name__  # TensorFlow puts the reason last, after the call stack
        if "IteratorGetNext" in str(exc) or "decode_image" in parts[:1]:
            return RecipeError(f"TensorFlow could not read the data: {last}")
        where = f" (in layer {parts[1]!r})" if len(parts) >= 3 else ""
        return RecipeError(f"TensorFlow could not run the model on this data{where}: {last}")
    return None
