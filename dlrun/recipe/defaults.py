"""`dlrun show --defaults`: the resolved recipe with every default it did not set (LightningCLI's
`--print_config`), the recipe's own values kept as written."""

from __future__ import annotations

from typing import Any

from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.load import Yaml


def with_defaults(loaded: LoadedRecipe) -> dict[str, Any]:
    """The resolved document, with the schema's defaults added for every key it leaves out.

    Mappings merge key by key; a value the recipe wrote (a scalar shorthand such as `optimizer: adam`, a list
    of layers or steps) stays as written, so the result loads back to the same recipe."""
    full = loaded.recipe.model_dump(mode="json", by_alias=True)
    merged = _merge(loaded.resolved(), full)
    merged.pop("$schema", None)
    return merged


def _merge(written: Yaml, full: Yaml) -> Yaml:
    if not (isinstance(written, dict) and isinstance(full, dict)):
        return written
    out = {key: _merge(value, full.get(key)) for key, value in written.items()}
    for key, value in full.items():
        if key not in out:
            out[key] = value
    return out
