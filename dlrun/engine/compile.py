"""Model setup shared by every session and by `dlrun check`: seeding, `model.compile` from the recipe,
which layers train in a stage."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dlrun.errors import RecipeError
from dlrun.graph.check import Graph, layer_name
from dlrun.graph.components import make
from dlrun.importer import Importer
from dlrun.recipe.schema import CompileSpec, Component

if TYPE_CHECKING:
    import keras

# Steps per compiled call when the recipe says "auto": the per-call Python overhead dominates small models
# on CPU (about 2x on the seeds' MLP); results are the same steps in the same order.
AUTO_STEPS_PER_EXECUTION = 32
# ... except on a host without an accelerator for a model whose training batch costs at least this many
# multiply-adds (forward pass): a step then takes tens of milliseconds on CPU, the per-call overhead (a few)
# no longer matters, and several steps per call cost more than they save: Keras' `predict` unrolls one
# forward pass per step into its graph (MobileNetV2 on 64x64 images, 8.5e8 per batch of 32: ~5 s CPU more
# to trace than with one step per call). The seeds' MLP is 5e7 per batch of 128, a small CNN 2.6e8.
ONE_STEP_FROM_MULTIPLY_ADDS = 4e8
# ... and, on such a host, for a stage of fewer training steps than this: tracing Keras' multi-step loop costs
# ~0.5-1 s CPU, which a short run does not win back (wine, 178 rows, 20 epochs of 9 steps: 15.1 s CPU with one
# step per call against 16.0 s with 32, two runs each, 2026-12-03; the seeds' MLP trains 2,345 steps).
ONE_STEP_BELOW_TRAINING_STEPS = 1000


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; optionally make TensorFlow's or torch's ops deterministic."""
    import keras

    from dlrun.backend import quiet_native_startup

    with quiet_native_startup():  # under jax and torch, this is where TensorFlow (if installed) loads
        keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if deterministic and keras.backend.backend() == "torch":
        import os

        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' deterministic mode asks for it
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def per_output(value: Any, outputs: list[str], factory: Any) -> dict[str, Any]:
    """Expand a value given for all outputs into one fresh object per output."""
    return {out: factory(value) for out in outputs}


