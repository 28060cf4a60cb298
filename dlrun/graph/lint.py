"""Semantic lint: recipes Keras builds and trains, but wrongly (no TensorFlow).

Each rule is a small function over the loaded recipe that yields `Finding`s: where (a key path, located in
the file), what is wrong, and what to change. `dlrun validate` prints them as warnings (errors with
`--strict`); `dlrun validate --explain RULE` prints a rule's explanation. Rules only read what the recipe
declares (layer arguments, `compile`, data steps and `classes:`, callbacks); nothing here needs the data.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dlrun.errors import format_path
from dlrun.graph import catalog
from dlrun.graph.check import Graph
from dlrun.recipe.load import KeyPath
from dlrun.recipe.schema import Component, FeatureSpec, Recipe


@dataclass(frozen=True)
class Finding:
    """One lint result: the rule, where, what is wrong and the fix."""

    rule: str
    path: KeyPath
    message: str
    fix: str

    def text(self) -> str:
        """`message; fix: ... [rule]` on one line."""
        return f"{self.message}; fix: {self.fix} [{self.rule}]"


Check = Callable[[Recipe, Graph], Iterator[Finding]]  # one rule's findings on a resolved recipe


@dataclass(frozen=True)
class Rule:
    """A named lint rule and its explanation (`dlrun validate --explain NAME`)."""

    name: str
    summary: str
    explanation: str
    check: Check


RULES: dict[str, Rule] = {}


def rule(name: str, summary: str) -> Callable[[Check], Check]:
    """Register a rule; its docstring is the explanation."""

    def register(fn: Check) -> Check:
        RULES[name] = Rule(name, summary, " ".join((fn.__doc__ or "").split()), fn)
        return fn

    return register


# ----------------------------------------------------------------------------------------------------
# what the recipe says about each output

_SOFTMAX_LAYERS = {"Softmax": "softmax"}
_PASS_THROUGH = {"Dropout", "Activation", "Softmax", "Flatten", "Reshape", "GaussianNoise", "ActivityRegularization"}


@dataclass
class Head:
    """An output's final activation and unit count, with where each was written."""

    name: str
    activation: str | None
    activation_path: KeyPath
    units: int | None
    units_path: KeyPath


def _head(graph: Graph, out: str) -> Head | None:
    try:
        node = graph.node(out)
    except KeyError:
        return None
    activation, act_path = None, node.path
    while True:
        if node.type in _SOFTMAX_LAYERS and activation is None:
            activation, act_path = _SOFTMAX_LAYERS[node.type], (*node.path, "type")
        elif isinstance(node.kwargs.get("activation"), str) and activation is None:
            activation, act_path = node.kwargs["activation"], (*node.path, "activation")
        if isinstance(node.kwargs.get("units"), int):
            return Head(out, activation, act_path, node.kwargs["units"], (*node.path, "units"))
        if node.type not in _PASS_THROUGH or len(node.inputs) != 1:
            return Head(out, activation, act_path, None, node.path)
        try:
            node = graph.node(node.inputs[0])
        except KeyError:
            return Head(out, activation, act_path, None, node.path)


def _losses(recipe: Recipe, outputs: list[str]) -> dict[str, tuple[Component, KeyPath]]:
    loss = recipe.compile.loss
    if isinstance(loss, dict):
        return {o: (c, ("compile", "loss", o)) for o, c in loss.items()}
    return {o: (loss, ("compile", "loss")) for o in outputs}


def _loss_name(comp: Component) -> str:
    """The loss as one lower-case word: `CategoricalCrossentropy` and `categorical_crossentropy` alike."""
    name = catalog.aliases("losses").get(comp.type, comp.type)
    name = {"bce": "binary_crossentropy", "BCE": "binary_crossentropy"}.get(name, name)
    return name.lower().replace("_", "")


def _target(recipe: Recipe, out: str) -> FeatureSpec | None:
    return recipe.data.targets.get(out) if recipe.data is not None else None


def _one_hot(feature: FeatureSpec) -> tuple[int, int] | None:
    """(step index, classes) of the target's one_hot step."""
    for i, step in enumerate(feature.steps):
        if step.one_hot is not None:
            return i, step.one_hot
    return None


def _heads(recipe: Recipe, graph: Graph) -> Iterator[tuple[Head, Component, KeyPath]]:
    losses = _losses(recipe, graph.outputs)
    for out in graph.outputs:
        head = _head(graph, out)
        if head is not None and out in losses:
            yield head, *losses[out]


# ----------------------------------------------------------------------------------------------------
# rules


@rule("from-logits-after-activation", "softmax/sigmoid output with a loss told `from_logits: true`")
def _from_logits(recipe: Recipe, graph: Graph) -> Iterator[Finding]:
    """`from_logits: true` tells the loss that the model outputs raw scores (logits) and to apply
    softmax/sigmoid itself. When the output layer already applies softmax or sigmoid, the loss squashes
    probabilities a second time: training still runs, but gradients are tiny and accuracy stalls. Either
    keep the activation and drop `from_logits`, or make the output linear and keep `from_logits: true`."""
    for head, comp, path in _heads(recipe, graph):
        if head.activation in ("softmax", "sigmoid") and comp.kwargs.get("from_logits") is True:
            yield Finding(
                "from-logits-after-activation",
                (*path, "from_logits"),
                f"output {head.name!r} already applies {head.activation}, and `from_logits: true` applies it again",
                f"remove `from_logits: true`, or give {head.name!r} `activation: linear`",
            )


