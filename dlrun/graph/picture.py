"""`dlrun summary --plot FILE`: the built model drawn by Keras' `model_to_dot` and Graphviz.

The tools are checked first (`check_tools`, before any model is built): pydot is the `plot` extra, Graphviz a
system package. SVG is drawn at Graphviz's own 72 dpi: at Keras' default 200 dpi Graphviz scales the SVG's
width and height but not its viewBox, and viewers crop the picture.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dlrun.errors import RecipeError

if TYPE_CHECKING:
    import keras

FORMATS = {".png": 200, ".svg": None, ".pdf": None, ".dot": None}  # suffix -> dpi (None: Graphviz's 72)
_MISSING = "--plot needs {what}; `--format dot|mermaid` draws the graph without them"


def check_tools(file: Path) -> None:
    """One clear error when `file`'s format is not drawable or pydot / Graphviz's `dot` is not installed."""
    if file.suffix.lower() not in FORMATS:
        raise RecipeError(f"--plot writes {', '.join(FORMATS)}, not {file.suffix or 'a file without suffix'!r}")
    try:
        import pydot  # noqa: F401
    except ImportError:
        raise RecipeError(_MISSING.format(what="pydot: pip install 'dlrun[plot]'")) from None
    if file.suffix.lower() != ".dot" and shutil.which("dot") is None:
        raise RecipeError(_MISSING.format(what="Graphviz's `dot` program: apt-get install graphviz (or brew)"))


def draw_model(model: keras.Model, file: Path, *, expand: bool = False) -> Path:
    """Draw `model` (built) to `file` (.png, .svg, .pdf or .dot), atomically."""
    import keras

    from dlrun.files import atomic_write_bytes

    check_tools(file)
    suffix = file.suffix.lower()
    dot = keras.utils.model_to_dot(
        model, show_shapes=True, show_layer_names=True, expand_nested=expand, dpi=FORMATS[suffix]
    )
    if FORMATS[suffix] is None:
        del dot.obj_dict["attributes"]["dpi"]  # model_to_dot sets it even when None
    try:
        data = dot.to_string().encode() if suffix == ".dot" else dot.create(format=suffix[1:])
    except (OSError, AssertionError) as exc:
        raise RecipeError(f"--plot: Graphviz failed ({exc})") from None
    atomic_write_bytes(file, data)
    return file
