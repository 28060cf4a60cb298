"""Keras objects by name: optimizers, losses, metrics, callbacks and schedules, as a recipe declares them
(`type` plus Keras' own argument names), or custom ones by import path through `dlrun.importer.Importer`."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from dlrun.errors import RecipeError
from dlrun.graph import catalog
from dlrun.importer import Importer
from dlrun.recipe.load import KeyPath
from dlrun.recipe.schema import Component


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
