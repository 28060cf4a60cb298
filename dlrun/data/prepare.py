"""Tables -> model-ready splits: columns to named inputs and targets, steps, label encoding, weights.

In-memory tables become NumPy arrays (`splits[split] = (inputs by name, targets by name)`), fed to Keras
as arrays: the fast path. Streamed tables become tf.data pipelines (map -> [cache] -> shuffle -> batch ->
prefetch) built by `Prepared.feed`. Statistics-bearing steps (`standardize`) and label vocabularies are
fitted on the training split only and applied unchanged to validation and test: nothing leaks from
held-out data. (The `preprocess:` layers, adapted by `dlrun.data.preprocess`, follow the same rule.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dlrun.data.record import DataRecord, build_record
from dlrun.data.sources import Tables, load_tables, source_files
from dlrun.data.splits import apply_slices, class_labels, holdout, subset, subset_size
from dlrun.data.steps import NUMPY, TENSORFLOW, apply_step, fit_step
from dlrun.data.tables import ArrayReader, ArrayTable, StreamTable, Table, first_non_finite, is_string
from dlrun.errors import RecipeError
from dlrun.recipe.load import KeyPath
from dlrun.recipe.schema import DataSpec, FeatureSpec

if TYPE_CHECKING:
    import tensorflow as tf

    Record = dict[str, tf.Tensor]  # a batch of rows read from disk, by column
    Batch = tf.Tensor | dict[str, tf.Tensor]  # one tensor, or one per model input/output by name

Vocabulary = list[Any]  # class values in index order, as the recipe or the data spells them (text or numbers)
Arrays = np.ndarray | dict[str, np.ndarray]  # one array, or one per model input/output by name

warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed, but will be ignored")


# ----------------------------------------------------------------------------------------------------
# splits


def _nan_check(tables: Tables, spec: DataSpec) -> None:
    """Missing columns and missing/NaN values in numeric columns a feature reads are errors (column and row named)."""
    wheres: dict[str, KeyPath] = {}
    for section, features in (("inputs", spec.inputs), ("targets", spec.targets)):
        for name, feature in features.items():
            for col in feature.columns:
                if feature.fill is None:  # a declared fill handles missing values (inside the model)
                    wheres.setdefault(col, ("data", section, name, "from"))
                elif col not in tables["train"].names:
                    tables["train"].column(col, ("data", section, name, "from"))  # the did-you-mean error
    if spec.sample_weight:
        wheres.setdefault(spec.sample_weight, ("data", "sample_weight"))
    for table in tables.values():
        for col, where in wheres.items():
            if col not in table.names:
                table.column(col, where)  # raises the did-you-mean error
        if table.streamed:
            table.reader.check_finite(wheres)
            continue
        for col, where in wheres.items():
            x = table.column(col, where)
            if x.dtype.kind == "f" and (row := first_non_finite(x)) is not None:
                csv_file = table.origin.endswith((".csv", ".csv.gz"))
                at = f"line {row + 2} of {table.origin}" if csv_file else f"row {row} of {table.origin}"
                raise RecipeError(f"column {col!r} has a missing or NaN value at {at}", path=where)


def stratify_labels(spec: DataSpec, table: Table) -> np.ndarray | None:
    """Class labels of the (first) target, when `stratify` is on."""
    if not spec.stratify:
        return None
    name, feature = next(iter(spec.targets.items()))
    where: KeyPath = ("data", "targets", name)
    cols = [table.column(c, (*where, "from")) for c in feature.columns]
    values = cols[0] if len(cols) == 1 else np.stack([c.reshape(len(c)) for c in cols], axis=-1)
    return class_labels(values, ("data", "stratify"))


# integer labels with at most this many distinct values count as classes a subset must keep
MAX_CLASSES = 256


def class_values(spec: DataSpec, table: Table) -> np.ndarray | None:
    """The first target's labels when they are classes (text, declared `classes`, folder labels, or integers
    with few distinct values; every target under `stratify`), else None (a regression target)."""
    name, feature = next(iter(spec.targets.items()))
    if spec.stratify:
        return stratify_labels(spec, table)
    if len(feature.columns) != 1 or any(c not in table.names for c in feature.columns):
        return None
    column = table.spec(feature.columns[0])
    if column.shape not in ((), (1,)) or not (column.dtype == "string" or column.dtype.startswith(("int", "uint"))):
        return None
    values = table.column(feature.columns[0], ("data", "targets", name, "from"))
    values = values.reshape(len(values))
    if feature.classes is None and column.dtype != "string" and len(np.unique(values)) > MAX_CLASSES:
        return None
    return values


def _limit(spec: DataSpec, table: Table, seed: int) -> Table:
    assert spec.limit is not None
    size = subset_size(spec.limit, table.count)
    labels = class_values(spec, table)
    where: KeyPath = ("data", "limit")
    return table.take(subset(table.count, size, seed, labels, stratified=spec.stratify, where=where))


def load_recorded_splits(
    spec: DataSpec, base_dir: Path, seed: int, *, validation: bool = True
) -> tuple[Tables, DataRecord]:
    """Source splits -> head/limit -> slices -> test_split -> validation_split (seeded, optionally stratified),
    with the record of what was drawn from where (fingerprints, rows, class counts)."""
    source = load_tables(spec, base_dir)
    tables = _make_splits(spec, source, seed, validation=validation)
    labels = {split: class_values(spec, table) for split, table in tables.items()}
    return tables, build_record(spec, tables, source, source_files(spec, base_dir), labels)


def _make_splits(spec: DataSpec, tables: Tables, seed: int, *, validation: bool) -> Tables:
    for split, table in tables.items():
        table.source_split = split
    _nan_check(tables, spec)
    if spec.head is not None:
        tables = {s: t.take(np.arange(min(spec.head, t.count))) for s, t in tables.items()}
    if spec.limit is not None:
        tables = {s: _limit(spec, t, seed + 2) for s, t in tables.items()}
    if spec.splits is not None:
        tables = apply_slices(tables, spec.splits)
    for key, fraction, salt in (("test", spec.test_split, 1), ("validation", spec.validation_split, 0)):
        if fraction <= 0 or (key == "validation" and not validation):
            continue
        if key in tables:
            raise RecipeError(f"the data already has a {key} split; remove {key}_split", path=("data", f"{key}_split"))
        train = tables["train"]
        keep, held = holdout(train.count, fraction, seed + salt, stratify_labels(spec, train), ("data", f"{key}_split"))
        tables = {**tables, "train": train.take(keep), key: train.take(held)}
    return tables


# ----------------------------------------------------------------------------------------------------
# features


def _as_dtype(x: np.ndarray, dtype: str | None, where: KeyPath) -> np.ndarray:
    if dtype is None:
        return x
    if dtype == "string":
        out = np.empty(x.shape, dtype=object)
        out[...] = x if is_string(x) else x.astype(str)
        if x.dtype.kind == "f":
            out[np.isnan(x)] = ""  # a missing number is missing text, not the word 'nan'
        return out
    try:
        return x.astype(dtype)
    except (TypeError, ValueError):
        raise RecipeError(f"cannot read these values as {dtype}", path=(*where, "dtype")) from None


def gather_columns(table: Table, feature: FeatureSpec, where: KeyPath) -> np.ndarray:
    """The columns a feature reads, stacked along the last axis when there are several."""
    cols = [_as_dtype(table.column(c, (*where, "from")), feature.dtype, where) for c in feature.columns]
    if len(cols) == 1:
        return cols[0]
    if len({is_string(c) for c in cols}) > 1:
        raise RecipeError("columns stacked into one feature must be all numeric or all text", path=(*where, "from"))
    parts = [c.reshape(len(c), 1) if c.ndim == 1 else c for c in cols]
    if is_string(parts[0]):
        return np.concatenate(parts, axis=-1).astype(object)
    return np.concatenate([p.astype("float32") for p in parts], axis=-1)


def label_vocabulary(feature: FeatureSpec, train_values: np.ndarray) -> Vocabulary | None:
    """Class values in index order: `classes`, else sorted train values for text labels, else None."""
    if feature.classes is not None:
        return list(feature.classes)
    if is_string(train_values):
        return sorted({str(v) for v in train_values.reshape(-1)})
    return None


def encode_labels(x: np.ndarray, vocab: Vocabulary, split: str, where: KeyPath) -> np.ndarray:
    """Labels -> class indices by the vocabulary; a label outside it is an error."""
    index = {v: i for i, v in enumerate(vocab)}
    index.update({str(v): i for i, v in enumerate(vocab)})
    flat = x.reshape(-1)
    out = np.empty(flat.shape, dtype="int64")
    for i, v in enumerate(flat.tolist()):
        key = v if v in index else str(v)
        if key not in index:
            raise RecipeError(
                f"the {split} split has label {v!r}, which is not among the classes {vocab[:20]}", path=where
            )
        out[i] = index[key]
    return out.reshape(x.shape)


StepStats = dict[str, dict[str, np.ndarray]]  # "steps[i]" -> {mean, std}: what step i fitted on the training split


def apply_steps(feature: FeatureSpec, x: np.ndarray, where: KeyPath, stats: StepStats) -> np.ndarray:
    """A feature's steps on in-memory values (any split, or `dlrun predict`'s input), with fitted `stats`."""
    for i, step in enumerate(feature.steps):
        x = apply_step(step, x, (*where, "steps", i), stats.get(f"steps[{i}]"), NUMPY)
    return x


def _prepare_feature(
    feature: FeatureSpec, tables: Tables, where: KeyPath, *, target: bool, vocab: Vocabulary | None
) -> tuple[dict[str, np.ndarray], StepStats, Vocabulary | None]:
    raw = {split: gather_columns(t, feature, where) for split, t in tables.items()}
    if target:
        vocab = vocab if vocab is not None else label_vocabulary(feature, raw["train"])
        if vocab is not None:
            raw = {s: encode_labels(x, vocab, s, (*where, "from")) for s, x in raw.items()}
    stats: StepStats = {}  # fitted on the training split only
    train_x = raw["train"]
    for i, step in enumerate(feature.steps):
        fitted = fit_step(step, train_x)
        if fitted is not None:
            stats[f"steps[{i}]"] = fitted
        train_x = apply_step(step, train_x, (*where, "steps", i), fitted, NUMPY)
    out: dict[str, np.ndarray] = {}
    for split, x in raw.items():
        x = apply_steps(feature, x, where, stats)
        if x.dtype.kind == "f" and feature.fill is None and not np.isfinite(x).all():
            raise RecipeError(f"this feature has NaN or infinite values in the {split} split", path=where)
        out[split] = x
    return out, stats, vocab


# ----------------------------------------------------------------------------------------------------
# weights


def class_weights(spec: DataSpec, labels: np.ndarray, vocab: Vocabulary | None) -> np.ndarray:
    """Per-class weights (index = class): `balanced` = n / (classes * count), or the given mapping."""
    where: KeyPath = ("data", "class_weight")
    n_classes = max(int(labels.max()) + 1 if labels.size else 0, len(vocab or []))
    if spec.class_weight == "balanced":
        counts = np.bincount(labels, minlength=n_classes).astype("float64")
        weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 1.0)
        return weights.astype("float32")
    assert isinstance(spec.class_weight, dict)
    weights = np.ones(n_classes, dtype="float32")
    for key, value in spec.class_weight.items():
        if vocab is not None and str(key) in [str(v) for v in vocab]:
            index = [str(v) for v in vocab].index(str(key))
        elif isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            index = int(key)
        else:
            raise RecipeError(f"class_weight names class {key!r}, which the labels do not have", path=(*where, key))
        if not 0 <= index < n_classes:
            raise RecipeError(
                f"class_weight names class {key!r}; the labels have {n_classes} classes", path=(*where, key)
            )
        weights[index] = value
    return weights


def _class_index(y: np.ndarray) -> np.ndarray:
    if y.ndim >= 2 and y.shape[-1] > 1:
        return y.reshape(len(y), -1).argmax(axis=1)
    return y.reshape(len(y)).astype("int64")


# ----------------------------------------------------------------------------------------------------
# streamed splits


@dataclass
class StreamSplit:
    """One split read from disk: a table plus how its columns become inputs, targets and weights.

    The pipeline is `records -> batch -> example (vectorized) -> [cache] -> unbatch -> shuffle -> batch ->
    prefetch`: per-row work stays in tf.data's C++ (parsing, decoding, shuffling); the Python-defined
    mapping runs once per batch. The shuffle buffer is bounded by the memory budget.
    """

    table: StreamTable
    spec: DataSpec
    vocab: dict[str, Vocabulary | None]
    class_weight: np.ndarray | None
    seed: int
    split: str

    def columns(self) -> list[str]:
        cols = [c for f in [*self.spec.inputs.values(), *self.spec.targets.values()] for c in f.columns]
        if self.spec.sample_weight and self.split == "train":
            cols.append(self.spec.sample_weight)
        return list(dict.fromkeys(cols))

    def _feature(self, record: Record, feature: FeatureSpec, where: KeyPath, name: str, target: bool) -> tf.Tensor:
        """One feature of a batch of records (every tensor has the batch as its first axis)."""
        import tensorflow as tf

        values = []
        for c in feature.columns:
            v = record[c]
            if feature.dtype == "string" and v.dtype != tf.string:
                v = tf.strings.as_string(v)
            elif feature.dtype not in (None, "string"):
                v = tf.cast(v, feature.dtype)
            values.append(v)
        if len(values) == 1:
            x = values[0]
        else:
            parts = [tf.expand_dims(v, -1) if v.shape.rank == 1 else v for v in values]
            if parts[0].dtype != tf.string:
                parts = [tf.cast(p, tf.float32) for p in parts]
            x = tf.concat(parts, axis=-1)
        vocab = self.vocab.get(name) if target else None
        if vocab is not None:
            x = _label_lookup(vocab)(x)
        for i, step in enumerate(feature.steps):
            x = apply_step(step, x, (*where, "steps", i), None, TENSORFLOW)
        return x

    def input_batches(self, names: list[str], batch_size: int) -> tf.data.Dataset:
        """Batches `{input: values}` of model inputs only (new data without targets, e.g. `dlrun predict`'s)."""
        columns = list(dict.fromkeys(c for n in names for c in self.spec.inputs[n].columns))
        ds = self.table.dataset(columns).batch(batch_size)
        spec = self.spec.inputs
        return ds.map(lambda r: {n: self._feature(r, spec[n], ("data", "inputs", n), n, False) for n in names})

    def example(self, record: Record, inputs: list[str], outputs: list[str]) -> tuple[Batch, ...]:
        """A batch of records -> (x, y) or (x, y, sample weights), structured like the model's inputs/outputs."""
        import tensorflow as tf

        spec = self.spec
        xs = {n: self._feature(record, spec.inputs[n], ("data", "inputs", n), n, False) for n in inputs}
        ys = {n: self._feature(record, spec.targets[n], ("data", "targets", n), n, True) for n in outputs}
        x = xs[inputs[0]] if len(inputs) == 1 else xs
        y = ys[outputs[0]] if len(outputs) == 1 else ys
        if self.split != "train" or (self.class_weight is None and not spec.sample_weight):
            return (x, y)
        first = record[next(iter(record))]
        w = tf.ones(tf.shape(first)[:1], tf.float32)
        if self.class_weight is not None:
            name, feature = next(iter(spec.targets.items()))
            label = self._feature(record, feature.model_copy(update={"steps": []}), ("data",), name, True)
            label = tf.reshape(label, tf.shape(label)[:1])
            w = w * tf.gather(tf.constant(self.class_weight), tf.cast(label, tf.int32))
        if spec.sample_weight:
            w = w * tf.reshape(tf.cast(record[spec.sample_weight], tf.float32), tf.shape(w))
        return (x, y, w if len(outputs) == 1 else dict.fromkeys(outputs, w))

    def target_batches(self, outputs: list[str], batch_size: int) -> tf.data.Dataset:
        """Batches `{output: targets}` in the split's order, as `example` makes them, reading the target columns
        alone: an image folder's labels need no image decoded (issue 21: the eval split was decoded twice)."""
        import tensorflow as tf

        columns = list(dict.fromkeys(c for n in outputs for c in self.spec.targets[n].columns))
        spec = self.spec.targets

        def targets(record: Record) -> dict[str, tf.Tensor]:
            return {n: self._feature(record, spec[n], ("data", "targets", n), n, True) for n in outputs}

        return self.table.dataset(columns).batch(batch_size).map(tf.autograph.experimental.do_not_convert(targets))

    def cache_fits(self) -> bool:
        if self.spec.cache != "auto":
            return bool(self.spec.cache)
        if getattr(self.table.reader, "kind", None) == "images":
            # Decoded pixels (float32) take 4-50x their files' size: a cache of them is memory a hand-written
            # run, whose image_dataset_from_directory decodes every epoch, never spends (issue 21: 1.52x peak
            # memory on 70k PNG files). Decode every epoch too; `cache: true` trades the memory for the decoding.
            return False
        return self.table.count * self.table.row_bytes() <= self.spec.memory_budget_mb * 2**20 / 2

    def _batches(
        self, inputs: list[str], outputs: list[str], batch: int, shuffle_seed: int | None = None
    ) -> tf.data.Dataset:
        import tensorflow as tf

        ds = self.table.dataset(self.columns(), shuffle_seed=shuffle_seed)
        # No tensor-dependent Python control flow in `example`: autograph's source rewriting of it (and of what
        # it calls) would cost ~1 s of CPU each time a pipeline is built (issue 21's fixed cost), for nothing.
        example = tf.autograph.experimental.do_not_convert(lambda r: self.example(r, inputs, outputs))
        return ds.batch(batch).map(example, num_parallel_calls=tf.data.AUTOTUNE)

    def dataset(
        self, inputs: list[str], outputs: list[str], batch_size: int, *, training: bool, shuffle: bool
    ) -> tf.data.Dataset:
        import tensorflow as tf

        cache = self.cache_fits()
        shuffle = training and shuffle
        if cache and shuffle:  # it fits: read it once, then shuffle indices and gather, as Keras does for arrays
            return self._in_memory(inputs, outputs, batch_size)
        # a file list shuffles whole (cheap, before decoding); rows of a CSV/JSON stream use a bounded buffer
        whole = shuffle and not cache and getattr(self.table.reader, "shuffles_itself", False)
        ds = self._batches(inputs, outputs, 256 if (cache or shuffle) else batch_size, self.seed if whole else None)
        if cache:
            ds = ds.cache()
        if (cache or shuffle) and not whole:
            ds = ds.unbatch()
            if shuffle:
                budget_rows = int(self.spec.memory_budget_mb * 2**20 / 4 / self._example_bytes(ds.element_spec))
                buffer = max(1, min(self.spec.shuffle_buffer, self.table.count, budget_rows))
                ds = ds.shuffle(buffer, seed=self.seed, reshuffle_each_iteration=True)
            ds = ds.batch(batch_size)
        elif whole:
            ds = ds.unbatch().batch(batch_size)
        # filters and unbatching hide the length from Keras; the table knows it (progress, no warnings)
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-self.table.count // batch_size)))
        return ds.prefetch(tf.data.AUTOTUNE)

    def _in_memory(self, inputs: list[str], outputs: list[str], batch_size: int) -> tf.data.Dataset:
        import tensorflow as tf

        parts = list(self._batches(inputs, outputs, 1024).as_numpy_iterator())
        if not parts:
            raise RecipeError(f"the {self.split} split of {self.table.origin} is empty", path=("data",))
        joined = tf.nest.map_structure(lambda *a: np.concatenate(a), *parts)
        w = joined[2] if len(joined) > 2 else None
        w = next(iter(w.values())) if isinstance(w, dict) else w
        return _array_dataset(joined[0], joined[1], w, batch_size, shuffle=True, seed=self.seed)

    @staticmethod
    def _example_bytes(spec: object) -> float:
        """Memory of one element in a shuffle buffer: its values plus per-tensor overhead."""
        import tensorflow as tf

        total = 0.0
        for s in tf.nest.flatten(spec):
            n = float(np.prod([d or 1 for d in s.shape])) if s.shape.rank else 1.0
            total += 128 + n * (64 if s.dtype == tf.string else s.dtype.size)
        return total

    def element_spec(self, inputs: list[str], outputs: list[str]) -> tuple[object, ...]:
        """Per-sample specs (the batch axis removed) of (x, y[, w])."""
        import tensorflow as tf

        spec = self._batches(inputs, outputs, 2).element_spec
        return tf.nest.map_structure(lambda s: tf.TensorSpec(s.shape[1:], s.dtype), spec)


def _label_lookup(vocab: Vocabulary) -> Callable[[tf.Tensor], tf.Tensor]:
    """Labels -> class indices in tf: numeric labels by value (1, 1.0 and "1" are the same class), text by
    its characters. Every label was checked against the vocabulary before streaming (`encode_labels`)."""
    import tensorflow as tf

    values = tf.range(len(vocab), dtype=tf.int64)
    numeric = all(isinstance(v, int) or (isinstance(v, str) and v.lstrip("-").isdigit()) for v in vocab)
    if numeric:
        keys = tf.constant([int(v) for v in vocab], dtype=tf.int64)
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)

        def lookup(x: tf.Tensor) -> tf.Tensor:
            if x.dtype == tf.string:
                x = tf.strings.to_number(x, tf.float64)
            return table.lookup(tf.cast(tf.round(tf.cast(x, tf.float64)), tf.int64))

        return lookup
    keys = tf.constant([str(v) for v in vocab])
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)
    return lambda x: table.lookup(x if x.dtype == tf.string else tf.strings.as_string(x))