def _auto_steps(
    model: keras.Model, batch_size: int, deterministic: bool = False, training_steps: int | None = None
) -> int:
    """32 steps per call, except under a tf.distribute strategy (Keras' multi-step loop fails there), in
    deterministic mode, whose per-epoch stream must not be read in chunks that straddle epochs, under torch,
    whose Keras trainer runs one step per call only, and on a CPU-only host for a large model
    (`ONE_STEP_FROM_MULTIPLY_ADDS`) or a short stage (`training_steps` below `ONE_STEP_BELOW_TRAINING_STEPS`)."""
    import keras

    if deterministic or keras.backend.backend() == "torch":
        return 1

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            return 1
    cpu_only = all(d.lower().startswith("cpu") for d in keras.distribution.list_devices())
    if cpu_only and multiply_adds(model) * batch_size >= ONE_STEP_FROM_MULTIPLY_ADDS:
        return 1
    if cpu_only and training_steps is not None and training_steps < ONE_STEP_BELOW_TRAINING_STEPS:
        return 1
    return AUTO_STEPS_PER_EXECUTION


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one sample's forward pass, estimated: each layer's weights times the positions it
    is applied at (a Dense layer once, a convolution at each output pixel), nested models counted layer by
    layer; embedding tables are looked up, not multiplied."""
    import keras

    total = 0
    for layer in _leaf_layers(model):
        weights = layer.count_params() if layer.built else 0
        if not weights or isinstance(layer, keras.layers.Embedding):
            continue
        try:
            output = layer.output  # a layer called more than once has no single output: counted once
        except (AttributeError, ValueError):
            output = None
        shape = tuple(getattr(output, "shape", None) or ())
        total += weights * math.prod(d for d in shape[1:-1] if d)
    return total


def _leaf_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    inner = getattr(layer, "layers", None)
    if not inner:
        yield layer
        return
    for sub in inner:
        yield from _leaf_layers(sub)


def compile_model(
    model: keras.Model,
    spec: CompileSpec,
    outputs: list[str],
    importer: Importer,
    *,
    optimizer: Component | None = None,
    loss_weights: dict[str, float] | None = None,
    deterministic: bool = False,
    batch_size: int = 32,
    training_steps: int | None = None,
) -> None:
    """`model.compile` from the recipe's compile section (optionally a stage's optimizer/weights); `batch_size`
    (the training batch) and `training_steps` (the stage's, when known) size `steps_per_execution: auto`."""
    opt = make("optimizers", optimizer or spec.optimizer, importer, ("compile", "optimizer"))
    if isinstance(spec.loss, dict):
        loss: Any = {o: make("losses", spec.loss[o], importer, ("compile", "loss", o)) for o in outputs}
    elif len(outputs) > 1:
        loss = per_output(spec.loss, outputs, lambda c: make("losses", c, importer, ("compile", "loss")))
    else:
        loss = make("losses", spec.loss, importer, ("compile", "loss"))
    if isinstance(spec.metrics, dict):
        metrics: Any = {
            o: [make("metrics", c, importer, ("compile", "metrics", o)) for c in spec.metrics.get(o, [])]
            for o in outputs
        }
    elif len(outputs) > 1:
        metrics = per_output(
            spec.metrics, outputs, lambda cs: [make("metrics", c, importer, ("compile", "metrics")) for c in cs]
        )
    else:
        metrics = [make("metrics", c, importer, ("compile", "metrics")) for c in spec.metrics]
    weights = loss_weights if loss_weights is not None else spec.loss_weights
    if weights is not None:
        weights = {o: float(weights.get(o, 1.0)) for o in outputs}
    steps_per_execution = _steps_per_execution(
        spec.steps_per_execution, model, batch_size, deterministic, training_steps
    )
    model.compile(
        optimizer=opt,
        loss=loss,
        loss_weights=weights,
        metrics=metrics,
        jit_compile=spec.jit_compile,
        steps_per_execution=steps_per_execution,
    )


def _steps_per_execution(
    value: int | str, model: keras.Model, batch_size: int, deterministic: bool, training_steps: int | None = None
) -> int:
    """The recipe's steps per call ('auto' resolved per backend and model size); torch refuses more than one."""
    import keras

    if value == "auto":
        return _auto_steps(model, batch_size, deterministic, training_steps)
    if int(value) > 1 and keras.backend.backend() == "torch":
        raise RecipeError(
            f"steps_per_execution {value} needs the tensorflow or jax backend (Keras' torch trainer runs one "
            "step per call); use 'auto' or 1",
            path=("compile", "steps_per_execution"),
        )
    return int(value)


def apply_trainable(
    model: keras.Model, graph: Graph, selection: dict[str, list[str] | str] | None, where: tuple
) -> None:
    """Freeze/unfreeze layers by node name, block name, glob pattern or 'all'."""
    if not selection:
        return
    unknown = set(selection) - {"freeze", "unfreeze"}
    if unknown:
        raise RecipeError(f"`trainable` takes `freeze` and `unfreeze`, not {sorted(unknown)}", path=where)
    node_of = {layer_name(n.name): n.name for n in graph.nodes}
    layer_names = [node_of.get(layer.name, layer.name) for layer in model.layers]  # as the recipe names them
    for action in ("freeze", "unfreeze"):
        patterns = selection.get(action, [])
        patterns = [patterns] if isinstance(patterns, str) else patterns
        for pattern in patterns:
            if pattern == "all":
                chosen = layer_names
            else:
                block_members = [
                    n.name for n in graph.nodes if any(b == pattern or b.startswith(f"{pattern}.") for b in n.block)
                ]
                chosen = [n for n in layer_names if fnmatch.fnmatchcase(n, pattern)] + block_members
            if not chosen:
                raise RecipeError(f"{pattern!r} matches no layer, block or pattern", path=(*where, action))
            for name in chosen:
                if name in layer_names:
                    model.get_layer(layer_name(name)).trainable = action == "unfreeze"


def non_trainable(model: keras.Model) -> int:
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
