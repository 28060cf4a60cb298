"""The recipe format as pydantic models: the models are the documentation.

Sections mirror a Keras script: `data` (what goes in), `model` (the functional graph), `compile`
(optimizer, losses, metrics), `train` (fit, callbacks, stages), `eval`. Every section forbids unknown keys;
the only open mappings are Keras' own keyword arguments (layers, optimizers, callbacks, ...), which the
graph checker validates against the constructor signatures in the Keras catalog.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dlrun.recipe.base import Strict
from dlrun.recipe.search import EnsembleSpec, SearchSpec
from dlrun.util import did_you_mean

# keras.utils.set_random_seed seeds NumPy, whose seeds are 0 <= seed < 2**32.
SEED_MAX = 2**32 - 1
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]


class Component(BaseModel):
    """A Keras object by name plus its keyword arguments: `{type: Adam, learning_rate: 0.001}`.

    A bare string is shorthand for `{type: <string>}`. `type` is a Keras name (class or string
    identifier) or an import path `module.path:Name` for custom code.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"type": data}
        return data

    @property
    def kwargs(self) -> dict[str, Any]:
        """The Keras keyword arguments (everything but `type`)."""
        return dict(self.model_extra or {})


# ----------------------------------------------------------------------------------------------------
# model


class InputSpec(Strict):
    """One model input: `keras.Input(shape=..., dtype=...)`; `null` marks a variable-length axis."""

    shape: list[Annotated[int, Field(ge=1)] | None] | Literal["auto"] = Field(
        default="auto",
        description="Per-sample shape; `auto` (or omitted): the shape of the prepared data (after steps and "
        "preprocess layers), known once the data is loaded.",
    )
    dtype: str = "float32"
    sparse: bool = False


class LayerNode(BaseModel):
    """One node of the graph: a Keras layer (by class name), a `keras.ops` function, a block, a sub-model, or
    a shared call.

    Keys other than the reserved ones below are the layer's Keras keyword arguments, written as in Keras.

    **Keras objects as arguments.** An argument can itself be a Keras object, written `{type: ..., ...}`
    (or a list of them): a layer for wrappers (`{type: Bidirectional, layer: {type: LSTM, units: 32}}`,
    `TimeDistributed.layer`, `Bidirectional.backward_layer`, `RNN.cell: [{type: LSTMCell, units: 8}, ...]`),
    a regularizer (`kernel_regularizer: {type: L2, l2: 0.01}`), an initializer
    (`kernel_initializer: {type: HeNormal, seed: 1}`) or a constraint (`kernel_constraint: {type: MaxNorm,
    max_value: 2}`). The argument's name says which kind; each nested spec is checked like a node.

    **Tensors by keyword.** `inputs` fills the layer call's first argument; `call` gives the others, and in
    `call` every string names a node or model input (also inside lists): `{type: MultiHeadAttention,
    num_heads: 2, key_dim: 16, inputs: x, call: {value: enc, key: enc, attention_mask: pad_mask}}`, or
    `call: {initial_state: [h, c], training: false}`. A node whose `call` names the first argument
    (`call: {query: x, value: enc}`) takes no `inputs`.

    **Several outputs.** A node whose layer returns several tensors (`return_state: true`,
    `call: {return_attention_scores: true}`, a sub-model with several outputs) is referenced per output:
    `encoder[1]`, or by output name for sub-models: `tower[embedding]` — in `inputs`, in `call` and in
    `model.outputs`. Inside YAML's `[...]` and `{...}` such a name is quoted: `["encoder[1]", "encoder[2]"]`.

    **Operations.** `type: ops.<function>` calls `keras.ops.<function>`: `inputs` are its leading
    positional arguments; its other arguments go by their Keras names, where a string naming a node is that
    tensor and anything else a plain value: `{type: ops.multiply, x2: 0.1667}`,
    `{type: ops.subtract, x1: 3.0, x2: scaled}`, `{type: ops.mean, axis: 1}`. An op must read a tensor of
    the model (a constant would sit outside the graph).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    RESERVED: ClassVar[tuple[str, ...]] = ("name", "type", "inputs", "share", "call", "repeat", "when")

    name: Name | None = None
    type: str | None = Field(default=None, min_length=1)
    inputs: list[str] | None = None
    share: Name | None = Field(default=None, description="Reuse the layer (and weights) of this earlier node.")
    call: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the layer call.")
    repeat: int | list[dict[str, Any]] | str | None = Field(
        default=None, description="Blocks only: N copies, or one parameter mapping per copy."
    )
    when: bool | str | None = Field(default=None, description="Blocks only: keep this node when true.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _single_input(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _type_or_share(self) -> LayerNode:
        if self.type is None and self.share is None:
            raise PydanticCustomError("node_kind", "a node needs `type` (a Keras layer, block or sub-model) or `share`")
        if self.type is not None and self.share is not None:
            raise PydanticCustomError("node_kind", "give either `type` or `share`, not both")
        if self.share is not None and self.model_extra:
            key = next(iter(self.model_extra))
            raise PydanticCustomError(
                "node_kind",
                "a `share` node reuses an existing layer; it takes no layer arguments (got {key})",
                {"key": repr(key)},
            )
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        """The layer's Keras keyword arguments."""
        return dict(self.model_extra or {})


