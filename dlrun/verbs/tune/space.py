"""The recipe's `search:` section: which recipe values to search, over what, towards which objective.

    search:
      space:
        compile.optimizer.learning_rate: {float: [1.0e-4, 1.0e-1], log: true}
        model.layers[0].units: {choice: [32, 64, 128]}
        compile.optimizer.type: {choice: [Adam, SGD]}
        compile.optimizer.momentum: {float: [0.0, 0.9], when: {compile.optimizer.type: SGD}}
      objective: {metric: val_accuracy, direction: max}   # `at: best` (default) or `last` epoch
      trials: 20
      sampler: tpe                                         # tpe, random, cmaes, qmc
      pruner: median                                       # median, hyperband, none

Every key is a recipe path written like a `--set` override; a trial's values are applied as `--set`
overrides, so each trial is an ordinary, replayable run. `when:` makes a parameter conditional on earlier
ones (`{key: value}` or `{key: [value, ...]}`). `check_space` checks every path against the recipe (with a
did-you-mean) and probes every choice and both ends of every range through the normal recipe validation,
so a bad value is reported at its search key before any training. Nothing here imports Optuna or TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from dlrun.errors import RecipeError, format_path
from dlrun.recipe.load import Document, KeyPath
from dlrun.recipe.search import SearchParam, SearchSpec, _label
from dlrun.util import did_you_mean

if TYPE_CHECKING:
    import optuna

    from dlrun.recipe.compose import LoadedRecipe
    from dlrun.recipe.schema import Recipe

MAX_PROBES = 200


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


# ----------------------------------------------------------------------------------------------------
# checked space


@dataclass
class Param:
    """One checked search parameter."""

    key: str
    path: KeyPath
    spec: SearchParam
    when: dict[str, Any] = field(default_factory=dict)  # key of an earlier param -> wanted value(s)

    @property
    def labels(self) -> list[Any]:
        """What Optuna sees for a choice (the values themselves when all are scalars)."""
        choices = self.spec.choice or []
        return choices if all(_scalar(c) for c in choices) else [_label(c) for c in choices]

    def suggest(self, trial: optuna.Trial) -> Any:
        """This parameter's value for an Optuna trial."""
        s = self.spec
        if s.choice is not None:
            picked = trial.suggest_categorical(self.key, self.labels)
            return s.choice[self.labels.index(picked)]
        low, high = s.bounds
        if s.int_ is not None:
            return trial.suggest_int(self.key, int(low), int(high), step=int(s.step or 1), log=s.log)
        return trial.suggest_float(self.key, float(low), float(high), step=s.step, log=s.log)

    def value_of(self, stored: Any) -> Any:
        """The recipe value for a value stored by Optuna (a label for non-scalar choices)."""
        if self.spec.choice is not None and stored in self.labels:
            return self.spec.choice[self.labels.index(stored)]
        return stored


def _matches(value: Any, wanted: Any) -> bool:
    return value == wanted or (isinstance(wanted, list) and value in wanted)


