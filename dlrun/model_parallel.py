"""`train.distribute: {strategy: model_parallel, mesh: ..., layout: ...}`: keras.distribution.ModelParallel.

The mesh names the device axes (`{batch: 2, model: 4}`: 8 devices, each batch split in 2, each sharded
variable split in 4); the layout maps variable path regexes to one mesh axis (or null) per dimension. Keras
looks a layout up when it creates each variable; the distribution below checks it at that moment, so a
layout that cannot fit a variable (another rank, a dimension the axis does not divide, two keys for one
variable) is a located line instead of an XLA error, and `check_layout_used` refuses, once the model is
built, a key that matched no variable, listing the paths that exist.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from dlrun.errors import RecipeError
from dlrun.recipe.schema import DistributeSpec
from dlrun.util import did_you_mean

if TYPE_CHECKING:
    import keras

_WHERE = ("train", "distribute")


def model_parallel(spec: DistributeSpec) -> keras.distribution.ModelParallel:
    """The keras.distribution.ModelParallel the recipe describes, over all devices of all processes."""
    import keras

    mesh = spec.mesh or {}
    devices = keras.distribution.list_devices()
    size = math.prod(mesh.values())
    if size != len(devices):
        shape = " x ".join(f"{axis} {n}" for axis, n in mesh.items())
        raise RecipeError(
            f"the mesh ({shape}) has {size} devices but this run has {len(devices)}; the sizes must multiply "
            f"to {len(devices)}",
            path=(*_WHERE, "mesh"),
        )
    device_mesh = keras.distribution.DeviceMesh(shape=tuple(mesh.values()), axis_names=list(mesh), devices=devices)
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in (spec.layout or {}).items():
        layout_map[pattern] = tuple(axes)

    class CheckedModelParallel(keras.distribution.ModelParallel):
        """ModelParallel that checks each layout against the variable it is given to."""

        def get_variable_layout(self, variable: keras.Variable) -> keras.distribution.TensorLayout:
            if getattr(variable, "_layout", None) is None:
                key = _key_for(spec, variable.path)
                if key is not None:
                    _check_fits(spec, key, variable)
            return super().get_variable_layout(variable)

    return CheckedModelParallel(layout_map=layout_map, batch_dim_name=spec.batch_dim_name)


def _key_for(spec: DistributeSpec, path: str) -> str | None:
    """The layout key Keras' LayoutMap picks for `path` (an exact key first, else the one regex matching it)."""
    layout = spec.layout or {}
    if path in layout:
        return path
    keys = [pattern for pattern in layout if re.fullmatch(pattern, path)]
    if len(keys) > 1:
        raise RecipeError(
            f"variable {path!r} matches several layout keys ({', '.join(map(repr, keys))}); make each variable "
            "match one",
            path=(*_WHERE, "layout", keys[1]),
        )
    return keys[0] if keys else None


def _check_fits(spec: DistributeSpec, key: str, variable: keras.Variable) -> None:
    axes = (spec.layout or {})[key]
    mesh = spec.mesh or {}
    shape = tuple(variable.shape)
    where = (*_WHERE, "layout", key)
    if len(axes) != len(shape):
        raise RecipeError(
            f"variable {variable.path!r} has shape {list(shape)} ({len(shape)} dimensions) but this layout gives "
            f"{len(axes)}",
            path=where,
        )
    for dim, (axis, n) in enumerate(zip(axes, shape, strict=True)):
        if axis is not None and n % mesh[axis]:
            raise RecipeError(
                f"variable {variable.path!r} has {n} along dimension {dim}, which the {mesh[axis]} devices of mesh "
                f"axis {axis!r} do not divide",
                path=where,
            )


def check_layout_used(model: keras.Model, spec: DistributeSpec) -> None:
    """Refuse a layout key that matched none of the model's variables, naming the paths that exist."""
    paths = [v.path for v in model.variables]
    for key in spec.layout or {}:
        if key in paths or any(re.fullmatch(key, p) for p in paths):
            continue
        shown = ", ".join(paths[:12]) + (f", ... ({len(paths)} in all)" if len(paths) > 12 else "")
        hint = did_you_mean(key, paths)
        raise RecipeError(
            f"layout key {key!r} matches no variable of the model{hint}; keys are regular expressions matched "
            f"against whole variable paths: {shown}",
            path=(*_WHERE, "layout", key),
        )