class GraphSpec(Strict):
    """A functional graph: named inputs, a list of nodes, and named outputs."""

    inputs: dict[Name, InputSpec] = Field(min_length=1)
    layers: list[LayerNode] = Field(min_length=1)
    outputs: list[str] | None = Field(
        default=None, description="Node names (`node[k]` for one of several outputs); default: the last node."
    )

    @field_validator("outputs", mode="before")
    @classmethod
    def _single_output(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SubModelSpec(GraphSpec):
    """A named sub-graph built once as a `keras.Model` and called like a layer (shared weights).

    A sub-model may call other sub-models (any depth, no cycles); each is built once, so every call of
    it, from the main graph or from another sub-model, shares its weights.
    """

    trainable: bool = True


class BlockSpec(Strict):
    """A parameterized sub-graph expanded inline wherever it is used (`type: <block name>`).

    Inside the block, `${param}` and `${expression}` are replaced by parameter values; node names are
    prefixed with the using node's name; `inputs` names the block's entry points.
    """

    params: dict[Name, Any] = Field(default_factory=dict, description="Parameters and their defaults.")
    inputs: list[Name] = Field(default_factory=lambda: ["x"])
    layers: list[LayerNode] = Field(min_length=1)
    output: str | None = Field(default=None, description="Node whose output the block returns; default last.")


class ModelSpec(GraphSpec):
    """The model: the main graph plus sub-models (nested `keras.Model`s) it may call."""

    name: Name | None = None
    submodels: dict[Name, SubModelSpec] = Field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# data

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "imdb", "reuters", "boston_housing")
FILE_SOURCES = ("npz", "npy", "csv", "parquet", "jsonl", "tfrecord", "images", "text")
DATA_SOURCES = (*KERAS_DATASETS, *FILE_SOURCES, "sklearn")
SKLEARN_DATASETS = ("iris", "digits", "wine", "breast_cancer", "diabetes", "linnerud")
SPLIT_NAMES = ("train", "validation", "test")


class ScaleStep(Strict):
    """`x * multiply / divide + offset`."""

    multiply: float = 1.0
    divide: float = 1.0
    offset: float = 0.0


class Step(Strict):
    """One array step applied before the model (it does not travel with the saved model; `preprocess` does).

    Exactly one key is set. `standardize` is fitted on the training split only.
    """

    reshape: list[int] | None = None
    scale: ScaleStep | None = None
    one_hot: Annotated[int, Field(ge=2)] | None = None
    cast: str | None = None
    standardize: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        chosen = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise PydanticCustomError(
                "step_kind",
                "a step has exactly one of: reshape, scale, one_hot, cast, standardize (got {n})",
                {"n": ", ".join(chosen) or "none"},
            )
        return self


