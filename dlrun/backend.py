"""The execution environment a recipe asks for: Keras backend, dtype policy, distribution strategy.

The backend must be chosen before Keras is first imported, so `activate` runs before anything heavy;
it refuses clearly when Keras is already loaded with another backend or the backend is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from typing import Any

from dlrun.errors import RecipeError
from dlrun.recipe.schema import DistributeSpec, Recipe

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
    torch_layers_accept_dotted_names()
    return backend


# Dots in layer names (dlrun's block copies are named "stage.1.conv1") become this in torch's parameter keys.
_TORCH_DOT = "_dot_"


def torch_layers_accept_dotted_names() -> None:
    """Under torch, let layers whose names hold a dot own variables (a no-op on other backends).

    Keras' torch backend registers every layer's variables in a `torch.nn.ParameterDict` keyed by variable
    path, and torch refuses keys with a dot, so a block copy ("stage.1.conv1", from `repeat:`) failed to build
    and a model with such names, trained under TensorFlow or JAX, failed to load. The keys are torch's
    bookkeeping only (Keras reaches variables through its own lists), so dots are replaced in the keys.
    """
    import keras

    if keras.backend.backend() != "torch":
        return
    import torch
    from keras.src.backend.torch.layer import TorchLayer

    if getattr(TorchLayer, "_dlrun_dotted_names", False):
        return

    def key(variable: Any) -> str:
        return variable.path.replace(".", _TORCH_DOT)

    def track_variables(self: Any) -> None:
        self._torch_params = torch.nn.ParameterDict({key(v): v.value for v in self.variables})

    def post_track_variable(self: Any, variable: Any) -> None:
        if hasattr(self, "_torch_params") and key(variable) not in self.torch_params:
            self.torch_params[key(variable)] = variable.value

    def post_untrack_variable(self: Any, variable: Any) -> None:
        if hasattr(self, "_torch_params") and key(variable) in self.torch_params:
            self.torch_params.pop(key(variable))

    TorchLayer._track_variables = track_variables
    TorchLayer._post_track_variable = post_track_variable
    TorchLayer._post_untrack_variable = post_untrack_variable
    TorchLayer._dlrun_dotted_names = True


@contextlib.contextmanager
def quiet_native_startup() -> Iterator[None]:
    """Hide the C++ start-up chatter TensorFlow writes to fd 2 while it loads (absl, cudart); Python
    exceptions still propagate. A no-op once TensorFlow is loaded, and when DLRUN_VERBOSE is set."""
    from dlrun.quiet_tensorflow import silenced_fd2, verbose

    if verbose() or "tensorflow" in sys.modules:
        yield
        return
    with silenced_fd2():
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


def _jax_distribution(distribute: DistributeSpec) -> Any:
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
