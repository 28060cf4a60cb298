"""What a run leaves for inference beside `model.keras`, written once at train time and read by every verb:
the class names (`classes.json`), what each output is (`outputs.json`, see engine.outputs), fitted step
statistics (`preprocessing.npz`); loading the model back; evaluating it on a split.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.data.prepare import Prepared, Vocabulary
from dlrun.engine.rundir import RunDir, atomic_write_bytes, atomic_write_text, environment
from dlrun.errors import RecipeError
from dlrun.importer import Importer
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import DataSpec

if TYPE_CHECKING:
    import keras


STATS_FILE = "preprocessing.npz"
CLASSES_FILE = "classes.json"
FEW_BATCHES = 32
"""A split of at most this many batches is predicted with `predict_on_batch` and scored step by step, without
Keras' predict and evaluate loops: building their datasets and tracing them cost ~0.4 s CPU more than running a
few batches (issue 21: a tiny run's fixed cost). Beyond ~50 batches the traced loops are cheaper."""


def folder_class_names(spec: DataSpec, base_dir: Path) -> list[str] | None:
    """Class subfolder names of an `images`/`text` recipe's training folder (sorted, as the reader lists them)."""
    from dlrun.data import sources

    if spec.source not in ("images", "text"):
        return None
    if spec.files is not None:
        root = sources.find(spec.path, base_dir, ("data", "path")) if spec.path else base_dir
        folder = sources.find(spec.files["train"], root, ("data", "files", "train"))
    elif spec.path is not None:
        folder = sources.find(spec.path, base_dir, ("data", "path"))
    else:
        return None
    if folder.is_file():
        folder = sources.extract(folder)
    folder = sources._folder_root(folder)
    if (folder / "train").is_dir():
        folder = folder / "train"
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def class_names(spec: DataSpec, base_dir: Path, prepared: Prepared) -> dict[str, Vocabulary]:
    """Every target's class names: the label vocabularies, else (folder data) the class folders."""
    classes = {k: list(v) for k, v in (getattr(prepared, "classes", None) or {}).items()}
    folder: Vocabulary | None = None
    for name, feature in spec.targets.items():
        if name in classes or feature.columns != ["label"] or spec.source not in ("images", "text"):
            continue
        if folder is None:
            train = prepared.splits.get("train")
            reader = getattr(getattr(train, "table", None), "reader", None)
            folder = getattr(reader, "class_names", None)
            if folder is None:
                try:
                    folder = folder_class_names(spec, base_dir) or []
                except (RecipeError, OSError):  # names are a nicety: indices still work
                    folder = []
        if folder:
            classes[name] = list(folder)
    return classes


def write_run_record(
    run: RunDir,
    loaded: LoadedRecipe,
    prepared: Prepared,
    model: keras.Model,
    overrides: tuple[str, ...],
) -> None:
    """A new run folder's record, before training: the resolved recipe (data paths absolute), its local code,
    run.json (source, overrides, seed, environment), data.json + splits.npz (fingerprints, counts, every
    split's rows), and `save_fitted`."""
    from dlrun.engine.resume import recorded_recipe
    from dlrun.recipe.compose import dump_yaml

    recipe = loaded.recipe
    atomic_write_text(run.recipe, dump_yaml(recorded_recipe(loaded)))
    _copy_local_code(loaded, run)
    info = {"source": loaded.source, "overrides": list(overrides), "seed": recipe.seed, "environment": environment()}
    run.write_json("run.json", info)
    if prepared.record is not None:  # data.json + splits.npz: fingerprints, counts, the rows of every split
        from dlrun.data.record import save as save_data_record

        save_data_record(run.path, prepared.record, atomic_write_bytes, run.write_json)
    save_fitted(run, loaded, prepared, model)


def _copy_local_code(loaded: LoadedRecipe, run: RunDir) -> None:
    """Copy the recipe's local `.py` imports into the run folder, so the run replays and loads on its own."""
    for entry in loaded.recipe.imports:
        module = entry.split(":")[0]
        if not module.endswith(".py"):
            continue  # an installed package: the environment provides it
        source = (loaded.base_dir / module).resolve()
        target = (run.path / module).resolve()
        if source.is_file() and run.path.resolve() in target.parents:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, source.read_bytes())