class ColumnPattern(Strict):
    """Columns chosen by name, in the data's column order: `{glob: 'mean *'}` or `{regex: '^worst '}`."""

    glob: str | None = Field(default=None, description="Shell-style pattern (`*`, `?`, `[...]`), matching whole names.")
    regex: str | None = Field(default=None, description="Regular expression searched for in each name.")
    exclude: list[str] = Field(default_factory=list, description="Names (or globs) dropped from the match.")

    @model_validator(mode="after")
    def _one_pattern(self) -> ColumnPattern:
        if (self.glob is None) == (self.regex is None):
            raise PydanticCustomError("column_pattern", "a column pattern has exactly one of: glob, regex")
        if self.regex is not None:
            import re

            try:
                re.compile(self.regex)
            except re.error as exc:
                raise PydanticCustomError(
                    "regex", "invalid regex {regex}: {msg}", {"regex": repr(self.regex), "msg": str(exc)}
                ) from None
        return self

    def match(self, names: list[str]) -> list[str]:
        """The names this pattern selects, in the given order."""
        import fnmatch
        import re

        if self.glob is not None:
            chosen = [n for n in names if fnmatch.fnmatchcase(n, self.glob)]
        else:
            assert self.regex is not None
            chosen = [n for n in names if re.search(self.regex, n)]
        return [n for n in chosen if not any(fnmatch.fnmatchcase(n, e) for e in self.exclude)]


class FeatureSpec(Strict):
    """Where one model input (or output target) comes from, and how it is prepared.

    `from` names an array key, a table column, a JSON field, or (folders) `image`/`text`/`label`; a list of
    columns is stacked into one input along the last axis. `steps` change the arrays before the model;
    `preprocess` is a list of Keras layers (`{type: Normalization}`, `StringLookup`, `TextVectorization`,
    `RandomFlip`, ..., plus `MinMaxScaling` and `{type: preprocess_input, application: <Model>}`) that are
    adapted on the training split and become part of the saved model, so `predict` takes raw data.
    """

    from_: str | list[str] | ColumnPattern = Field(
        alias="from", description="Array key, column name(s), `{glob: ...}` / `{regex: ...}`, or dataset field."
    )
    dtype: str | None = Field(default=None, description="Read the column(s) as this dtype (e.g. string).")
    classes: list[str | int] | None = Field(
        default=None, description="Targets: the label values in class-index order (default: sorted)."
    )
    steps: list[Step] = Field(default_factory=list)
    preprocess: list[Component] = Field(
        default_factory=list, description="Keras preprocessing layers that travel with the model (inputs only)."
    )
    fill: Literal["mean", "median", "constant", "most_frequent"] | None = Field(
        default=None,
        description="Inputs: replace missing values (empty cells, NaN; empty text) by this statistic of the "
        "training split, inside the saved model (a `dlrun>FillMissing` layer before `preprocess`). Without "
        "`fill`, a missing value is an error.",
    )
    fill_value: float | int | str | None = Field(default=None, description="`fill: constant`: the value.")
    missing_indicator: bool = Field(
        default=False, description="With `fill`: append one 0/1 feature per column saying the value was missing."
    )

    @model_validator(mode="after")
    def _fill_keys(self) -> FeatureSpec:
        if self.fill_value is not None and self.fill != "constant":
            raise PydanticCustomError("fill_value", "`fill_value` goes with `fill: constant`")
        if self.fill == "constant" and self.fill_value is None:
            raise PydanticCustomError("fill_value", "`fill: constant` needs `fill_value`")
        if self.missing_indicator and self.fill is None:
            raise PydanticCustomError("missing_indicator", "`missing_indicator` goes with `fill`")
        return self

    @field_validator("from_")
    @classmethod
    def _columns(cls, value: str | list[str] | ColumnPattern) -> str | list[str] | ColumnPattern:
        if isinstance(value, list) and not value:
            raise PydanticCustomError("empty_from", "`from` needs at least one column")
        return value

    _matched: list[str] | None = PrivateAttr(default=None)

    @property
    def columns(self) -> list[str]:
        """The source columns/keys this feature reads (a pattern: once matched against the data's columns)."""
        if isinstance(self.from_, ColumnPattern):
            if self._matched is None:
                raise RuntimeError("a `from` pattern is used before it was matched against the data's columns")
            return list(self._matched)
        return list(self.from_) if isinstance(self.from_, list) else [self.from_]

    @property
    def pattern(self) -> ColumnPattern | None:
        """The `from` pattern, if `from` is one."""
        return self.from_ if isinstance(self.from_, ColumnPattern) else None

    def match_columns(self, names: list[str]) -> list[str]:
        """Match a `from` pattern against the data's column names (once); returns the columns."""
        if self.pattern is not None:
            self._matched = self.pattern.match(names)
        return self.columns


