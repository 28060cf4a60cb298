"""The execution environment a recipe asks for: Keras backend, dtype policy, distribution strategy.

The backend must be chosen before Keras is first imported, so `activate` runs before anything heavy;
it refuses clearly when Keras is already loaded with another backend or the backend is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import RecipeError
from dlrun.recipe.schema import DistributeSpec, Recipe

if TYPE_CHECKING:
    import keras

_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def wanted_backend(recipe: Recipe) -> str:
    """The recipe's backend, else $KERAS_BACKEND, else tensorflow."""
    return recipe.backend or os.environ.get("KERAS_BACKEND") or "tensorflow"


def activate(recipe: Recipe) -> str:
    """Select backend and dtype policy for this process (before Keras is imported); returns the backend."""
    backend = wanted_backend(recipe)
    if importlib.util.find_spec(_MODULES[backend]) is None:
        raise RecipeError(f"backend {backend!r} is not installed (pip install {_MODULES[backend]})", path=("backend",))
    if "keras" in sys.modules:
        import keras

        current = keras.backend.backend()
        if current != backend:
            raise RecipeError(
                f"Keras is already running with the {current!r} backend in this process; run with "
                f"KERAS_BACKEND={backend} (or in a new process) to use {backend!r}",
                path=("backend",),
            )
    else:
        os.environ["KERAS_BACKEND"] = backend
    distribute = recipe.train.distribute
    if distribute is not None and distribute.cpu_devices and backend == "tensorflow":
        _split_cpu(distribute.cpu_devices)
    if distribute is not None and distribute.cpu_devices and backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")  # keep the user's other flags (and their own device count)
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={distribute.cpu_devices}".strip()
    with quiet_native_startup():
        import keras

    keras.mixed_precision.set_global_policy(recipe.train.precision)
    return backend


def load_model(path: Path, **kwargs: Any) -> keras.Model:
    """`keras.saving.load_model`, also under torch for a model with dots in layer names (older runs' block copies,
    `stage.1.conv1`; graph.check.layer_name): Keras' torch layers key variables in a ParameterDict, which refuses
    dots, so it loads from a copy whose config names them as new runs do (`stage-1-conv1`). Weights are stored by
    position, not name; renaming plain data keeps to Keras' public API (no patch of its private TorchLayer)."""
    import keras

    renamed = _dotless_config(path) if keras.backend.backend() == "torch" else None
    if renamed is None:
        return keras.saving.load_model(str(path), **kwargs)
    with tempfile.TemporaryDirectory(prefix="dlrun-load-") as folder:
        copy = Path(folder) / path.name
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
            for item in source.infolist():
                target.writestr(item, renamed if item.filename == "config.json" else source.read(item))
        return keras.saving.load_model(str(copy), **kwargs)


def _dotless_config(path: Path) -> str | None:
    """A `.keras` file's config with every dotted layer name (and each reference to it) dashed; None if none."""
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read("config.json").decode("utf-8")
        dotted = {name for name in _layer_names(json.loads(text)) if "." in name}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # not a .keras archive: Keras reports it as it would
    for name in dotted:  # whole JSON strings only (values and keys), so other text is left as it is
        text = text.replace(json.dumps(name), json.dumps(name.replace(".", "-")))
    return text if dotted else None


def _layer_names(value: Any) -> Iterator[str]:
    """The names of the layers in a (nested) model config."""
    if isinstance(value, dict):
        for layer in value["layers"] if isinstance(value.get("layers"), list) else []:
            if isinstance(layer, dict) and isinstance((layer.get("config") or {}).get("name"), str):
                yield layer["config"]["name"]
        value = list(value.values())
    for item in value if isinstance(value, list) else []:
        yield from _layer_names(item)


@contextlib.contextmanager
def quiet_native_startup() -> Iterator[None]:
    """Hide the C++ start-up chatter TensorFlow writes to fd 2 while it loads (absl, cudart); Python
    exceptions still propagate. A no-op once TensorFlow is loaded, and when DLRUN_VERBOSE is set."""
    from dlrun.quiet_tensorflow import announced_load, silenced_fd2, verbose

    if verbose() or "tensorflow" in sys.modules:
        yield
        return
    with announced_load(), silenced_fd2():  # `loading TensorFlow` on a terminal first, while it still shows
        yield


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """Send what native code writes to fd 1 to fd 2 for a while (stdout stays machine-readable)."""
    import ctypes

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        try:
            yield
        finally:
            ctypes.CDLL(None).fflush(None)  # C stdio buffers what it printed: out with it before fd 1 returns
            os.dup2(saved, 1)
    finally:
        os.close(saved)


def _split_cpu(count: int) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise RecipeError(
            "train.distribute.cpu_devices must be set before TensorFlow starts; run in a new process",
            path=("train", "distribute", "cpu_devices"),
        ) from None


@contextlib.contextmanager
def strategy_scope(recipe: Recipe) -> Iterator[Any]:
    """The scope in which to build and compile the model (a no-op without `train.distribute`)."""
    distribute = recipe.train.distribute
    if distribute is None:
        yield None
        return
    import keras

    backend = keras.backend.backend()
    if distribute.strategy in ("data_parallel", "model_parallel"):
        if backend != "jax":
            raise RecipeError(f"strategy {distribute.strategy} (keras.distribution) needs the jax backend",
                              path=("train", "distribute", "strategy"))  # fmt: skip
        with _jax_processes():
            keras.distribution.set_distribution(_jax_distribution(distribute))
            yield None
        return
    if backend != "tensorflow":
        raise RecipeError(f"strategy {distribute.strategy} needs the tensorflow backend; use data_parallel with jax",
                          path=("train", "distribute", "strategy"))  # fmt: skip
    import tensorflow as tf

    if distribute.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        from dlrun.multi_worker import check_tf_config, multi_worker_strategy

        check_tf_config()
        strategy = multi_worker_strategy()
    with strategy.scope():
        yield strategy


def _jax_distribution(distribute: DistributeSpec) -> keras.distribution.DataParallel | keras.distribution.ModelParallel:
    import keras

    if distribute.strategy == "model_parallel":
        from dlrun.model_parallel import model_parallel

        return model_parallel(distribute)
    return keras.distribution.DataParallel()


@contextlib.contextmanager
def _jax_processes() -> Iterator[None]:
    """JAX's distributed runtime joined when several processes were launched (Keras' variables, Slurm, Open MPI)."""
    from dlrun.cluster import advertise_reachable_gloo_address, initialize_arguments, processes

    found = processes()
    if found.count == 1:
        yield
        return
    import keras
    from jax.experimental import multihost_utils

    arguments = initialize_arguments(found)
    advertise_reachable_gloo_address()
    # Gloo prints "Rank 0 is connected ..." to fd 1 whenever a collective first runs: stdout is for --json
    with _native_stdout_to_stderr():
        keras.distribution.initialize(**arguments)  # without arguments: jax.distributed's own cluster detection
        multihost_utils.sync_global_devices("dlrun: every process is up")
        yield


def is_chief() -> bool:
    """Whether this process writes the run folder (always, except non-chief multi-worker processes)."""
    import json

    from dlrun.cluster import processes

    if processes().rank != 0:
        return False

    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if not task:
        return True
    cluster = config.get("cluster") or {}
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0
