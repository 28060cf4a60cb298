"""Training arrays kept on the accelerator (JAX), so each batch is gathered there, not copied from the host.

Keras' array adapter slices the arrays it is given per batch with a NumPy permutation; given JAX arrays that
already live on the GPU, the slice is a gather on the device and the per-step host-to-device copy disappears.
The batches, their order and so the results are the same as with NumPy arrays (tests/test_device_data.py).
On a CPU, JAX slicing is slower than NumPy's, so `auto` keeps host arrays there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.data.prepare import SplitData
from dlrun.errors import RecipeError

# Share of the accelerator's memory the training arrays may take under `auto`: the rest is for the model,
# optimizer state and activations.
AUTO_FRACTION = 0.5


def _accelerator_bytes() -> int | None:
    """Memory of JAX's first device when it is an accelerator; None on a CPU or when JAX cannot say."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def check_setting(setting: bool | str) -> None:
    """`data_on_device: true` needs the JAX backend (checked before a run folder exists)."""
    import keras

    backend = keras.backend.backend()
    if setting is True and backend != "jax":
        raise RecipeError(
            f"train.data_on_device: true needs the jax backend (this run uses {backend}); use auto or false",
            path=("train", "data_on_device"),
        )


def wants_device_data(setting: bool | str, data: SplitData) -> bool:
    """Whether to place the arrays on the device: `true`/`false` as given, `auto` by backend and size."""
    import keras

    if setting is True or setting is False:
        return setting
    if keras.backend.backend() != "jax":
        return False
    import jax

    limit = _accelerator_bytes()
    size = sum(np.asarray(a).nbytes for a in jax.tree_util.tree_leaves((data.x, data.y)))
    return limit is not None and size <= AUTO_FRACTION * limit


def device_name() -> str:
    """JAX's default device, e.g. `cuda:0`."""
    import jax

    device = jax.devices()[0]
    return f"{device.platform}:{device.id}"


def to_device(value: Any) -> Any:
    """The same structure with every array placed on JAX's default device."""
    import jax

    return jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a)), value)