class RecordFeature(Strict):
    """One feature of a `tf.train.Example`: `tf.io.FixedLenFeature(shape, dtype)`."""

    dtype: Literal["float32", "int64", "string"] = Field(description="float32 (float_list), int64, string (bytes).")
    shape: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="Per-example shape; [] a scalar."
    )


class DataSpec(Strict):
    """Data: a dataset name or files, mapped by name onto model inputs and outputs.

    Sources: keras.datasets names (mnist, ...); files `npz`, `npy`, `csv`, `parquet`, `jsonl` (`.gz` too);
    `tfrecord` (tf.train.Example shards: a file, a folder or a glob such as `train-*.tfrecord`; streamed);
    folders `images` / `text` (one subfolder per class, optionally under `train/` and `test/`; a `.tar.gz`
    of such a folder works too); `sklearn` bundled datasets (`name: iris`).
    """

    source: str = Field(description="A keras.datasets name, a file/folder kind, or `sklearn`.")
    path: str | None = Field(
        default=None,
        description="File, folder or archive; relative to the recipe (then $DLRUN_DATA_DIR). A folder when "
        "`files` is given.",
    )
    files: dict[str, str] | None = Field(
        default=None, description="One file per split (`{train: a.csv, test: b.csv}`), relative to `path`."
    )
    name: str | None = Field(default=None, description="`source: sklearn`: the dataset (iris, digits, ...).")
    inputs: dict[Name, FeatureSpec] = Field(min_length=1)
    targets: dict[Name, FeatureSpec] = Field(min_length=1)
    splits: dict[str, str] | None = Field(
        default=None,
        description="Splits by slice of the source's splits: `{train: 'train[:80%]', validation: "
        "'train[80%:]', test: test}` (in file order).",
    )
    validation_split: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    test_split: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.0, description="Hold out this fraction of train as the test split (when the source has none)."
    )
    stratify: bool = Field(default=False, description="Keep class proportions in validation/test splits and folds.")
    limit: Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0.0, lt=1.0)] | None = Field(
        default=None,
        description="Use a seeded random subset of each source split: N samples, or a fraction (0.1); stratified "
        "with `stratify`, and never without a class the split has. Drawn before validation/test splits.",
    )
    head: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Use the first N samples of each source split, in file order (classes may be lost)."
    )
    class_weight: Literal["balanced"] | dict[int | str, float] | None = Field(
        default=None, description="`balanced` or `{label: weight}` for the (single) target."
    )
    sample_weight: str | None = Field(default=None, description="Column/key holding per-sample weights.")
    image_size: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="Images: resize to [h, w]; default: the image input's [h, w] in the model, else [256, 256].",
    )
    color_mode: Literal["rgb", "grayscale", "rgba"] = "rgb"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    stream: bool | Literal["auto"] = Field(
        default="auto", description="Read from disk batch by batch (auto: when the data exceeds memory_budget_mb)."
    )
    memory_budget_mb: Annotated[float, Field(gt=0)] = 1024
    cache: bool | Literal["auto"] = Field(
        default="auto",
        description="Keep decoded file data in memory after the first epoch (auto: if it fits; never for "
        "images, which are decoded every epoch as keras.utils.image_dataset_from_directory does).",
    )
    shuffle_buffer: Annotated[int, Field(ge=1)] = 10000
    features: dict[str, RecordFeature] | None = Field(
        default=None,
        description="`source: tfrecord`: the tf.train.Example features to parse, by name (each a column).",
    )

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        allowed = DATA_SOURCES
        if value not in allowed:
            hint = did_you_mean(value, allowed)
            raise PydanticCustomError(
                "unknown_source",
                "unknown data source {value}{hint}; known: {known}",
                {"value": repr(value), "hint": hint, "known": ", ".join(allowed)},
            )
        return value

    @field_validator("files", "splits")
    @classmethod
    def _split_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if key not in SPLIT_NAMES:
                raise PydanticCustomError(
                    "split_name", "unknown split {key}; splits are train, validation, test", {"key": repr(key)}
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        if self.source == "sklearn":
            if self.name not in SKLEARN_DATASETS:
                raise PydanticCustomError(
                    "sklearn_name",
                    "source sklearn needs `name:` one of {known}",
                    {"known": ", ".join(SKLEARN_DATASETS)},
                )
        elif self.name is not None:
            raise PydanticCustomError("name_unused", "`name` is only for source: sklearn")
        if self.files is not None and "train" not in self.files:
            raise PydanticCustomError("files_train", "`files` needs a train file")
        if self.splits is not None and "train" not in self.splits:
            raise PydanticCustomError("splits_train", "`splits` needs a train split")
        if (self.source == "tfrecord") != (self.features is not None):
            raise PydanticCustomError(
                "tfrecord_features",
                "`features` (the tf.train.Example spec) goes with source: tfrecord, and it needs it",
            )
        if self.limit is not None and self.head is not None:
            raise PydanticCustomError(
                "limit_head", "`limit` (a random subset) and `head` (the first rows) exclude each other; keep one"
            )
        return self


# ----------------------------------------------------------------------------------------------------
# compile / train / eval

PerOutput = dict[str, Any]


class CompileSpec(Strict):
    """`model.compile(...)`: losses and metrics either for all outputs or per output name."""

    optimizer: Component = Field(default_factory=lambda: Component(type="rmsprop"))
    loss: Component | dict[str, Component]
    loss_weights: dict[str, float] | None = None
    metrics: list[Component] | dict[str, list[Component]] = Field(default_factory=list)
    jit_compile: bool | Literal["auto"] = Field(
        default="auto", description="XLA compilation; 'auto' lets Keras decide per backend."
    )
    steps_per_execution: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "Training steps per compiled call (same numbers, less per-call overhead); 'auto' runs 32 per call, "
            "or 1 on a host without GPU/TPU when one training batch costs 4e8 multiply-adds or more (a step "
            "then outlasts the overhead, and predict would trace one forward pass per step) or a stage trains "
            "fewer than 1,000 steps (too short to win back the multi-step loop's trace), under torch, "
            "tf.distribute and train.deterministic."
        ),
    )

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_shape(cls, value: Any) -> Any:
        if isinstance(value, dict) and "type" not in value:
            return {k: v for k, v in value.items()}
        return value

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics_shape(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str | dict) else v for k, v in value.items()}
        if isinstance(value, str):
            return [value]
        return value


