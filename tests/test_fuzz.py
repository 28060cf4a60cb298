"""Property-based fuzz of load + compose + validate + graph checks: the only exception is `RecipeError`.

10,900 generated documents in all: random YAML-ish text and lines, random nested data dumped to YAML,
data shaped like recipes (right keys, wrong everything else), mutations of the real recipes in `recipes/`
(delete a key, change a value's type, rename a key, duplicate a node, swap values, rewire references, typos,
truncate the text, drop/duplicate/swap/re-indent lines, stray characters), and random `--set` overrides.
Every error must render as one non-empty line naming the recipe (or the override) and, for the recipe, a
line number.

Hypothesis drives every test. Building rich values with hypothesis strategies costs 10-90 ms an example on
a busy two-core machine, so most tests let hypothesis pick a seed and build the document with a plain
`random.Random(seed)`: fast, and a failure still reproduces (hypothesis prints the seed). Two tests keep
pure strategies for their shrinking.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from dlrun.errors import RecipeError
from dlrun.graph.check import resolve_graph
from dlrun.recipe.compose import compose, validate_document
from dlrun.recipe.load import load_text
from dlrun.recipe.schema import Recipe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RECIPE_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "recipes").glob("*.yaml"))}

EXAMPLES = {
    "random_text": 900,
    "random_data": 400,
    "seeded_text": 1500,
    "seeded_lines": 1500,
    "seeded_data": 1300,
    "recipe_shaped_data": 1200,
    "mutated_recipes": 2200,
    "mutated_recipe_text": 1200,
    "overrides": 700,
}
SEEDS = st.integers(min_value=0, max_value=2**63 - 1)


def fuzz(kind: str) -> settings:
    return settings(
        max_examples=EXAMPLES[kind],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> str:
    """Where the fuzzed documents pretend to live: an empty folder, so `extends:` finds nothing real."""
    return str(tmp_path_factory.mktemp("fuzz") / "fuzz.yaml")


def run(text: str, file: str, overrides: tuple[str, ...] = ()) -> None:
    """The static pipeline of `dlrun validate`; a `RecipeError` must be one located line."""
    try:
        doc = compose(load_text(text, file), overrides)
        recipe = validate_document(doc)
        resolve_graph(recipe, doc)
    except RecipeError as exc:
        shown = str(exc)
        assert shown.strip() and "\n" not in shown, repr(shown)
        assert exc.location is not None, shown
        if exc.location.file.startswith("--set "):
            assert exc.location.file[len("--set ") :] in [*overrides, *map(repr, overrides)], shown
        else:
            assert exc.location.file == file, shown
            assert exc.location.line is not None, shown


# ---------------------------------------------------------------------------------------------------
# vocabulary: the words recipes are made of, so generated documents get past the first checks


def _schema_keys() -> list[str]:
    keys: set[str] = set()
    seen: set[type] = set()
    stack: list[Any] = [Recipe]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item in seen:
                continue
            seen.add(item)
            for name, field in item.model_fields.items():
                keys.add(field.alias or name)
                stack.append(field.annotation)
        else:
            stack.extend(get_args(item))
    return sorted(keys)


KEYS = [
    *_schema_keys(),
    *("units", "activation", "filters", "kernel_size", "rate", "axis", "pool_size", "target_shape", "strides"),
    *("padding", "learning_rate", "patience", "monitor", "decay_steps", "initial_learning_rate", "<<"),
]
WORDS = [
    *("Dense", "Conv2D", "Add", "Concatenate", "Flatten", "Dropout", "Reshape", "MaxPooling2D", "Embedding"),
    *("LSTM", "BatchNormalization", "Activation", "applications.MobileNetV2", "MobileNetV2", "dense", "Dens"),
    *("adam", "Adam", "sgd", "mse", "categorical_crossentropy", "accuracy", "EarlyStopping", "ExponentialDecay"),
    *("relu", "softmax", "mnist", "npz", "csv", "sklearn", "iris", "test", "train", "validation", "auto"),
    *("x", "y", "image", "hidden", "digit", "${units}", "${index * 2}", "${train.epochs}", "${nope.path}"),
    *("${", "${1/0}", "${units *}", "${round(1e308*10)}", "module:Thing", "base.yaml", "float32", "same"),
]
PUNCT = list(":-[]{},#&*!|>'\"%@`?~ \n\t\\$.<=")
ODD_CHARS = ["\x00", "\x85", "\u2028", "\ufeff", "é", "中", "\U0001f600", "\r", "\x1b"]
LINES = [
    *("name: x", "model:", "  inputs:", "    x: {shape: [4]}", "  layers:", "    - {type: Dense, units: 1}"),
    *("compile:", "  loss: mse", "  - a", "&a [1, 2]", "*a", "<<: *a", "? [a]", "--- ", "...", "%YAML 1.1"),
    *("!!python/name:os.system", "extends: base.yaml", "train: {epochs: ${train.batch_size}}", "blocks:"),
]


class Gen:
    """Fast random building blocks (a `random.Random` seeded by hypothesis)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def text(self, size: int = 12) -> str:
        pool = self.r.choice([PUNCT + list("abcxyz019"), ODD_CHARS + PUNCT, list("abcdefghijklmnopqrstuvwxyz_.")])
        return "".join(self.r.choice(pool) for _ in range(self.r.randint(0, size)))

    def scalar(self) -> Any:
        kind = self.r.randrange(10)
        if kind == 0:
            return None
        if kind == 1:
            return self.r.random() < 0.5
        if kind == 2:
            return self.r.choice([0, -1, 1, 2, 3, 64, 10**9, 2**70, -(2**70)])
        if kind == 3:
            return self.r.choice([0.0, -0.5, 0.5, 1.5, 1e-3, 1e308, float("inf"), float("-inf"), float("nan")])
        if kind == 4:
            return self.text()
        if kind in (5, 6):
            return self.r.choice(WORDS)
        return self.r.choice(KEYS)

    def key(self, shaped: bool) -> Any:
        if shaped or self.r.random() < 0.6:
            return self.r.choice(KEYS)
        return self.r.choice([self.text(6), self.r.randint(-3, 3), True, None, 1.5])

    def value(self, depth: int = 0, *, shaped: bool = False) -> Any:
        roll = self.r.random()
        if depth >= 5 or roll < 0.4:
            return self.scalar()
        if roll < 0.65:
            return [self.value(depth + 1, shaped=shaped) for _ in range(self.r.randint(0, 4))]
        return {self.key(shaped): self.value(depth + 1, shaped=shaped) for _ in range(self.r.randint(0, 6))}


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)


