"""The one user-error type and the process exit codes.

Every mistake a user can make (recipe, data, arguments) becomes a `RecipeError` carrying where it came
from; the CLI prints it as one line and exits with `EXIT_USER`. Anything else is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