@dataclass
class Space:
    """The checked `search:` section: parameters in order, plus the overrides every trial starts with."""

    spec: SearchSpec
    params: list[Param]
    prelude: list[str] = field(default_factory=list)  # e.g. `compile.optimizer={"type": "adam"}`

    def active(self, values: dict[str, Any], param: Param) -> bool:
        """Whether `param` is searched given the values chosen so far (its `when` holds)."""
        return all(ref in values and _matches(values[ref], want) for ref, want in param.when.items())

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Values for one trial: every active parameter, in order."""
        values: dict[str, Any] = {}
        for p in self.params:
            if self.active(values, p):
                values[p.key] = p.suggest(trial)
        return values

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """`--set` overrides for the values (after the prelude)."""
        by_key = {p.key: p for p in self.params}
        return [*self.prelude, *(f"{format_path(by_key[k].path)}={json.dumps(v)}" for k, v in values.items())]

    def describe(self) -> dict[str, Any]:
        """What defines the study's question: the space and the objective (stable, for the fingerprint)."""
        objectives = [{"metric": o.metric, "goal": o.goal, "at": o.at} for o in self.spec.objectives]
        return {
            "space": {p.key: p.spec.model_dump(by_alias=True, exclude_defaults=True) for p in self.params},
            "objective": objectives[0] if len(objectives) == 1 else objectives,
        }

    def fingerprint(self) -> str:
        """sha256 of `describe()`: a resumed study refuses a different one."""
        text = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_space(doc: Document, recipe: Recipe, spec: SearchSpec, reload: Callable[[list[str]], LoadedRecipe]) -> Space:
    """Check every search key against the recipe, `when` references, and probe values through validation.

    `recipe` is the validated `Recipe`; `reload(overrides)` loads the recipe with extra overrides (raising
    `RecipeError` when they make it invalid).
    """
    params: list[Param] = []
    prelude: list[str] = []
    by_path: dict[KeyPath, str] = {}
    for key, param in spec.space.items():
        where: KeyPath = ("search", "space", key)
        path = _parse_key(doc, key, where)
        if path in by_path:
            raise doc.error(f"{key!r} is the same recipe value as {by_path[path]!r}", where, key=True)
        by_path[path] = key
        for expansion in _walk(doc, recipe, path, key, where):
            if expansion not in prelude:
                prelude.append(expansion)
        when: dict[str, Any] = {}
        for ref, wanted in (param.when or {}).items():
            at: KeyPath = (*where, "when", ref)
            ref_path = _parse_key(doc, ref, at)
            earlier = {p.path: p for p in params}
            if ref_path not in earlier:
                keys = [p.key for p in params]
                hint = did_you_mean(ref, keys)
                known = f"; earlier keys: {', '.join(keys)}" if keys else "; it must be an earlier search key"
                raise doc.error(
                    f"`when` refers to {ref!r}, which is not an earlier search key{hint}{known}", at, key=True
                )
            other = earlier[ref_path]
            if other.spec.choice is not None and not any(_matches(c, wanted) for c in other.spec.choice):
                shown = ", ".join(_label(c) for c in other.spec.choice)
                raise doc.error(f"`when` can never hold: {other.key} is one of {shown}", at)
            when[other.key] = wanted
        params.append(Param(key=key, path=path, spec=param, when=when))
    space = Space(spec=spec, params=params, prelude=prelude)
    _probe(doc, space, reload)
    return space


def _parse_key(doc: Document, key: str, where: KeyPath) -> KeyPath:
    from dlrun.recipe.compose import parse_override

    try:
        path, _ = parse_override(f"{key}=0")
    except RecipeError as exc:
        raise doc.error(f"search key {key!r}: {exc.message}", where, key=True) from None
    if path[0] in ("search", "ensemble"):
        raise doc.error(f"the `{path[0]}` section itself cannot be searched", where, key=True)
    return path