# ---------------------------------------------------------------------------------------------------
# 1. random text


@fuzz("random_text")
@given(text=st.text(alphabet=st.one_of(st.sampled_from(PUNCT + list("ab01")), st.characters()), max_size=80))
def test_fuzz_random_text(recipe_file, text):
    run(text, recipe_file)


@fuzz("seeded_text")
@given(seed=SEEDS)
def test_fuzz_seeded_text(recipe_file, seed):
    run(Gen(seed).text(200), recipe_file)


@fuzz("seeded_lines")
@given(seed=SEEDS)
def test_fuzz_seeded_lines(recipe_file, seed):
    g = Gen(seed)
    lines = [
        " " * g.r.choice([0, 0, 2, 4, 6, 1]) + (g.r.choice(LINES) if g.r.random() < 0.7 else g.text(30))
        for _ in range(g.r.randint(0, 14))
    ]
    run("\n".join(lines), recipe_file)


# ---------------------------------------------------------------------------------------------------
# 2. random data, and data shaped like a recipe

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(WORDS),
)
NESTED = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=10,
)


@fuzz("random_data")
@given(data=st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), NESTED, max_size=5))
def test_fuzz_random_data(recipe_file, data):
    run(dump(data), recipe_file)


@fuzz("seeded_data")
@given(seed=SEEDS)
def test_fuzz_seeded_data(recipe_file, seed):
    run(dump(Gen(seed).value()), recipe_file)


@fuzz("recipe_shaped_data")
@given(seed=SEEDS)
def test_fuzz_recipe_shaped_data(recipe_file, seed):
    g = Gen(seed)
    sections = ["name", "model", "compile", "train", "data", "blocks", "eval", "expect", "seed", "extends"]
    doc = {s: g.value(2, shaped=True) for s in g.r.sample(sections, g.r.randint(1, len(sections)))}
    run(dump(doc), recipe_file)


# ---------------------------------------------------------------------------------------------------
# 3. mutations of the real recipes


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [*(str(k) for k in data), *(s for v in data.values() for s in _strings(v))]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return []


def typo(word: str, r: random.Random) -> str:
    if not word:
        return "x"
    i = r.randrange(len(word))
    how = r.choice(["drop", "double", "case", "swap"])
    if how == "drop":
        return word[:i] + word[i + 1 :] or "x"
    if how == "double":
        return word[:i] + word[i] + word[i:]
    if how == "case":
        return word.swapcase()
    return word[:i] + word[i + 1 : i + 2] + word[i : i + 1] + word[i + 2 :]


