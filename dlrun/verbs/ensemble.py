"""`dlrun ensemble`: several trained runs combined into one prediction, scored beside its members.

    dlrun ensemble runs/digits/A runs/digits/B runs/digits/C [--weights 2,1,1] [--method mean|vote]
                   [--export ensemble.keras] [--json]

Each member's model predicts its own recipe's evaluation split (so members may prepare their inputs
differently, as long as they predict the same samples and targets); `mean` averages the predictions
(weighted), `vote` takes the (weighted) majority class with ties broken by the mean probability. The members
and the ensemble are scored with the first member's compiled loss and metrics on the predictions, so the
numbers sit side by side (regularization penalties, which belong to a model's training loss, are left
out). `--export` writes the mean ensemble as one functional Keras model that calls every member model and
averages with `keras.layers.Average` (or a weighted sum of `Rescaling` layers): built-in layers only, so
`keras.saving.load_model` reads it back without dlrun and predicts the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.data.prepare import Prepared
from dlrun.errors import RecipeError
from dlrun.importer import Importer
from dlrun.recipe.compose import LoadedRecipe

if TYPE_CHECKING:
    import keras
    from rich.table import Table

METHODS = ("mean", "vote")
VOTE_NUDGE = 1e-3


@dataclass
class Member:
    """One trained run: its recipe, model and prepared data."""

    run: Path
    loaded: LoadedRecipe  # of the run's recipe.yaml
    model: keras.Model
    prepared: Prepared
    importer: Importer

    @property
    def inputs(self) -> list[str]:
        return list(self.loaded.graph.inputs)

    @property
    def outputs(self) -> list[str]:
        return list(self.loaded.graph.outputs)


def load_member(run_path: Path, *, trust: bool = False, unsafe: bool = False) -> Member:
    """A finished run's model, recipe and data."""
    from dlrun.data.prepare import prepare
    from dlrun.engine.artifacts import load_run

    trained = load_run(Path(run_path), trust=trust, unsafe=unsafe)
    recipe = trained.loaded.recipe
    if recipe.data is None:
        raise RecipeError(f"{run_path}: the run's recipe has no data section to evaluate on")
    prepared = prepare(recipe.data, trained.loaded.base_dir, recipe.seed)
    return Member(
        run=Path(run_path), loaded=trained.loaded, model=trained.model, prepared=prepared, importer=trained.importer
    )


def parse_weights(text: str | None, count: int) -> list[float]:
    """`2,1,1` -> weights normalized to sum 1 (equal weights when None)."""
    if text is None or not text.strip():
        return [1.0 / count] * count
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise RecipeError(f"--weights takes numbers separated by commas, e.g. 2,1,1 (got {text!r})") from None
    if len(weights) != count:
        raise RecipeError(f"--weights has {len(weights)} numbers for {count} runs")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise RecipeError(f"--weights must be non-negative with a positive sum (got {text!r})")
    total = sum(weights)
    return [w / total for w in weights]


def check_compatible(members: list[Member], split: str) -> None:
    """Same input names and shapes, same outputs and output shapes, same samples and targets."""
    first = members[0]
    base_inputs = {n: _shape(t) for n, t in zip(first.inputs, first.model.inputs, strict=False)}
    base_outputs = {n: _shape(t) for n, t in zip(first.outputs, _as_list(first.model.outputs), strict=False)}
    for m in members:
        if split not in m.prepared.splits:
            raise RecipeError(f"{m.run}: the data has no {split!r} split (it has: {', '.join(m.prepared.splits)})")
    _, base_targets = first.prepared.splits[split]
    for m in members[1:]:
        inputs = {n: _shape(t) for n, t in zip(m.inputs, m.model.inputs, strict=False)}
        outputs = {n: _shape(t) for n, t in zip(m.outputs, _as_list(m.model.outputs), strict=False)}
        if inputs != base_inputs:
            raise RecipeError(
                f"{m.run} takes inputs {_shown(inputs)} but {first.run} takes {_shown(base_inputs)}; "
                "ensemble members must share their inputs"
            )
        if outputs != base_outputs:
            raise RecipeError(
                f"{m.run} has outputs {_shown(outputs)} but {first.run} has {_shown(base_outputs)}; "
                "ensemble members must share their outputs"
            )
        _, targets = m.prepared.splits[split]
        for name in first.outputs:
            a, b = np.asarray(base_targets[name]), np.asarray(targets[name])
            if a.shape != b.shape or not np.array_equal(a, b):
                raise RecipeError(
                    f"{m.run} and {first.run} have different {split!r} targets for {name!r} "
                    f"({len(b)} vs {len(a)} samples, or another order); ensemble members must be scored on the "
                    "same samples"
                )


def _shape(tensor: keras.KerasTensor) -> tuple[int | None, ...]:
    return tuple(tensor.shape[1:])