def _walk(doc: Document, recipe: Recipe, path: KeyPath, key: str, where: KeyPath) -> list[str]:
    """Follow `path` through the validated recipe; returns shorthand expansions the overrides need.

    A path exists when the recipe has it (written or defaulted); its last key may also be a new Keras
    argument of a layer or component (`compile.optimizer.learning_rate` on `{type: Adam}`), which the
    probes then check against Keras' signature.
    """
    obj: Any = recipe
    raw: Any = doc.data
    expansions: list[str] = []
    for i, part in enumerate(path):
        last = i == len(path) - 1
        here = format_path(path[:i]) or "the recipe"
        if isinstance(obj, BaseModel):
            names = {(f.alias or n): n for n, f in type(obj).model_fields.items()}
            extra = obj.model_extra or {}
            if isinstance(raw, str) and "type" in names:  # `optimizer: adam` is `{type: adam}`
                expansions.append(f"{format_path(path[:i])}={json.dumps({'type': raw})}")
                raw = {"type": raw}
            if isinstance(part, str) and part in names:
                obj = getattr(obj, names[part])
            elif isinstance(part, str) and part in extra:
                obj = extra[part]
            elif isinstance(part, str) and last and type(obj).model_config.get("extra") == "allow":
                return expansions  # a new Keras argument; the probes check it
            else:
                raise _missing(doc, key, where, here, part, [*names, *extra])
        elif isinstance(obj, dict):
            if part not in obj:
                raise _missing(doc, key, where, here, part, [str(k) for k in obj])
            obj = obj[part]
        elif isinstance(obj, list):
            if not isinstance(part, int):
                raise doc.error(f"{key!r}: {here} is a list; index it with [N], not .{part}", where, key=True)
            if part >= len(obj):
                raise doc.error(f"{key!r}: {here} has {len(obj)} items, no [{part}]", where, key=True)
            obj = obj[part]
        else:
            shown = repr(obj) if len(repr(obj)) <= 40 else repr(obj)[:37] + "..."
            raise doc.error(f"{key!r}: {here} is {shown}, which has no {part!r}", where, key=True)
        raw = _child(raw, part)
    return expansions


def _child(raw: Any, part: str | int) -> Any:
    if isinstance(raw, dict):
        return raw.get(part)
    if isinstance(raw, list) and isinstance(part, int) and part < len(raw):
        return raw[part]
    return None


def _missing(doc: Document, key: str, where: KeyPath, here: str, part: Any, known: list[str]) -> RecipeError:
    hint = did_you_mean(str(part), known)
    return doc.error(f"{key!r} is not in the recipe: {here} has no {str(part)!r}{hint}", where, key=True)


def _probe(doc: Document, space: Space, reload: Callable[[list[str]], Any]) -> None:
    """Validate the recipe with every choice and both ends of every range (others at their first value)."""
    base = {p.key: p.spec.candidates()[0] for p in space.params}
    by_key = {p.key: p for p in space.params}
    probes: list[tuple[Param, Any]] = [(p, v) for p in space.params for v in p.spec.candidates()]
    seen: set[str] = set()
    for param, value in probes[:MAX_PROBES]:
        point = dict(base)
        point[param.key] = value
        for _ in range(len(space.params)):  # make this parameter's conditions (and theirs) hold
            changed = False
            for p in [param, *(by_key[r] for r in param.when)]:
                for ref, wanted in p.when.items():
                    want = wanted[0] if isinstance(wanted, list) and wanted and point[ref] not in wanted else wanted
                    if not _matches(point[ref], wanted):
                        point[ref] = want
                        changed = True
            if not changed:
                break
        values: dict[str, Any] = {}
        for p in space.params:
            if space.active(values, p):
                values[p.key] = point[p.key]
        overrides = space.overrides(values)
        signature = json.dumps(overrides)
        if signature in seen:
            continue
        seen.add(signature)
        try:
            reload(overrides)
        except RecipeError as exc:
            blamed = _blame(space, exc.path)
            if blamed is not None:  # the error is at a searched value itself (a misspelt new argument, ...)
                where, value = blamed, point[blamed.key]
            else:
                where = param
            inner = f"{format_path(exc.path)}: {exc.message}" if exc.path else exc.message
            if blamed is not None and exc.path == blamed.path:
                message = exc.message  # e.g. "Adam has no argument 'learnig_rate' (did you mean ...)"
            else:
                message = f"with {where.key} = {_label(value)} the recipe is invalid: {inner}"
            raise doc.error(message, ("search", "space", where.key), key=True) from None


def _blame(space: Space, path: KeyPath) -> Param | None:
    """The parameter whose recipe path contains (or is inside) an error's path, if any."""
    hits = [p for p in space.params if path and (path[: len(p.path)] == p.path or p.path[: len(path)] == path)]
    return max(hits, key=lambda p: len(p.path)) if hits else None