@rule("sigmoid-with-categorical", "sigmoid output under a categorical cross-entropy over more than 2 classes")
def _sigmoid_categorical(recipe: Recipe, graph: Graph) -> Iterator[Finding]:
    """Categorical cross-entropy expects one probability distribution over the classes (they sum to 1),
    which softmax gives. Sigmoid scores each class on its own, so the loss sees numbers that do not sum to
    1 and Keras renormalises them silently. For one label per sample use `activation: softmax`; for several
    labels per sample (multi-label) keep sigmoid and use `binary_crossentropy`."""
    for head, comp, _path in _heads(recipe, graph):
        name = _loss_name(comp)
        if head.activation == "sigmoid" and "categoricalcrossentropy" in name and (head.units or 0) > 2:
            yield Finding(
                "sigmoid-with-categorical",
                head.activation_path,
                f"output {head.name!r} has sigmoid over {head.units} classes with {comp.type}",
                "use `activation: softmax` (one label per sample) or loss binary_crossentropy (multi-label)",
            )


@rule("target-encoding", "one-hot targets with a sparse loss, or integer labels with a one-hot loss")
def _target_encoding(recipe: Recipe, graph: Graph) -> Iterator[Finding]:
    """`sparse_categorical_crossentropy` takes integer class labels (0, 1, 2, ...);
    `categorical_crossentropy` takes one-hot rows ([0, 0, 1, ...]). A target with a `one_hot` step is
    one-hot; a target that declares `classes:` (or reads a folder's `label`) without one is integer labels.
    Match the loss to the encoding, or add/remove the `one_hot` step."""
    for head, comp, _path in _heads(recipe, graph):
        feature = _target(recipe, head.name)
        if feature is None:
            continue
        name = _loss_name(comp)
        one_hot = _one_hot(feature)
        where = ("data", "targets", head.name)
        if one_hot is not None and name == "sparsecategoricalcrossentropy":
            yield Finding(
                "target-encoding",
                (*where, "steps", one_hot[0], "one_hot"),
                f"target {head.name!r} is one-hot encoded but the loss is {comp.type}, which takes integer labels",
                "use categorical_crossentropy, or drop the one_hot step",
            )
        labels = feature.classes is not None or feature.from_ == "label"
        if one_hot is None and labels and name == "categoricalcrossentropy" and (head.units or 2) > 1:
            yield Finding(
                "target-encoding",
                where,
                f"target {head.name!r} holds integer class labels but the loss is {comp.type}, which takes one-hot rows",
                f"use sparse_categorical_crossentropy, or add `steps: [one_hot: {head.units or 'N'}]`",
            )


@rule("units-vs-classes", "the output's units differ from the number of classes the data declares")
def _units_vs_classes(recipe: Recipe, graph: Graph) -> Iterator[Finding]:
    """A classifier's last layer has one unit per class (or one sigmoid unit for two classes). When the
    target declares its classes (`classes: [...]` or a `one_hot: N` step) and the output's `units` differ,
    either some classes can never be predicted or Keras fails on the first batch."""
    for head, comp, _path in _heads(recipe, graph):
        feature = _target(recipe, head.name)
        if feature is None or head.units is None:
            continue
        one_hot = _one_hot(feature)
        count = one_hot[1] if one_hot is not None else len(feature.classes) if feature.classes else None
        if count is None or head.units == count:
            continue
        if count == 2 and head.units == 1 and "binary" in _loss_name(comp):
            continue
        declared = "one_hot" if one_hot is not None else "classes"
        yield Finding(
            "units-vs-classes",
            head.units_path,
            f"output {head.name!r} has {head.units} units but its target declares {count} classes ({declared})",
            f"set `units: {count}`",
        )


def _frozen(recipe: Recipe, name: str, block: tuple[str, ...], kwargs: dict[str, Any]) -> bool:
    if kwargs.get("trainable") is False:
        return True
    for stage in recipe.train.stages:
        freeze = (stage.trainable or {}).get("freeze", [])
        for pattern in [freeze] if isinstance(freeze, str) else freeze:
            if pattern == "all" or fnmatch.fnmatchcase(name, pattern) or pattern in block:
                return True
    return False