def _shown(shapes: dict[str, tuple[Any, ...]]) -> str:
    return ", ".join(f"{n} {list(s)}" for n, s in shapes.items())


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def predict(member: Member, split: str, batch_size: int) -> dict[str, np.ndarray]:
    """The member's predictions on `split`, by output name."""
    xs, _ = member.prepared.splits[split]
    x = xs[member.inputs[0]] if len(member.inputs) == 1 else [xs[k] for k in member.inputs]
    out = member.model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(out, dict):
        return {k: np.asarray(out[k]) for k in member.outputs}
    return {k: np.asarray(v) for k, v in zip(member.outputs, _as_list(out), strict=True)}


def combine(predictions: list[dict[str, np.ndarray]], weights: list[float], method: str) -> dict[str, np.ndarray]:
    """Weighted mean of the predictions, or the weighted majority vote (as vote shares per class)."""
    if method not in METHODS:
        raise RecipeError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    w = np.asarray(weights, dtype="float64")
    out: dict[str, np.ndarray] = {}
    for name in predictions[0]:
        stack = np.stack([p[name] for p in predictions]).astype("float64")  # (members, samples, ...)
        mean = np.tensordot(w, stack, axes=1)
        if method == "mean":
            out[name] = mean.astype("float32")
            continue
        if stack.min() < 0 or stack.max() > 1:
            raise RecipeError(f"--method vote needs class probabilities, but output {name!r} has values outside [0, 1]")
        if stack.shape[-1] >= 2:
            classes = stack.argmax(axis=-1)  # (members, samples, ...)
            votes = np.tensordot(w, np.eye(stack.shape[-1])[classes], axes=1)  # weighted vote shares
            winner = np.eye(stack.shape[-1])[(votes + 1e-9 * mean).argmax(axis=-1)]  # ties: the higher mean
        else:
            votes = np.tensordot(w, (stack >= 0.5).astype("float64"), axes=1)  # share voting for class 1
            winner = ((votes + 1e-9 * (mean - 0.5)) > 0.5).astype("float64")
        # the vote shares, nudged so that the winner stays the arg-max after the cast to float32
        out[name] = ((1 - VOTE_NUDGE) * votes + VOTE_NUDGE * winner).astype("float32")
    return out


class Scorer:
    """The first member's compiled loss and metrics, computed on given predictions (Keras' own names).

    A model of `Identity` layers named like the outputs, compiled from the member's recipe; built once and
    evaluated for every member and the ensemble.
    """

    def __init__(self, member: Member, predictions: dict[str, np.ndarray], batch_size: int) -> None:
        import keras

        from dlrun.engine.compile import compile_model

        self.outputs = member.outputs
        self.batch_size = batch_size
        inputs = [keras.Input(shape=predictions[o].shape[1:], name=f"{o}_prediction") for o in self.outputs]
        heads = [keras.layers.Identity(name=o)(i) for o, i in zip(self.outputs, inputs, strict=True)]
        self.model = keras.Model(inputs[0] if len(inputs) == 1 else inputs, heads[0] if len(heads) == 1 else heads)
        compile_model(self.model, member.loaded.recipe.compile, self.outputs, member.importer)

    def __call__(self, predictions: dict[str, np.ndarray], targets: dict[str, Any]) -> dict[str, float]:
        outputs = self.outputs
        x = predictions[outputs[0]] if len(outputs) == 1 else [predictions[o] for o in outputs]
        y = targets[outputs[0]] if len(outputs) == 1 else {o: targets[o] for o in outputs}
        result = self.model.evaluate(x, y, batch_size=self.batch_size, verbose=0, return_dict=True)
        return {k: float(v) for k, v in result.items()}


def build_export(members: list[Member], weights: list[float]) -> keras.Model:
    """One functional Keras model: every member called on shared inputs, predictions averaged per output."""
    import keras

    first = members[0]
    inputs = [
        keras.Input(shape=t.shape[1:], dtype=t.dtype, name=n)
        for n, t in zip(first.inputs, first.model.inputs, strict=True)
    ]
    per_output: dict[str, list[Any]] = {o: [] for o in first.outputs}
    equal = max(weights) - min(weights) < 1e-12
    for i, m in enumerate(members):
        m.model.name = f"member_{i}"
        outs = _as_list(m.model(inputs[0] if len(inputs) == 1 else inputs))
        for o, tensor in zip(m.outputs, outs, strict=True):
            per_output[o].append(
                tensor if equal else keras.layers.Rescaling(weights[i], name=f"{o}_weight_{i}")(tensor)
            )
    heads = [
        keras.layers.Average(name=o)(tensors) if equal else keras.layers.Add(name=o)(tensors)
        for o, tensors in per_output.items()
    ]
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs, heads[0] if len(heads) == 1 else heads, name="ensemble"
    )


