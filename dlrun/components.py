"""Keras objects by name (optimizers, losses, metrics, callbacks) and custom code by import path.

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
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from dlrun.errors import RecipeError
from dlrun.graph import catalog
from dlrun.recipe.load import KeyPath
from dlrun.recipe.schema import Component
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


def _keras_module(section: str) -> ModuleType:
    import keras

    return {
        "optimizers": keras.optimizers,
        "losses": keras.losses,
        "metrics": keras.metrics,
        "callbacks": keras.callbacks,
        "schedules": keras.optimizers.schedules,
    }[section]


# Keras arguments that take a Python function. YAML cannot write one, so a string there is either an import
# path (`module:function`, under the consent rules of `Importer`) or, for the metric/loss wrappers, a Keras
# metric or loss name; anything else fails at once instead of as "'str' object is not callable" mid-training.
# (Keras' signatures do not mark these arguments, so they are listed here.)
CALLABLE_ARGUMENTS: dict[str, frozenset[str]] = {
    "LambdaCallback": frozenset({
        "on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end", "on_train_batch_begin",
        "on_train_batch_end",
    }),
    "LearningRateScheduler": frozenset({"schedule"}),
    "MeanMetricWrapper": frozenset({"fn"}),
    "LossFunctionWrapper": frozenset({"fn"}),
}  # fmt: skip


def _function(section: str, name: str, key: str, value: Any, importer: Importer, path: KeyPath) -> Callable[..., Any]:
    """The function an argument in CALLABLE_ARGUMENTS names."""
    if isinstance(value, str) and ":" in value:
        function = importer.load(value, path)
        if callable(function):
            return function
    elif isinstance(value, str) and key == "fn":
        import keras

        lookup = keras.losses.get if section == "losses" else keras.metrics.get
        try:
            return lookup(value)
        except ValueError:
            pass
    raise RecipeError(
        f"{name}.{key} takes a Python function: give `module:function` (with the module under `imports:`)"
        + (f" or a Keras {section[:-1]} name" if key == "fn" else "")
        + f", not {value!r}",
        path=path,
    )


def make(section: str, comp: Component, importer: Importer, path: KeyPath = (), **overrides: Any) -> Any:
    """Instantiate a component: Keras class with kwargs, Keras string identifier, or custom import."""
    kwargs = {**comp.kwargs, **overrides}
    if ":" in comp.type:
        obj = importer.load(comp.type, path)
        return obj(**kwargs) if isinstance(obj, type) else obj
    name = catalog.aliases(section).get(comp.type, comp.type)
    spec = catalog.entry(section, name)
    module = _keras_module(section)
    if spec is None or spec["kind"] == "function":
        return name  # a string identifier Keras resolves itself ("accuracy", "mse", ...)
    for key in CALLABLE_ARGUMENTS.get(name, ()) & kwargs.keys():
        kwargs[key] = _function(section, name, key, kwargs[key], importer, (*path, key))
    if section == "optimizers" and isinstance(kwargs.get("learning_rate"), dict):
        sched = Component.model_validate(kwargs["learning_rate"])
        kwargs["learning_rate"] = make("schedules", sched, importer, (*path, "learning_rate"))
    try:
        return getattr(module, name)(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{name}: {exc}", path=path) from None
