"""tf.distribute.MultiWorkerMirroredStrategy, made usable by Keras 3's TensorFlow trainer.

Keras 3.15's `fit` breaks under MultiWorkerMirroredStrategy in two places, both in its calls to
`strategy.reduce` (a plain Keras script fails the same way):

- `_maybe_symbolic_build` reduces the first batch, a tuple of PerReplica values, in one call; with more than
  one worker the strategy hands the whole tuple to `convert_to_tensor` ("Attempt to convert a value
  (PerReplica...) with an unsupported type").
- `reduce_per_replica` reduces each step's logs with `axis=0`; the logs are scalars, so the collective
  reduction fails ("Invalid reduction dimension 0 for input with 0 dimensions").

The strategy below reduces nested structures leaf by leaf and reduces scalars across replicas without an
axis, which is what both call sites mean. Everything else is the stock strategy.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from dlrun.errors import RecipeError

if TYPE_CHECKING:
    import tensorflow as tf

_WHERE = ("train", "distribute", "strategy")


def cluster_size() -> int:
    """How many processes TF_CONFIG's cluster has (chief and workers); 0 without TF_CONFIG."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster") or {}
    except (json.JSONDecodeError, AttributeError):
        return 0
    return sum(len(cluster.get(kind) or []) for kind in ("chief", "worker"))


def check_tf_config() -> dict[str, Any]:
    """TF_CONFIG, parsed and checked: a cluster of workers (and optionally a chief) and this process's task."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise RecipeError("strategy multi_worker needs TF_CONFIG describing the cluster (see README)", path=_WHERE)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos})", path=_WHERE) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or (not cluster.get("worker") and not cluster.get("chief")):
        raise RecipeError('TF_CONFIG needs "cluster": {"worker": ["host:port", ...]}', path=_WHERE)
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise RecipeError(
            f'TF_CONFIG needs "task": {{"type": one of {sorted(cluster)}, "index": N}} for this process', path=_WHERE
        )
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise RecipeError(
            f"TF_CONFIG task index {index!r} is outside the {len(cluster[task['type']])} "
            f"{task['type']} address(es) of the cluster",
            path=_WHERE,
        )
    return config


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """A MultiWorkerMirroredStrategy whose `reduce` handles the structures Keras 3 passes it."""
    import tensorflow as tf

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op: Any, value: Any, axis: int | None) -> Any:
            parent = super()

            def one(leaf: Any) -> Any:
                sample = leaf.values[0] if isinstance(leaf, tf.distribute.DistributedValues) else leaf
                shape = getattr(sample, "shape", None)
                scalar = shape is not None and shape.rank == 0
                return parent.reduce(reduce_op, leaf, axis=None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return KerasMultiWorkerMirroredStrategy()