def ensemble_runs(
    runs: list[Path],
    *,
    weights: str | list[float] | None = None,
    method: str = "mean",
    split: str | None = None,
    export: Path | None = None,
    trust: bool = False,
    unsafe: bool = False,
) -> dict[str, Any]:
    """Evaluate the ensemble of `runs` beside each member; optionally export it as one Keras model."""
    if len(runs) < 2:
        raise RecipeError("an ensemble needs at least two runs")
    _check_options(method, export)
    w = parse_weights(",".join(str(x) for x in weights) if isinstance(weights, list) else weights, len(runs))
    members = [load_member(Path(r), trust=trust, unsafe=unsafe) for r in runs]
    first = members[0]
    chosen = split or first.loaded.recipe.eval.split
    check_compatible(members, chosen)
    recipe = first.loaded.recipe
    batch = recipe.eval.batch_size or recipe.train.batch_size
    predictions = [predict(m, chosen, batch) for m in members]
    combined = combine(predictions, w, method)
    _, targets = first.prepared.splits[chosen]
    score = Scorer(first, combined, batch)
    result: dict[str, Any] = {
        "split": chosen,
        "samples": first.prepared.count(chosen),
        "method": method,
        "weights": w,
        "outputs": first.outputs,
        "members": [
            {"run": str(m.run), "metrics": score(p, targets)} for m, p in zip(members, predictions, strict=True)
        ],
        "ensemble": {"metrics": score(combined, targets)},
        "export": None,
    }
    if export is not None:
        from dlrun.engine.rundir import atomic_target

        model = build_export(members, w)
        with atomic_target(Path(export), ".keras") as tmp:
            model.save(str(tmp))
        result["export"] = str(export)
    return result


def _check_options(method: str, export: Path | None) -> None:
    if method not in METHODS:
        raise RecipeError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if export is not None:
        if method != "mean":
            raise RecipeError("--export writes the mean ensemble; use --method mean")
        if Path(export).suffix != ".keras":
            raise RecipeError(f"--export writes a .keras file, not {Path(export).name!r}")


def render_table(result: dict[str, Any]) -> Table:
    """A rich table: one row per metric, one column per member, then the ensemble."""
    from rich.table import Table

    title = (
        f"ensemble ({result['method']}) of {len(result['members'])} runs on {result['split']} "
        f"({result['samples']} samples)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    names = _member_names([m["run"] for m in result["members"]])
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("ensemble", justify="right", style="bold")
    for key, value in result["ensemble"]["metrics"].items():
        cells = [f"{m['metrics'].get(key, float('nan')):.4f}" for m in result["members"]]
        table.add_row(key, *cells, f"{value:.4f}")
    return table


def _member_names(runs: list[str]) -> list[str]:
    """Short, distinct column names: the last path parts that tell the runs apart."""
    parts = [Path(r).parts for r in runs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{i + 1}: {r}" for i, r in enumerate(runs)]


def train_ensemble(
    recipe: Path,
    *,
    overrides: tuple[str, ...] | list[str] = (),
    runs_root: Path = Path("runs"),
    weights: str | list[float] | None = None,
    method: str | None = None,
    split: str | None = None,
    export: Path | None = None,
    trust: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Train the members a recipe's `ensemble:` section declares, then score them as `ensemble_runs` does."""
    from dlrun.console import say
    from dlrun.engine.session import train as train_run
    from dlrun.loading import load_recipe

    base = load_recipe(recipe, overrides)
    spec = base.recipe.ensemble
    if spec is None:
        raise RecipeError(
            "this recipe has no `ensemble:` section; add one, e.g. `ensemble: {members: [1, 2, 3]}` (seeds), "
            "or pass run folders",
            location=base.doc.locate(()),
        )
    method = method or spec.method
    _check_options(method, export)
    if weights is not None:
        parse_weights(",".join(str(x) for x in weights) if isinstance(weights, list) else weights, len(spec.members))
    sources = []
    for i, member in enumerate(spec.members):
        if isinstance(member, int):
            sources.append((Path(recipe), [*overrides, f"seed={member}"], f"seed {member}"))
            continue
        file = base.base_dir / member
        if not file.is_file():
            raise base.doc.error(f"member recipe not found: {file}", ("ensemble", "members", i))
        sources.append((file, [], member))
    runs = []
    for i, (file, extra, label) in enumerate(sources):
        loaded = load_recipe(file, extra)
        loaded.doc.data.pop("ensemble", None)  # each member is an ordinary run
        loaded.recipe.ensemble = None
        say(f"member {i + 1}/{len(sources)} ({label}): training", quiet=quiet)
        result = train_run(loaded, runs_root=runs_root, trust=trust, quiet=True, overrides=tuple(extra))
        say(f"member {i + 1}/{len(sources)}: {result.run.path}", quiet=quiet)
        runs.append(result.run.path)
    out = ensemble_runs(
        runs,
        weights=weights if weights is not None else spec.weights,
        method=method,
        split=split,
        export=export,
        trust=True,  # runs this command just trained, importing only what their recipes were allowed to
    )
    out["recipe"] = str(recipe)
    return out