@rule("frozen-random-weights", "a frozen pretrained model or layer with `weights: null` (random weights)")
def _frozen_random(recipe: Recipe, graph: Graph) -> Iterator[Finding]:
    """`weights: null` builds a keras.applications model with random weights. Freezing it (`trainable:
    false`, or a stage's `trainable: {freeze: [...]}`) then trains only the head on random features, which
    learns close to nothing (chance-level accuracy). Load pretrained weights (`weights: imagenet`, e.g.
    `--set model.layers[0].weights=imagenet`), or leave the model trainable."""
    for node in graph.nodes:
        random = node.kind == "application" and "weights" in node.kwargs and node.kwargs["weights"] is None
        if random and _frozen(recipe, node.name, node.block, node.kwargs):
            yield Finding(
                "frozen-random-weights",
                (*node.path, "weights"),
                f"{node.name!r} is frozen with `weights: null`, so its features are random",
                f"load pretrained weights (`weights: imagenet`, or `--set {format_path(node.path)}.weights=imagenet`)"
                " or do not freeze it",
            )


def _snake(name: str) -> str:
    """Keras' default metric names: `AUC` -> `auc`, `MeanIoU` -> `mean_io_u`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _metric_names(comp: Component) -> list[str]:
    """The name(s) Keras may log a metric under (custom code: its function or its class's snake-case name)."""
    if isinstance(comp.kwargs.get("name"), str):
        return [comp.kwargs["name"]]
    if ":" in comp.type:
        short = comp.type.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        return list(dict.fromkeys([short, _snake(short)]))
    entry = catalog.entry("metrics", comp.type)
    if entry is None or entry["kind"] == "function":
        return [comp.type]
    return [_snake(comp.type)]


def _produced(recipe: Recipe, graph: Graph) -> list[str]:
    """The names Keras logs for this recipe's losses and metrics, without and with `val_`."""
    outputs = graph.outputs
    names = ["loss"]
    if len(outputs) > 1:
        names += [f"{o}_loss" for o in outputs]
    metrics = recipe.compile.metrics
    per_output = metrics if isinstance(metrics, dict) else {o: metrics for o in outputs}
    for out, comps in per_output.items():
        for comp in comps:
            names += [f"{out}_{m}" if len(outputs) > 1 else m for m in _metric_names(comp)]
    return [*names, *(f"val_{n}" for n in names)]


def _callbacks(recipe: Recipe) -> Iterator[tuple[Component, KeyPath, int]]:
    """Each callback with its path and the epochs it runs for."""
    stages = recipe.train.stages
    epochs = max((s.epochs for s in stages), default=recipe.train.epochs)
    for i, comp in enumerate(recipe.train.callbacks):
        yield comp, ("train", "callbacks", i), epochs
    for s, stage in enumerate(stages):
        for i, comp in enumerate(stage.callbacks or []):
            yield comp, ("train", "stages", s, "callbacks", i), stage.epochs


@rule("unknown-monitor", "a callback monitors a metric the recipe never produces")
def _unknown_monitor(recipe: Recipe, graph: Graph) -> Iterator[Finding]:
    """EarlyStopping, ModelCheckpoint and ReduceLROnPlateau watch one logged value by name. Keras logs
    `loss`, each metric under the name it was given (`accuracy`, not `acc`, when written `accuracy`),
    `<output>_<metric>` for multi-output models, and the same with `val_` on validation data. A name that
    is never logged makes the callback warn every epoch and do nothing: early stopping never stops, the
    checkpoint never saves a best model."""
    produced = _produced(recipe, graph)
    for comp, path, _epochs in _callbacks(recipe):
        monitor = comp.kwargs.get("monitor")
        if isinstance(monitor, str) and monitor not in produced:
            hint = catalog.did_you_mean(monitor, produced)
            yield Finding(
                "unknown-monitor",
                (*path, "monitor"),
                f"{comp.type} monitors {monitor!r}, which this recipe never logs{hint}",
                f"monitor one of: {', '.join(produced)}",
            )


@rule("patience-over-epochs", "EarlyStopping's patience is at least the number of epochs")
def _patience(recipe: Recipe, graph: Graph) -> Iterator[Finding]:
    """EarlyStopping stops after `patience` epochs without improvement. With patience >= the epochs it
    runs for, it can never stop training early (it only restores weights, if asked). Lower `patience`,
    or train for more epochs."""
    for comp, path, epochs in _callbacks(recipe):
        patience = comp.kwargs.get("patience")
        if comp.type == "EarlyStopping" and isinstance(patience, int) and patience >= epochs:
            yield Finding(
                "patience-over-epochs",
                (*path, "patience"),
                f"EarlyStopping has patience {patience} but runs for {epochs} epochs, so it never stops early",
                f"use a patience below {epochs}, or train for more epochs",
            )


def lint(recipe: Recipe, graph: Graph) -> list[Finding]:
    """Every rule's findings, in rule order."""
    return [finding for r in RULES.values() for finding in r.check(recipe, graph)]


def explain(name: str) -> str:
    """A rule's name, summary and explanation; unknown names list the rules."""
    found = RULES.get(name)
    if found is None:
        from dlrun.errors import RecipeError

        hint = catalog.did_you_mean(name, list(RULES))
        raise RecipeError(f"no lint rule {name!r}{hint}; rules: {', '.join(RULES)}")
    return f"{found.name}: {found.summary}\n\n{found.explanation}"