def save_fitted(run: RunDir, loaded: LoadedRecipe, prepared: Prepared, model: keras.Model) -> None:
    """Write what `eval` and `predict` need from the training data into the run: `classes.json` (target class
    names), `outputs.json` (what each output is) and, when any step fitted statistics, `preprocessing.npz`."""
    from dlrun.engine.outputs import save_outputs

    spec = loaded.recipe.data
    classes = class_names(spec, loaded.base_dir, prepared)
    run.write_json(CLASSES_FILE, classes)
    save_outputs(run.path, loaded, model, prepared, classes)
    arrays = {
        f"{feature}/{step}/{key}": np.asarray(value)
        for feature, steps in (prepared.stats or {}).items()
        for step, fitted in steps.items()
        for key, value in fitted.items()
    }
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(run.path / STATS_FILE, buffer.getvalue())


def evaluate_model(
    model: keras.Model, prepared: Prepared, split: str, outputs: list[str], inputs: list[str], batch_size: int
) -> dict[str, float]:
    """`model.evaluate` on `split`, returned as `{metric_name: value}` (Keras' own names).

    Not for a model that keras.distribution splits over devices: evaluate a local copy (train.data_parallel)."""
    x, y = prepared.feed(split, inputs, outputs, batch_size, training=False).keras_args()
    result = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


@dataclass
class Evaluation:
    """A model on one split: Keras' metrics, the predictions and the targets per output, in the split's order."""

    metrics: dict[str, float]
    predicted: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]


def evaluate_and_predict(
    model: keras.Model,
    prepared: Prepared,
    split: str,
    outputs: list[str],
    inputs: list[str],
    batch_size: int,
    custom_objects: dict[str, Any],
) -> Evaluation:
    """Keras' metrics and the predictions on `split` from one forward pass over it: `predict`, then the
    model's compiled loss and metrics applied to the predictions batch by batch, the numbers `evaluate` gives.
    A model that adds losses of its own (regularizers, `add_loss`) or masks its outputs is also evaluated:
    predictions alone do not carry those. (Both passes cost a trace of the model: ~4 s CPU for MobileNetV2.)"""
    predicted, targets = predict_split(model, prepared, split, outputs, inputs, batch_size)
    if _losses_or_masks(model):
        metrics = evaluate_model(model, prepared, split, outputs, inputs, batch_size)
    else:
        metrics = metrics_on_predictions(model, predicted, targets, batch_size, custom_objects)
    return Evaluation(metrics, predicted, targets)