class StageSpec(Strict):
    """One training stage (transfer learning): what is trainable, how it is compiled, how long."""

    name: Name | None = None
    epochs: Annotated[int, Field(ge=1)]
    trainable: dict[str, list[str] | str] | None = Field(
        default=None,
        description="`{freeze: [...], unfreeze: [...]}` with node names, block names, globs or 'all'.",
    )
    optimizer: Component | None = None
    loss_weights: dict[str, float] | None = None
    callbacks: list[Component] | None = None


class TrainSpec(Strict):
    """`model.fit(...)`."""

    epochs: Annotated[int, Field(ge=1)] = 1
    batch_size: Annotated[int, Field(ge=1)] = 32
    shuffle: bool = True
    callbacks: list[Component] = Field(default_factory=list)
    stages: list[StageSpec] = Field(default_factory=list)
    restore_best: bool = Field(default=True, description="Load the best checkpoint's weights at the end.")
    deterministic: bool = Field(
        default=False, description="Deterministic ops and per-epoch seeded order: identical reruns and resumes."
    )
    checkpoint_every: Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=r"^[1-9][0-9]*[smh]$")] | None = Field(
        default=None,
        description="Also save the resumable state inside epochs: every N training steps, or every duration "
        '("90s", "10m", "2h"); a resumed run continues at the exact batch, bit-identical (needs deterministic).',
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        default="float32", description="Keras dtype policy for layers (mixed precision keeps float32 variables)."
    )
    data_on_device: bool | Literal["auto"] = Field(
        default="auto",
        description="Keep in-memory training arrays on the accelerator, so batches are gathered there instead "
        "of copied from the host every step (JAX; not with train.distribute or deterministic); auto: when a GPU/TPU holds them in "
        "half its memory.",
    )
    distribute: DistributeSpec | None = None
    tensorboard: bool = Field(
        default=True,
        description="Write TensorBoard logs (loss and metrics per epoch) to <run>/tensorboard; a TensorBoard "
        "callback in `callbacks` replaces it (with Keras' defaults: the graph too).",
    )
    mlflow: MlflowSpec | None = Field(default=None, description="Also log the run to MLflow (`dlrun[mlflow]`).")