# ----------------------------------------------------------------------------------------------------
# the result


class ArraySplit(NamedTuple):
    """One in-memory split: model inputs and targets by name, every step applied."""

    inputs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]


@dataclass(frozen=True)
class SplitData:
    """One split as Keras' `fit`/`evaluate` take it (Keras' data-adapter idea): arrays `x`, `y` that Keras
    batches and shuffles, or a batched tf.data `pipeline` of (x, y[, weights])."""

    x: Arrays | None = None
    y: Arrays | None = None
    pipeline: tf.data.Dataset | None = None

    @property
    def streamed(self) -> bool:
        """Whether this is a pipeline (it batches and shuffles itself) rather than arrays."""
        return self.pipeline is not None

    def keras_args(self) -> tuple[Arrays | tf.data.Dataset | None, Arrays | None]:
        """The `x, y` arguments of `model.fit`/`evaluate`: the arrays, or the pipeline and no `y`."""
        return (self.pipeline, None) if self.streamed else (self.x, self.y)

    def validation_data(self) -> tuple[Arrays | None, Arrays | None] | tf.data.Dataset:
        """What `fit(validation_data=...)` takes: `(x, y)`, or the pipeline."""
        return self.pipeline if self.streamed else (self.x, self.y)

    def placed(self, place: Callable[[Any], Any]) -> SplitData:
        """The arrays moved by `place` (e.g. onto an accelerator); a pipeline unchanged."""
        return self if self.streamed else SplitData(place(self.x), place(self.y))

    def count(self) -> int:
        """Samples held as arrays."""
        assert self.x is not None
        return len(next(iter(self.x.values())) if isinstance(self.x, dict) else self.x)