def mutate(data: Any, g: Gen) -> Any:
    """One structural mistake somewhere in `data` (changed in place)."""
    r = g.r
    paths = [p for p in _paths(data) if p]
    if not paths:
        return g.value()
    path = r.choice(paths)
    parent, last = _get(data, path[:-1]), path[-1]
    op = r.choice(["delete", "retype", "rename", "duplicate", "swap", "rewire", "typo", "nest"])
    if op == "delete":
        del parent[last]
    elif op == "retype":
        parent[last] = g.value(3)
    elif op == "rename" and isinstance(parent, dict):
        new = r.choice([r.choice(KEYS), g.text(6), typo(str(last), r)])
        parent[new] = parent.pop(last)
    elif op == "duplicate":
        lists = [p for p in paths if isinstance(_get(data, p), list) and _get(data, p)]
        if lists:
            target = _get(data, r.choice(lists))
            target.insert(r.randint(0, len(target)), copy.deepcopy(r.choice(target)))
    elif op == "swap":
        other = r.choice(paths)
        if other[: len(path)] != path and path[: len(other)] != other:
            other_parent = _get(data, other[:-1])
            parent[last], other_parent[other[-1]] = other_parent[other[-1]], parent[last]
    elif op == "rewire":
        parent[last] = r.choice(_strings(data) or ["x"])
    elif op == "typo" and isinstance(parent[last], str):
        parent[last] = typo(parent[last], r)
    elif op == "nest":
        parent[last] = r.choice([[parent[last]], {"type": parent[last]}, "${" + str(parent[last]) + "}"])
    return data


def text_mutate(text: str, g: Gen) -> str:
    """One textual mistake: truncation, a lost/duplicated/swapped line, bad indentation, a stray character."""
    r = g.r
    lines = text.split("\n")
    op = r.choice(["truncate", "drop_line", "dup_line", "swap_lines", "indent", "char", "tab"])
    if op == "truncate":
        return text[: r.randint(0, len(text))]
    i = r.randrange(len(lines))
    if op == "drop_line":
        del lines[i]
    elif op == "dup_line":
        lines.insert(i, lines[i])
    elif op == "swap_lines":
        j = r.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "indent":
        lines[i] = " " * r.randint(0, 3) + lines[i].lstrip(" ") if r.random() < 0.5 else " " + lines[i]
    elif op == "char":
        pos = r.randint(0, len(lines[i]))
        lines[i] = lines[i][:pos] + r.choice(PUNCT + ODD_CHARS) + lines[i][pos:]
    elif op == "tab":
        lines[i] = "\t" + lines[i]
    return "\n".join(lines)


def _loadable(texts: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name, text in texts.items():
        try:
            out[name] = load_text(text, name).data
        except RecipeError:
            continue  # a recipe being edited right now; its text is still fuzzed
    return out


RECIPE_DATA = _loadable(RECIPE_TEXTS)


def test_there_are_real_recipes_to_mutate():
    assert "mnist.yaml" in RECIPE_DATA
    assert len(RECIPE_TEXTS) >= 1


@fuzz("mutated_recipes")
@given(name=st.sampled_from(sorted(RECIPE_DATA) or ["-"]), seed=SEEDS)
def test_fuzz_mutated_recipes(recipe_file, name, seed):
    g = Gen(seed)
    doc = copy.deepcopy(RECIPE_DATA[name])
    for _ in range(g.r.choice([1, 1, 2, 3])):
        doc = mutate(doc, g)
    run(dump(doc), recipe_file)


@fuzz("mutated_recipe_text")
@given(name=st.sampled_from(sorted(RECIPE_TEXTS) or ["-"]), seed=SEEDS)
def test_fuzz_mutated_recipe_text(recipe_file, name, seed):
    g = Gen(seed)
    text = RECIPE_TEXTS[name]
    for _ in range(g.r.choice([1, 1, 2])):
        text = text_mutate(text, g)
    run(text, recipe_file)


# ---------------------------------------------------------------------------------------------------
# 4. random --set overrides on a real recipe

OVERRIDE_KEYS = [
    *("train.epochs", "train.batch_size", "model.layers[0].units", "model.layers[1]", "model.layers[9].units"),
    *("model.layers.units", "model.inputs[0]", "model.inputs.image.shape", "compile.loss", "name.first"),
    *("compile.optimizer.learning_rate", "data.source", "trian.epochs", "", "a..b", "model.layers[x]"),
    *("model.layers[0", "model.layers[0].inputs", "model.outputs", "[0]", "model.layers[0].type", "extends"),
]


@fuzz("overrides")
@given(seed=SEEDS)
def test_fuzz_overrides(recipe_file, seed):
    g = Gen(seed)
    sets = []
    for _ in range(g.r.randint(1, 3)):
        key = g.r.choice(OVERRIDE_KEYS) if g.r.random() < 0.7 else g.text(16)
        value = g.r.choice([g.r.choice(WORDS), g.text(20), dump(g.value(3)).strip()])
        sets.append(f"{key}={value}" if g.r.random() < 0.9 else key)
    run(RECIPE_TEXTS["mnist.yaml"], recipe_file, tuple(sets))


def test_fuzz_covers_at_least_ten_thousand_documents():
    assert sum(EXAMPLES.values()) >= 10_000
