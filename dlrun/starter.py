"""`dlrun init`: commented starter recipes, shipped as package data under `dlrun/templates/`.

Each template passes `dlrun check` as written (a test holds them to it) and carries a data section that
`dlrun train` can run once the data is where it says.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from dlrun.errors import RecipeError

TEMPLATES = ("mlp", "cnn", "multi-input", "multi-output", "transfer", "text")
SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=\S*\n")


def template_names() -> list[str]:
    """What `init --template` accepts: the starter templates, then the gallery's recipes (`dlrun recipes`)."""
    from dlrun import gallery

    return [*TEMPLATES, *(n for n in gallery.names() if n not in TEMPLATES)]


def template_text(name: str) -> str:
    """The packaged template `name` as shipped: a starter template, else a gallery recipe."""
    if name in TEMPLATES:
        return resources.files("dlrun").joinpath("templates", f"{name}.yaml").read_text(encoding="utf-8")
    from dlrun import gallery
    from dlrun.util import did_you_mean

    if name in gallery.names():
        return gallery.get(name).text
    hint = did_you_mean(name.removesuffix(".yaml"), template_names())
    raise RecipeError(
        f"unknown template {name!r}{hint}; templates: {', '.join(TEMPLATES)}; or a gallery recipe (`dlrun recipes`)"
    )


def _schema_comment(output: Path | None) -> str:
    """The editor line for a recipe written to `output`: the repository's schema when there is one."""
    from dlrun.docs import SCHEMA_FILE

    if output is not None and SCHEMA_FILE.is_file():
        folder = output.resolve().parent
        if folder.is_relative_to(SCHEMA_FILE.parents[1]):  # inside the dlrun checkout: a relative path
            return f"# yaml-language-server: $schema={Path(os.path.relpath(SCHEMA_FILE, folder)).as_posix()}\n"
        return f"# yaml-language-server: $schema={SCHEMA_FILE.as_uri()}\n"
    return (
        "# Editor completion: `dlrun schema -o recipe.schema.json`, then make the first line\n"
        "# `# yaml-language-server: $schema=recipe.schema.json`.\n"
    )


def render(name: str, output: Path | None = None, *, recipe_name: str | None = None) -> str:
    """Template text for writing to `output` (None: stdout): schema line adjusted, optional new `name:`."""
    text = SCHEMA_LINE.sub(lambda _: _schema_comment(output), template_text(name), count=1)
    if recipe_name is not None:
        from dlrun.recipe.schema import NAME_PATTERN

        if not re.match(NAME_PATTERN, recipe_name):
            raise RecipeError(f"--name {recipe_name!r}: use letters, digits, _, . and - (not starting with a digit)")
        text = re.sub(r"^name: \S+", f"name: {recipe_name}", text, count=1, flags=re.MULTILINE)
    return text


def write(name: str, output: Path, *, recipe_name: str | None = None) -> Path:
    """Write the starter recipe to `output` (and a gallery recipe's local code beside it); never overwrites."""
    text = render(name, output, recipe_name=recipe_name)
    if name not in TEMPLATES:
        from dlrun import gallery

        _refuse_existing(output)
        gallery.write_companions(gallery.get(name), output)
    return write_new(output, text)


def write_new(output: Path, text: str) -> Path:
    """Write `text` to a file that must not exist yet (`init`, `import -o`, `eject -o`)."""
    _refuse_existing(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(output, "x", encoding="utf-8") as handle:  # "x": fails if created meanwhile
            handle.write(text)
    except FileExistsError:
        raise RecipeError(f"{output} already exists; choose another --output or remove it first") from None
    return output


def _refuse_existing(output: Path) -> None:
    if output.exists():
        raise RecipeError(f"{output} already exists; choose another --output or remove it first")