class MlflowSpec(Strict):
    """Log training to MLflow (`pip install 'dlrun[mlflow]'`): the resolved recipe flattened into params,
    every epoch's metrics, recipe.yaml as an artifact, and the run folder and model paths as tags; at the end
    the evaluation metrics (`test_<metric>`), model.keras (an artifact, and a model in MLflow's Keras flavour)
    and the run folder's PNG/SVG plots. MLflow 3 reads folder stores only with MLFLOW_ALLOW_FILE_STORE=true
    (dlrun sets it when it logs; set it for `mlflow ui` or MlflowClient)."""

    tracking_uri: str | None = Field(
        default=None,
        description="A folder (e.g. mlruns), or a file:, sqlite: or http(s): URI; default: $MLFLOW_TRACKING_URI.",
    )
    experiment: str | None = Field(default=None, description="Experiment name; default: the recipe's name.")
    run_name: str | None = Field(default=None, description="MLflow run name; default: the run folder's name.")


class DistributeSpec(Strict):
    """Training over several devices or processes; a bare strategy name is shorthand for `{strategy: <name>}`."""

    strategy: Literal["mirrored", "multi_worker", "data_parallel", "model_parallel"] = Field(
        description="tf.distribute.MirroredStrategy, MultiWorkerMirroredStrategy (TF_CONFIG), "
        "or keras.distribution.DataParallel / ModelParallel (JAX)."
    )
    cpu_devices: Annotated[int, Field(ge=1, le=64)] | None = Field(
        default=None, description="Split the CPU into this many logical devices (testing without GPUs)."
    )
    mesh: dict[Name, Annotated[int, Field(ge=1)]] | None = Field(
        default=None,
        description="model_parallel: keras.distribution.DeviceMesh axes and sizes, e.g. `{batch: 2, model: 4}`; "
        "the sizes multiply to the device count (of all processes).",
    )
    layout: dict[str, list[str | None]] | None = Field(
        default=None,
        description="model_parallel: keras.distribution.LayoutMap, variable path regex (matched in full) -> one "
        "mesh axis or null per dimension, e.g. `{'.*dense.*kernel': [null, model]}`; other variables are "
        "replicated.",
    )
    batch_dim_name: Name | None = Field(
        default=None, description="model_parallel: the mesh axis that splits each batch; default: the first."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"strategy": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _mesh_and_layout(self) -> DistributeSpec:
        if self.strategy != "model_parallel":
            for key in ("mesh", "layout", "batch_dim_name"):
                if getattr(self, key) is not None:
                    raise PydanticCustomError("distribute", "{key} is for strategy model_parallel only", {"key": key})
            return self
        if not self.mesh:
            raise PydanticCustomError("distribute", "strategy model_parallel needs a mesh, e.g. {{batch: 2, model: 4}}")
        axes = list(self.mesh)
        if self.batch_dim_name is not None and self.batch_dim_name not in axes:
            raise _located(
                ("batch_dim_name",), f"batch_dim_name {self.batch_dim_name!r} is not a mesh axis ({', '.join(axes)})",
                input=self.batch_dim_name,
            )  # fmt: skip
        for pattern, dims in (self.layout or {}).items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _located(("layout", pattern), f"not a regular expression: {exc}", input=pattern) from None
            unknown = [d for d in dims if d is not None and d not in axes]
            if unknown:
                raise _located(
                    ("layout", pattern),
                    f"{unknown[0]!r} is not a mesh axis; each dimension is one of {', '.join(axes)} or null",
                    input=dims,
                )
            if len([d for d in dims if d is not None]) != len({d for d in dims if d is not None}):
                raise _located(("layout", pattern), "a mesh axis can split only one dimension", input=dims)
        return self


class EvalSpec(Strict):
    """`model.evaluate(...)` on a split."""

    split: Literal["test", "validation", "train"] = "test"
    batch_size: Annotated[int, Field(ge=1)] | None = None


class ExpectSpec(Strict):
    """Facts about the built model that `dlrun check` and the tests assert."""

    params: Annotated[int, Field(ge=0)] | None = None
    trainable_params: Annotated[int, Field(ge=0)] | None = None
    output_shapes: dict[str, list[int | None]] | None = None


class Recipe(Strict):
    """A whole recipe."""

    schema_: str | None = Field(default=None, alias="$schema")
    name: Name
    description: str | None = None
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] = Field(
        default=42,
        description="Seeds Python, NumPy and the backend (weights, shuffling, splits); 0 to 2**32 - 1, "
        "what keras.utils.set_random_seed accepts (it seeds NumPy).",
    )
    imports: list[str] = Field(default_factory=list, description="Modules allowed to supply custom components.")
    blocks: dict[Name, BlockSpec] = Field(default_factory=dict)
    data: DataSpec | None = None
    model: ModelSpec
    compile: CompileSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    expect: ExpectSpec | None = None
    backend: Literal["tensorflow", "jax", "torch"] | None = Field(
        default=None, description="Keras backend; default: $KERAS_BACKEND, else tensorflow."
    )
    search: SearchSpec | None = Field(default=None, description="Hyperparameter search for `dlrun tune`.")
    ensemble: EnsembleSpec | None = Field(default=None, description="Members to train and combine (`dlrun ensemble`).")

    @model_validator(mode="after")
    def _images_fit_the_model(self) -> Recipe:
        """`data.image_size` defaults to the image input's size in the model; a different size or channel count
        is an error here, not at train time (unless preprocess layers or steps stand between)."""
        data = self.data
        for where, graph in [
            (("model",), self.model),
            *((("model", "submodels", k), s) for k, s in self.model.submodels.items()),
        ]:
            for name, spec in graph.inputs.items():
                if spec.shape == "auto" and (data is None or where != ("model",) or name not in data.inputs):
                    reason = (
                        "a sub-model's inputs need one"
                        if where != ("model",)
                        else "there is no `data` section to take it from"
                        if data is None
                        else "data.inputs has no entry of that name to take it from"
                    )
                    raise _located(
                        (*where, "inputs", name),
                        f"no `shape` (shape: auto), and {reason}; give the shape",
                        input=spec.shape,
                    )
        if data is None or data.source != "images":
            return self
        channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[data.color_mode]
        for name, feature in data.inputs.items():
            spec = self.model.inputs.get(name)
            if (
                feature.columns != ["image"]
                or spec is None
                or spec.shape == "auto"
                or feature.preprocess
                or feature.steps
            ):
                continue
            shape = spec.shape
            if len(shape) != 3:
                continue
            size = shape[:2]
            if data.image_size is None and None not in size:
                data.image_size = [int(s) for s in size if s is not None]
            elif data.image_size is not None and None not in size and list(size) != data.image_size:
                want = "x".join(map(str, shape))
                raise _located(
                    ("data", "image_size"),
                    f"data.image_size is {data.image_size} but model input {name!r} takes {want} images; set "
                    f"data.image_size: {list(size)} (or omit it: it defaults to the model input's size)",
                    input=data.image_size,
                )
            if shape[2] is not None and shape[2] != channels:
                raise _located(
                    ("data", "color_mode"),
                    f"color_mode {data.color_mode} gives {channels} channels but model input {name!r} takes {shape[2]}",
                    input=data.color_mode,
                )
        if data.image_size is None:
            data.image_size = [256, 256]
        return self


def _located(loc: tuple[str, ...], message: str, *, input: Any) -> Exception:
    """A validation error at `loc` (a key below the recipe's root), raised from a recipe-wide check."""
    from pydantic import ValidationError
    from pydantic_core import InitErrorDetails

    error = PydanticCustomError("data_model_mismatch", message.replace("{", "{{").replace("}", "}}"))
    return ValidationError.from_exception_data("Recipe", [InitErrorDetails(type=error, loc=loc, input=input)])