@dataclass
class Prepared:
    """Model-ready data: `splits[split]` is an `ArraySplit` for in-memory data, or a `StreamSplit` for data
    read from disk; plus fitted statistics, label vocabularies and weights."""

    splits: dict[str, ArraySplit | StreamSplit]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    classes: dict[str, Vocabulary] = field(default_factory=dict)
    seed: int = 42
    batch_size: int = 32
    shuffle: bool = True
    record: DataRecord | None = None  # where the rows came from (fingerprints, split rows, class counts)
    preprocessed: dict[str, Any] = field(default_factory=dict)  # input -> (raw, output): resolve_input_shapes

    def count(self, split: str) -> int:
        """Number of samples in `split`."""
        data = self.splits[split]
        if isinstance(data, StreamSplit):
            return data.table.count
        return len(next(iter(data.inputs.values())))

    def streamed(self, split: str = "train") -> bool:
        return isinstance(self.splits[split], StreamSplit)

    def feed(
        self,
        split: str,
        inputs: list[str],
        outputs: list[str],
        batch_size: int | None = None,
        *,
        training: bool | None = None,
    ) -> SplitData:
        """What `model.fit`/`evaluate` take for `split`: arrays, or a pipeline (streamed, text or weighted data)."""
        training = split == "train" if training is None else training
        batch = batch_size or self.batch_size
        data = self.splits[split]
        if isinstance(data, StreamSplit):
            return SplitData(pipeline=data.dataset(inputs, outputs, batch, training=training, shuffle=self.shuffle))
        xs, ys = data
        x = xs[inputs[0]] if len(inputs) == 1 else {k: xs[k] for k in inputs}
        y = ys[outputs[0]] if len(outputs) == 1 else {k: ys[k] for k in outputs}
        weights = self.weights.get(split) if training else None
        has_text = any(is_string(a) for a in [*xs.values(), *ys.values()])
        if weights is None and not has_text:
            return SplitData(x, y)
        return SplitData(
            pipeline=_array_dataset(x, y, weights, batch, shuffle=training and self.shuffle, seed=self.seed)
        )

    def targets(self, split: str, outputs: list[str], batch_size: int | None = None) -> dict[str, np.ndarray]:
        """`split`'s targets per output, in its order (the order its unshuffled `feed` has)."""
        data = self.splits[split]
        if not isinstance(data, StreamSplit):
            return {o: np.asarray(data.targets[o]) for o in outputs}
        parts = list(data.target_batches(outputs, batch_size or self.batch_size).as_numpy_iterator())
        return {o: np.concatenate([p[o] for p in parts]) for o in outputs}

    def adapt_data(self, name: str, batch_size: int = 256) -> np.ndarray | tf.data.Dataset:
        """The training split's raw values of input `name` (never validation/test): an array or a dataset."""
        data = self.splits["train"]
        if isinstance(data, StreamSplit):
            return data.input_batches([name], batch_size).map(lambda batch: batch[name])
        return data.inputs[name]

    def input_spec(self, name: str, inputs: list[str], outputs: list[str]) -> tuple[tuple[int | None, ...], str]:
        """Per-sample shape and dtype of the raw input `name` (`string` for text)."""
        data = self.splits["train"]
        if isinstance(data, StreamSplit):
            x = data.element_spec(inputs, outputs)[0]
            s = x[name] if isinstance(x, dict) else x
            return tuple(s.shape), "string" if s.dtype.name == "string" else s.dtype.name
        a = data.inputs[name]
        return tuple(a.shape[1:]), "string" if is_string(a) else str(a.dtype)

    def target_info(self, name: str, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
        """Per-sample shape, whether labels are integers, the largest label, and the class count if known."""
        data = self.splits["train"]
        vocab = self.classes.get(name)
        if isinstance(data, StreamSplit):
            y = data.element_spec(inputs, outputs)[1]
            s = y[name] if isinstance(y, dict) else y
            info: dict[str, Any] = {"shape": tuple(s.shape), "integer": s.dtype.is_integer, "classes": vocab}
            feature = data.spec.targets[name]
            if not feature.steps and len(feature.columns) == 1 and s.dtype.is_integer:
                reader = data.table.reader
                if vocab is None and getattr(reader, "class_names", None) is not None:
                    info["classes"] = reader.class_names
                if info["classes"] is not None:
                    info["max"] = len(info["classes"]) - 1
                else:
                    values = data.table.column(feature.columns[0])
                    info["max"] = int(values.max()) if values.size else 0
            return info
        y = data.targets[name]
        info = {"shape": tuple(y.shape[1:]), "integer": y.dtype.kind in "iu", "classes": vocab}
        if y.size and (y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(y == np.round(y)))):
            info["max"] = int(y.max())
            info["min"] = int(y.min())
        return info


