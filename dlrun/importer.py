"""Custom code by import path, under the recipe's consent rules.

Custom components are written `module.path:Name` or `file.py:Name` (relative to the recipe). They are
imported only when their top-level module is listed under the recipe's `imports:` and lies inside the
recipe's folder tree or is an installed package, or when the caller passes `trust=True`. A recipe read from
a run folder (`origin`) imports nothing without `trust=True`: consent comes from the command line, not from
the file (see `dlrun.trust`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from dlrun.errors import RecipeError
from dlrun.recipe.load import KeyPath
from dlrun.trust import announce, outside_reason


def load_file_module(file: Path) -> ModuleType:
    """The module of a `.py` file, imported (and announced) once under `dlrun_custom_<stem>`, the one key every
    recipe's `imports:` and `dlrun import --imports` use, so a class is the same class wherever it is named.
    A module that fails to import is not left half-imported in sys.modules; another file of the same name (a
    second recipe folder's my_layers.py) replaces it rather than being served the first one's classes."""
    key = f"dlrun_custom_{file.stem}"
    cached = sys.modules.get(key)
    if cached is not None and getattr(cached, "__file__", None) == str(file):
        return cached
    announce(str(file))
    spec = importlib.util.spec_from_file_location(key, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


class Importer:
    """Imports custom components under the recipe's allow-list (or full trust)."""

    def __init__(self, allowed: list[str], base_dir: Path, *, trust: bool = False, origin: Path | None = None) -> None:
        self.entries = {a.split(":")[0].removesuffix(".py"): i for i, a in enumerate(allowed)}
        self.allowed = set(self.entries)
        self.base_dir = base_dir
        self.trust = trust
        self.origin = origin  # the run folder the recipe came from, if it came from one
        self.loaded: dict[str, Any] = {}

    def is_allowed(self, module: str) -> bool:
        """Whether `module` (or its top-level package) is allow-listed."""
        if self.trust:
            return True
        stem = module.removesuffix(".py")
        return stem in self.allowed or stem.split(".")[0] in self.allowed

    def load(self, ref: str, path: KeyPath = ()) -> Any:
        """The object named by `module:Name`; `RecipeError` when untrusted, missing or broken."""
        if ref in self.loaded:
            return self.loaded[ref]
        module_name, _, attr = ref.partition(":")
        if not module_name or not attr:
            raise RecipeError(f"import path {ref!r} must look like `module.path:Name`", path=path)
        self._check_consent(ref, module_name, path)
        module = self._import(module_name, path)
        obj = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise RecipeError(f"module {module_name!r} has no {attr!r}", path=path)
            obj = getattr(obj, part)
        self.loaded[ref] = obj
        return obj

    def _check_consent(self, ref: str, module_name: str, path: KeyPath) -> None:
        """Refuse, before anything runs, code the user did not consent to on the command line."""
        if self.trust:
            return
        if self.origin is not None:
            raise RecipeError(
                f"{self.origin} names custom code: {ref!r} would import and run {module_name!r}; refused — pass "
                "--trust to allow it, only if you trust where this run folder came from",
                path=path,
            )
        if not self.is_allowed(module_name):
            raise RecipeError(
                f"custom component {ref!r} would run code from {module_name!r}; list it under `imports:` "
                "in the recipe or pass --trust",
                path=path,
            )
        reason = outside_reason(module_name, self.base_dir)
        if reason is not None:
            stem = module_name.removesuffix(".py")
            index = self.entries.get(stem, self.entries.get(stem.split(".")[0]))
            where = ("imports", index) if index is not None else path
            raise RecipeError(f"{reason}; importing it needs --trust", path=where)

    def _import(self, module_name: str, path: KeyPath) -> ModuleType:
        if module_name.endswith(".py"):
            file = (self.base_dir / module_name).resolve()
            if not file.is_file():
                raise RecipeError(f"custom module file not found: {file}", path=path)
            try:
                return load_file_module(file)
            except Exception as exc:
                raise RecipeError(f"importing {file.name} failed: {type(exc).__name__}: {exc}", path=path) from None
        if module_name.split(".")[0] not in sys.modules:
            announce(module_name)
        added = str(self.base_dir)
        sys.path.insert(0, added)
        try:
            return importlib.import_module(module_name)
        except ImportError as exc:
            raise RecipeError(f"cannot import {module_name!r}: {exc}", path=path) from None
        finally:
            if added in sys.path:
                sys.path.remove(added)

    def custom_objects(self) -> dict[str, Any]:
        """Every custom object loaded so far, by class name (for `keras.saving.load_model`)."""
        return {ref.split(":")[-1].split(".")[-1]: obj for ref, obj in self.loaded.items()}
