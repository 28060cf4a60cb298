"""The recipe gallery at hand: `dlrun recipes` lists it, `dlrun init --template NAME` copies a recipe from it.

The gallery is the repository's `recipes/` folder, shipped in the package as `dlrun/recipes/` (a symlink to
`../recipes` in the checkout, real files in a wheel), so an installed dlrun copies the same recipes a checkout
holds. Each recipe's header comment says what it shows; its local `imports:` (custom_layers.py) are copied
beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import yaml

from dlrun.errors import RecipeError

SUMMARY_CHARS = 200
_SCHEMA_LINE = re.compile(r"^#\s*yaml-language-server:")


@dataclass(frozen=True)
class GalleryRecipe:
    """One gallery recipe: its name (the file's stem), what it shows (the header comment) and its text."""

    name: str
    header: str
    text: str

    @property
    def summary(self) -> str:
        """The header's first sentence (two when the first is a short question)."""
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", self.header)  # "ch. 2", "et al. 2014" do not end one
        summary = ""
        for sentence in sentences:
            summary = f"{summary} {sentence}".strip()
            if len(summary) >= 40:
                break
        if len(summary) > SUMMARY_CHARS:  # the full header is in `dlrun recipes --json`
            summary = summary[:SUMMARY_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + " …"
        return summary

    def local_imports(self) -> list[str]:
        """The recipe's `imports:` that are files beside it (copied with it)."""
        data = yaml.safe_load(self.text) or {}
        entries = data.get("imports") or [] if isinstance(data, dict) else []
        return [str(e).split(":")[0] for e in entries if str(e).split(":")[0].endswith(".py")]


def folder() -> Traversable:
    """The gallery folder: the package's `recipes/` (installed, or the checkout's symlink), else the checkout's
    own `recipes/` (a checkout made without symlinks, e.g. git on Windows with core.symlinks off)."""
    packaged = resources.files("dlrun").joinpath("recipes")
    checkout = Path(__file__).resolve().parents[1] / "recipes"
    return packaged if packaged.is_dir() or not checkout.is_dir() else checkout


def header_comment(text: str) -> str:
    """The comment block a recipe starts with (the editor's schema line left out), as one paragraph."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not _SCHEMA_LINE.match(line):
            lines.append(line.lstrip("#").strip())
    return " ".join(line for line in lines if line)


def names() -> list[str]:
    """Every gallery recipe's name, sorted."""
    base = folder()
    if not base.is_dir():
        return []
    return sorted(entry.name.removesuffix(".yaml") for entry in base.iterdir() if entry.name.endswith(".yaml"))


def get(name: str) -> GalleryRecipe:
    """The gallery recipe `name` (a RecipeError naming the choices when there is none)."""
    if name not in names():
        raise RecipeError(f"no gallery recipe {name!r}; `dlrun recipes` lists them")
    text = folder().joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return GalleryRecipe(name=name, header=header_comment(text), text=text)


def all_recipes() -> list[GalleryRecipe]:
    """Every gallery recipe, sorted by name."""
    return [get(name) for name in names()]


def companion_files(recipe: GalleryRecipe) -> dict[str, str]:
    """The local code files the recipe imports, by file name, with their text (copied beside the recipe)."""
    out = {}
    for module in recipe.local_imports():
        file = folder().joinpath(module)
        if "/" in module or "\\" in module or not file.is_file():
            continue  # the gallery's own recipes name files beside them; anything else is not copied
        out[module] = file.read_text(encoding="utf-8")
    return out


def write_companions(recipe: GalleryRecipe, output: Path) -> list[Path]:
    """Copy the recipe's local imports beside `output`; an existing file with other content is an error."""
    written = []
    for module, text in companion_files(recipe).items():
        target = output.parent / module
        if target.exists():
            if target.is_file() and target.read_text(encoding="utf-8") == text:
                continue
            raise RecipeError(f"{target} already exists and differs from the gallery's {module}; remove it first")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8") as handle:
            handle.write(text)
        written.append(target)
    return written