def predict_split(
    model: keras.Model, prepared: Prepared, split: str, outputs: list[str], inputs: list[str], batch_size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The model's predictions on `split` and the split's targets, per output, in the split's order."""
    data = prepared.feed(split, inputs, outputs, batch_size, training=False)
    if data.streamed:  # the unshuffled pipeline keeps the split's order, which `targets` reads without inputs
        predicted = _predict_stream(model, data.pipeline, batch_size)
    else:
        predicted = _predict_in_memory(model, data.x, batch_size)
    y = {o: np.asarray(v) for o, v in prepared.targets(split, outputs, batch_size).items()}
    if len(outputs) == 1:
        predicted = {outputs[0]: predicted[outputs[0]] if isinstance(predicted, dict) else predicted}
    elif isinstance(predicted, list | tuple):
        predicted = dict(zip(outputs, predicted, strict=True))
    samples = len(y[outputs[0]])
    return {o: np.asarray(p)[:samples] for o, p in predicted.items()}, y  # [:samples]: the padded rows go


def metrics_on_predictions(
    model: keras.Model,
    predicted: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    batch_size: int,
    custom_objects: dict[str, Any],
) -> dict[str, float]:
    """`model`'s compiled loss and metrics (its compile config, loss weights included) on given predictions:
    an identity model with the same output names is compiled alike and evaluated on them, in steps of the
    evaluation batch or, where the numbers do not depend on the batching, of the whole split (scoring_batch)."""
    import keras

    from dlrun.engine.scoring_batch import scoring_batch_size

    outputs = list(predicted)
    inputs = [keras.Input(shape=predicted[o].shape[1:], name=f"{o}_prediction") for o in outputs]
    heads = [keras.layers.Identity(name=o)(i) for o, i in zip(outputs, inputs, strict=True)]
    identity = keras.Model(inputs[0] if len(inputs) == 1 else inputs, heads[0] if len(heads) == 1 else heads)
    config = dict(model.get_compile_config())
    config.pop("optimizer", None)  # nothing is trained: the trained optimizer is not copied
    config["steps_per_execution"] = 1  # a step is a few ops: tracing Keras' multi-step loop would cost more
    with keras.saving.custom_object_scope(custom_objects):
        identity.compile_from_config(config)
    x = predicted[outputs[0]] if len(outputs) == 1 else [predicted[o] for o in outputs]
    y = targets[outputs[0]] if len(outputs) == 1 else {o: targets[o] for o in outputs}
    samples = len(predicted[outputs[0]])
    step = scoring_batch_size(config, custom_objects, predicted, targets, batch_size)
    if _few_batches(model, samples, step) and (len(outputs) == 1 or samples % step == 0):
        identity.reset_metrics()
        for batch in _batches((x, y), samples, step):
            identity.test_step(batch)  # the step `evaluate` runs, op by op: the same numbers
        result = identity.get_metrics_result()
    else:
        result = identity.evaluate(x, y, batch_size=step, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


def _few_batches(model: keras.Model, samples: int, batch_size: int) -> bool:
    """Whether to step through a split batch by batch instead of Keras' loops (see FEW_BATCHES): a few batches,
    on one device (a tf.distribute strategy splits and pads batches in those loops), not under JAX (whose
    `test_step` is stateless: it takes the state as an argument).

    Scored so, a model with several outputs gives `evaluate`'s numbers only when every batch is whole: Keras
    weighs each output's loss by the batch size only where that size is known, so its traced loop averages
    them over batches and a step run op by op over samples."""
    import keras

    replicas = getattr(getattr(model, "distribute_strategy", None), "num_replicas_in_sync", 1)
    few = 0 < samples <= FEW_BATCHES * batch_size
    return few and replicas == 1 and keras.backend.backend() != "jax"


def _pads_last_batch(model: keras.Model) -> bool:
    """Whether to predict a split's smaller last batch padded to a whole one (its extra rows dropped after).

    Keras' `predict` hands each batch to its traced step as a tensor of known shape, so a smaller last batch
    traces the model a second time (`evaluate` passes the iterator in and traces once): ~1.5 s CPU for
    MobileNetV2 on 64x64 images, 100 of them in batches of 32 (issue 21, transfer row). Not under torch (no
    tracing), nor with several steps per call, whose shorter last call traces anew in any case."""
    import keras

    return keras.backend.backend() in ("tensorflow", "jax") and getattr(model, "steps_per_execution", 1) == 1


def _predict_stream(model: keras.Model, pipeline: Any, batch_size: int) -> Any:
    """`model.predict` over a batched tf.data pipeline of (inputs, targets, ...): every batch of the same size
    (`_pads_last_batch`: the last one's first row repeated), so the caller drops rows past the split's end."""
    import tensorflow as tf

    inputs = pipeline.map(lambda *batch: batch[0])
    dense = all(isinstance(spec, tf.TensorSpec) for spec in tf.nest.flatten(inputs.element_spec))
    if dense and _pads_last_batch(model):

        def pad(t: tf.Tensor) -> tf.Tensor:
            return tf.concat([t, tf.repeat(t[:1], batch_size - tf.shape(t)[0], axis=0)], axis=0)

        inputs = inputs.map(lambda x: tf.nest.map_structure(pad, x))
    return model.predict(inputs, verbose=0)


def _predict_in_memory(model: keras.Model, x: Any, batch_size: int) -> Any:
    """`model.predict(x, batch_size)`; a few batches run through `predict_on_batch` (see FEW_BATCHES). A smaller
    last batch is predicted padded to a whole one (`_pads_last_batch`), so the model is traced once: the caller
    drops rows past the split's end."""
    import keras

    samples = len(keras.tree.flatten(x)[0])
    whole = samples - samples % batch_size
    pads = _pads_last_batch(model) and 0 < whole < samples

    def padded(batch: Any) -> Any:
        return keras.tree.map_structure(lambda a: _repeat_first_row(a, batch_size), batch)

    def concatenate(parts: list[Any]) -> Any:
        return keras.tree.map_structure(lambda *batches: np.concatenate(batches), *parts)

    if not _few_batches(model, samples, batch_size):
        if not pads:
            return model.predict(x, batch_size=batch_size, verbose=0)
        head = model.predict(keras.tree.map_structure(lambda a: a[:whole], x), batch_size=batch_size, verbose=0)
        # through `predict` again: `predict_on_batch` hands the traced step its batch in another structure
        tail = model.predict(padded(keras.tree.map_structure(lambda a: a[whole:], x)), batch_size=batch_size, verbose=0)
        return concatenate([head, tail])
    batches = _batches(x, samples, batch_size)
    return concatenate([model.predict_on_batch(padded(b) if pads else b) for b in batches])


def _repeat_first_row(array: Any, rows: int) -> np.ndarray:
    """`array` with its first row repeated until it has `rows` rows (any dtype: strings too)."""
    array = np.asarray(array)
    return np.concatenate([array, np.repeat(array[:1], rows - len(array), axis=0)]) if len(array) < rows else array


def _batches(arrays: Any, samples: int, batch_size: int) -> Iterator[Any]:
    """`arrays` (a structure of arrays with `samples` rows) cut into consecutive batches, as Keras' loops cut it."""
    import keras

    for start in range(0, samples, batch_size):
        yield keras.tree.map_structure(lambda a, s=start: a[s : s + batch_size], arrays)


def _losses_or_masks(model: keras.Model) -> bool:
    """Whether the model adds losses of its own or masks an output (then only `evaluate` gives its numbers)."""
    try:
        from keras.src.backend import get_keras_mask
    except ImportError:  # another Keras layout: assume the worst
        return True
    return bool(model.losses) or any(get_keras_mask(t) is not None for t in model.outputs)


def load_run_model(path: Path, custom_objects: dict[str, Any], *, unsafe: bool = False) -> keras.Model:
    """Load a `.keras` file with Keras' safe mode unless `unsafe` (Lambda layers carry code)."""
    import keras

    import dlrun.data.layers  # noqa: F401 (registers dlrun's preprocessing layers, e.g. FillMissing, for loading)
    from dlrun.backend import load_model
    from dlrun.trust import check_keras_version, model_load_error

    check_keras_version(keras.__version__, unsafe=unsafe)  # older Keras: known safe-mode bypasses
    try:
        model = load_model(path, custom_objects=custom_objects, safe_mode=not unsafe)
    except (ValueError, TypeError, OSError) as exc:
        if (user := model_load_error(path, exc)) is not None:  # truncated, corrupt, or custom code not imported
            raise user from None
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise RecipeError(
                f"{path.name} contains a Lambda layer with serialized Python code; refused in safe mode "
                "(pass --unsafe only if you trust where the file came from)"
            ) from None
        hint = ""
        if "repeated term" in text or "vocab size" in text:
            hint = (
                "; the saved vocabulary of a StringLookup/TextVectorization layer has terms with line breaks or "
                "empty strings, which Keras' vocabulary file cannot hold: retrain the run with this dlrun (it "
                "keeps vocabularies in the model config)"
            )
        raise RecipeError(f"cannot load {path}: {text or type(exc).__name__}{hint}") from None  # Keras' whole cause
    if keras.backend.backend() == "torch" and getattr(model, "steps_per_execution", 1) > 1:
        # Trained on tensorflow/jax with several steps per call (the 'auto' default); Keras' torch trainer
        # runs one step per call only, and the number of steps per call does not change any result.
        model.steps_per_execution = 1
    return model


def custom_refs(loaded: LoadedRecipe) -> list[str]:
    """Every import path the recipe uses (layers, losses, metrics), so a saved model can be loaded."""
    refs = [n.type for n in loaded.graph.nodes if n.kind == "custom"]
    for sub in loaded.graph.submodels.values():
        refs += [n.type for n in sub.nodes if n.kind == "custom"]
    comp = loaded.recipe.compile
    losses = comp.loss.values() if isinstance(comp.loss, dict) else [comp.loss]
    metrics = [m for ms in comp.metrics.values() for m in ms] if isinstance(comp.metrics, dict) else comp.metrics
    refs += [c.type for c in [*losses, *metrics] if ":" in c.type]
    return refs


@dataclass
class TrainedRun:
    """A finished run, loaded: its folder, its recipe, its model, and the importer its custom code came through."""

    run: RunDir
    loaded: LoadedRecipe
    model: keras.Model
    importer: Importer


def load_run(run_path: Path, *, trust: bool = False, unsafe: bool = False) -> TrainedRun:
    """A finished run's recipe and model (custom components imported under the recipe's allow-list)."""
    from dlrun.backend import quiet_native_startup
    from dlrun.loading import load_recipe
    from dlrun.trust import verify_run

    run = RunDir.open(Path(run_path))
    if not run.model.is_file():
        raise RecipeError(f"{run_path} has no model.keras (training did not finish?)")
    with quiet_native_startup():
        import keras  # noqa: F401  (loaded here, its start-up lines hidden)

    loaded = load_recipe(run.recipe)
    verify_run(run.path)  # integrity.json: a changed model.keras or module is refused
    importer = Importer(loaded.recipe.imports, loaded.base_dir, trust=trust, origin=run.path)  # code needs --trust
    for ref in custom_refs(loaded):
        importer.load(ref)
    return TrainedRun(run, loaded, load_run_model(run.model, importer.custom_objects(), unsafe=unsafe), importer)
