"""`${}` expressions run in bounded time and memory, whatever their text: hostile ones are refused, located.

The property test builds expressions from the operators that can grow a value (repeat, power, `%` widths,
concatenation, nesting) over big and small operands, and asserts every one ends (value or `ExprError`)
within a CPU-time and a memory bound (process_time, tracemalloc).
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlrun.cli import main
from dlrun.errors import EXIT_USER
from dlrun.recipe.expr import MAX_INT_BITS, MAX_SEQUENCE, ExprError, evaluate, substitute

SECONDS = 1.0
MEGABYTES = 64

ATOMS = st.sampled_from([
    "0", "1", "2", "9", "64", "100000", "999999999", "2**64", "10**9", "-3", "0.5", "1e308",
    "'a'", "'ab'", "''", "'%0999999999d'", "'%.99999999f'", "'%s%s'", "'%(a)9999999s'", "'%*d'",
    "[0]", "[[0]]", "[0, 1, 2]", "[]", "[[0]*1000]", "'x'*100000", "[0]*100000", "n", "s",
])  # fmt: skip
OPERATORS = st.sampled_from(["*", "**", "%", "+", "-", "//", "==", " in ", " and ", " or "])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, OPERATORS, children).map(lambda t: f"({t[0]}{t[1]}{t[2]})")
    wrapped = st.tuples(st.sampled_from(["[{}]", "str({})", "len({})", "int({})", "-{}", "not {}", "[{0}, {0}]"]),
                        children).map(lambda t: t[0].format(t[1]))  # fmt: skip
    tower = st.tuples(children, st.integers(2, 8)).map(
        lambda t: "(" * t[1] + t[0] + "".join(")**64" for _ in range(t[1]))
    )
    return binary | wrapped | tower


EXPRESSIONS = st.recursive(ATOMS, _combine, max_leaves=12)


def _run(expression: str) -> None:
    with contextlib.suppress(ExprError):
        evaluate(expression, {"n": 7, "s": "abc"})


def _bounded(expression: str) -> None:
    """CPU time measured on its own (tracemalloc slows every allocation), then peak memory traced."""
    started = time.process_time()  # CPU seconds: the bound holds on a busy machine too
    _run(expression)
    elapsed = time.process_time() - started
    assert elapsed < SECONDS, f"{expression!r} took {elapsed:.2f} s"
    tracemalloc.start()
    try:
        _run(expression)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEGABYTES * 1e6, f"{expression!r} used {peak / 1e6:.0f} MB"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS)
def test_hostile_expressions_end_in_bounded_time_and_memory(expression):
    _bounded(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "'%0999999999d' % 1",
        "((((2**64)**64)**64)**64)**64",
        "[[0]*100000]*100000",
        "[[[0]*300]*300]*300",
        "('a'*100000)*100000",
        "'%%%dd' % 999999999 % 1",
        "not " * 50_000 + "1",
        "+".join(["1"] * 200_000),
        "(" * 5000 + "1" + ")" * 5000,
        "-" * 9000 + "1",
    ],
    ids=[
        "percent-width",
        "power-tower",
        "nested-repeat",
        "cube",
        "repeat-repeat",
        "format-format",
        "50k-not",
        "200k-sum",
        "5k-parens",
        "9k-minus",
    ],
)
def test_each_reproducer_is_refused_quickly(expression):
    with pytest.raises(ExprError, match="refused"):
        evaluate(expression, {})
    _bounded(expression)


def test_results_up_to_the_limits_still_work():
    assert len(evaluate("'a' * 100000", {})) == MAX_SEQUENCE
    assert len(evaluate("[0] * 100000", {})) == MAX_SEQUENCE
    assert evaluate("2**64", {}) == 2**64
    assert evaluate("10**64 * 10**10", {}).bit_length() <= MAX_INT_BITS
    assert evaluate("'%05d|%-3s|%.2f' % [7, 'a', 0.5]", {}) == "00007|a  |0.50"


def test_text_with_many_expressions_is_capped_as_a_whole():
    with pytest.raises(ExprError, match="formatted in is longer than 100000 characters"):
        substitute("${'a' * 60000} and ${'b' * 60000}", {})


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("not " * 50_000 + "1", "expression is longer than 10000 characters; refused"),
        ("+".join(["1"] * 200_000), "expression is longer than 10000 characters; refused"),
        ("[" + ", ".join(["1"] * 2_000) + "]", "expression has more than 1000 parts; refused"),
        ("+".join(["1"] * 2_000), "expression nests more than 50 levels deep; refused"),
        ("not " * 2_000 + "1", "expression nests more than 50 levels deep; refused"),
    ],
    ids=["50k-not", "200k-sum", "2k-list", "2k-sum", "2k-not"],
)
def test_huge_expressions_in_a_recipe_are_located_exit_2(tmp_path, capsys, expression, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f'name: bad\ndescription: "${{{expression}}}"\nmodel:\n  inputs: {{x: {{shape: [4]}}}}\n'
        "  layers: [{name: y, type: Dense, units: 1}]\ncompile: {loss: mse}\n"
    )
    started = time.perf_counter()
    assert main(["validate", str(recipe)]) == EXIT_USER
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert err.strip() == f"error: {recipe}:2:14: description: {message}"