def _array_dataset(
    x: Arrays | None, y: Arrays | None, w: np.ndarray | None, batch: int, *, shuffle: bool, seed: int
) -> tf.data.Dataset:
    """In-memory arrays (with text or sample weights) as tf.data: shuffled indices gathered per batch."""
    import tensorflow as tf

    def tensor(a: np.ndarray) -> tf.Tensor:
        return tf.constant(a.tolist(), dtype=tf.string) if a.dtype.kind in "OUS" else tf.constant(a)

    tx = {k: tensor(v) for k, v in x.items()} if isinstance(x, dict) else tensor(x)
    ty = {k: tensor(v) for k, v in y.items()} if isinstance(y, dict) else tensor(y)
    tw = None if w is None else tf.constant(w.astype("float32"))
    n = len(w) if w is not None else len(next(iter(x.values())) if isinstance(x, dict) else x)
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)

    def take(idx: Any) -> tuple[Any, ...]:
        def g(t: Any) -> Any:
            return {k: tf.gather(v, idx) for k, v in t.items()} if isinstance(t, dict) else tf.gather(t, idx)

        if tw is None:
            return g(tx), g(ty)
        wb = tf.gather(tw, idx)
        return g(tx), g(ty), ({k: wb for k in ty} if isinstance(ty, dict) else wb)

    take = tf.autograph.experimental.do_not_convert(take)  # plain graph code: autograph's rewrite is pure cost
    return ds.map(take, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def prepare_tables(spec: DataSpec, tables: Tables, seed: int, vocab_from: Table | None = None) -> Prepared:
    """Features, labels and weights for every split of `tables` (statistics from `train` only).

    `vocab_from` (a table) fixes text-label vocabularies, e.g. the whole pool in cross-validation.
    """
    if spec.class_weight is not None and len(spec.targets) != 1:
        raise RecipeError("class_weight needs exactly one target", path=("data", "class_weight"))
    if all(not t.streamed for t in tables.values()):
        return _prepare_arrays(spec, tables, seed, vocab_from)
    vocab: dict[str, Vocabulary | None] = {}
    for name, feature in spec.targets.items():
        where: KeyPath = ("data", "targets", name)
        source = vocab_from if vocab_from is not None else tables["train"]
        values = gather_columns(source, feature, where) if _labels_are_text(source, feature) else None
        vocab[name] = (
            feature.classes
            if feature.classes is not None
            else (label_vocabulary(feature, values) if values is not None else None)
        )
        if vocab[name] is not None:
            for split, table in tables.items():
                encode_labels(gather_columns(table, feature, where), vocab[name], split, (*where, "from"))
    weights = _stream_class_weights(spec, tables["train"], vocab)
    splits = {
        split: StreamSplit(t if t.streamed else _as_stream(t), spec, vocab, weights, seed, split)
        for split, t in tables.items()
    }
    return Prepared(splits=splits, classes={k: v for k, v in vocab.items() if v is not None}, seed=seed)


def _labels_are_text(table: Table, feature: FeatureSpec) -> bool:
    if feature.classes is not None:
        return True
    return any(table.spec(c).dtype == "string" for c in feature.columns if c in table.names)


def _stream_class_weights(spec: DataSpec, train: Table, vocab: dict[str, Vocabulary | None]) -> np.ndarray | None:
    if spec.class_weight is None:
        return None
    name, feature = next(iter(spec.targets.items()))
    values = gather_columns(train, feature, ("data", "targets", name))
    labels = encode_labels(values, vocab[name], "train", ("data",)) if vocab.get(name) else values
    return class_weights(spec, _class_index(np.asarray(labels)), vocab.get(name))


def _as_stream(table: ArrayTable) -> StreamTable:
    return StreamTable(ArrayReader(table))


def _prepare_arrays(spec: DataSpec, tables: Tables, seed: int, vocab_from: Table | None) -> Prepared:
    splits = {s: ArraySplit({}, {}) for s in tables}
    stats: dict[str, dict[str, Any]] = {}
    classes: dict[str, Vocabulary] = {}
    for section, features, slot in (("inputs", spec.inputs, 0), ("targets", spec.targets, 1)):
        for name, feature in features.items():
            where: KeyPath = ("data", section, name)
            vocab = None
            if slot == 1 and vocab_from is not None:
                vocab = label_vocabulary(feature, gather_columns(vocab_from, feature, where))
            per_split, fitted, vocab = _prepare_feature(feature, tables, where, target=slot == 1, vocab=vocab)
            if fitted:
                stats[f"{section}.{name}"] = fitted
            if vocab is not None:
                classes[name] = vocab
            for split, x in per_split.items():
                splits[split][slot][name] = x
    weights: dict[str, np.ndarray] = {}
    if spec.class_weight is not None:
        name = next(iter(spec.targets))
        labels = _class_index(splits["train"][1][name])
        if labels.size and labels.min() < 0:
            raise RecipeError("class_weight needs labels 0..K-1", path=("data", "class_weight"))
        per_class = class_weights(spec, labels, classes.get(name))
        weights["train"] = per_class[labels]
    if spec.sample_weight is not None:
        w = tables["train"].column(spec.sample_weight, ("data", "sample_weight")).astype("float32").reshape(-1)
        if not np.isfinite(w).all() or (w < 0).any():
            raise RecipeError("sample weights must be finite and non-negative", path=("data", "sample_weight"))
        weights["train"] = weights["train"] * w if "train" in weights else w
    return Prepared(splits=splits, stats=stats, weights=weights, classes=classes, seed=seed)


def prepare(spec: DataSpec, base_dir: Path, seed: int) -> Prepared:
    """Load the source, make the splits, and produce every split's inputs and targets by name."""
    tables, record = load_recorded_splits(spec, base_dir, seed)
    prepared = prepare_tables(spec, tables, seed)
    prepared.record = record
    return prepared
