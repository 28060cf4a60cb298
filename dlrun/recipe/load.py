"""YAML text -> plain mapping, remembering where every key and value came from.

Safe by construction: only YAML's core scalars, mappings and sequences are built (no Python tags, no
object construction); duplicate keys, oversized files, alias-expansion bombs and non-UTF-8 bytes are
refused as `RecipeError`s with a location.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from dlrun.errors import Location, RecipeError
from dlrun.files import file_kind, read_regular

MAX_BYTES = 5 * 1024 * 1024
MAX_NODES = 200_000  # after alias expansion; real recipes have a few thousand at most
MAX_DEPTH = 100  # nesting of mappings/sequences; real recipes nest fewer than ten levels
CORE = "tag:yaml.org,2002:"
MERGE_TAG = CORE + "merge"

KeyPath = tuple[str | int, ...]
Scalar = None | bool | int | float | str
Yaml: TypeAlias = "Scalar | list[Yaml] | dict[str, Yaml]"  # what a recipe holds: plain YAML values only
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


@dataclass
class Document:
    """A loaded YAML document: the data plus the position of each key path."""

    data: Yaml
    file: str
    value_marks: dict[KeyPath, Location] = field(default_factory=dict)
    key_marks: dict[KeyPath, Location] = field(default_factory=dict)

    def locate(self, path: KeyPath, *, key: bool = False) -> Location:
        """Best location for `path`: the exact node, else its nearest ancestor that has one."""
        marks = self.key_marks if key else self.value_marks
        probe = tuple(path)
        while probe:
            if probe in marks:
                return marks[probe]
            if not key and probe in self.key_marks:
                return self.key_marks[probe]
            probe = probe[:-1]
        return self.value_marks.get((), Location(self.file, 1, 1))

    def error(self, message: str, path: KeyPath, *, key: bool = False) -> RecipeError:
        """A `RecipeError` located at `path` in this document."""
        return RecipeError(message, location=self.locate(path, key=key), path=path)


def _mark(node: yaml.Node, file: str) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _show_tag(tag: str) -> str:
    """`tag:yaml.org,2002:python/name:os.system` -> `!!python/name:os.system`, as the user wrote it."""
    return "!!" + tag[len(CORE) :] if tag.startswith(CORE) else tag


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of character `index` in `text`."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


# Quoted strings and comments (skipped), then flow brackets.
_FLOW_TOKENS = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\n]|'')*'|(?:^|(?<=\s))#[^\n]*|([\[{])|([\]}])", re.M)


def _refuse_deep_flow(text: str, file: str) -> None:
    """Refuse `[[[[...` nesting in one linear pass: PyYAML's scanner is quadratic in flow depth."""
    depth = 0
    for match in _FLOW_TOKENS.finditer(text):
        if match.group(1):
            depth += 1
            if depth > MAX_DEPTH:
                line, column = _position(text, match.start())
                raise RecipeError(
                    f"recipe nests more than {MAX_DEPTH} levels deep; refused", location=Location(file, line, column)
                )
        elif match.group(2):
            depth = max(depth - 1, 0)


def _too_deep(text: str, file: str) -> RecipeError:
    """Locate where nesting first exceeds MAX_DEPTH (PyYAML's event parser is not recursive)."""
    depth = 0
    loc = Location(file)
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    loc = Location(file, event.start_mark.line + 1, event.start_mark.column + 1)
                    break
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        pass
    return RecipeError(f"recipe nests more than {MAX_DEPTH} levels deep; refused", location=loc)


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Per node (by id), how many values it expands to once aliases are copied; aliases share nodes."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int]] = [(root, 0)]
    while stack:  # iterative post-order: a recipe may nest deep enough to exhaust Python's stack
        node, depth = stack.pop()
        if id(node) in sizes:
            continue
        children = (
            [v for _, v in node.value]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        todo = [c for c in children if id(c) not in sizes]
        if todo and depth <= MAX_DEPTH:
            stack.append((node, depth + 1))
            stack.extend((c, depth + 1) for c in todo)
            continue
        sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
    return sizes


def _refuse_bombs(root: yaml.Node, file: str) -> None:
    """Refuse an alias/anchor bomb before expanding it, pointing at the smallest anchor that is too big."""
    sizes = _expanded_sizes(root)
    if sizes[id(root)] <= MAX_NODES:
        return
    node, path = root, ()
    while True:
        pairs = (
            [(str(k.value), v) for k, v in node.value]
            if isinstance(node, yaml.MappingNode)
            else list(enumerate(node.value))
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        big = next(((key, child) for key, child in pairs if sizes.get(id(child), 1) > MAX_NODES), None)
        if big is None:
            break
        path = (*path, big[0])
        node = big[1]
    raise RecipeError(
        f"document expands to more than {MAX_NODES} nodes (an alias/anchor bomb?); refused",
        location=_mark(node, file),
        path=path,
    )


class _Converter:
    """Walks a composed YAML node tree into Python data, recording marks and refusing bombs."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = yaml.SafeLoader("")
        self.nodes = 0
        self.value_marks: dict[KeyPath, Location] = {}
        self.key_marks: dict[KeyPath, Location] = {}

    def fail(self, message: str, node: yaml.Node, path: KeyPath) -> RecipeError:
        return RecipeError(message, location=_mark(node, self.file), path=path)

    def convert(self, node: yaml.Node, path: KeyPath, depth: int = 0) -> Yaml:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(
                f"document expands to more than {MAX_NODES} nodes (an alias/anchor bomb?); refused",
                node,
                path,
            )
        if depth > MAX_DEPTH:
            raise self.fail(f"recipe nests more than {MAX_DEPTH} levels deep; refused", node, ())
        self.value_marks.setdefault(path, _mark(node, self.file))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != CORE + "seq":
                raise self._bad_tag(node, path)
            return [self.convert(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _bad_tag(self, node: yaml.Node, path: KeyPath) -> RecipeError:
        return self.fail(f"YAML tag {_show_tag(node.tag)!r} is not allowed in a recipe (plain values only)", node, path)

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Scalar:
        if not node.tag.startswith(CORE) or node.tag.startswith(CORE + "python"):
            raise self._bad_tag(node, path)
        if node.tag.endswith(":timestamp"):
            raise self.fail(
                f"dates and times are not supported in a recipe; quote the value to make it a string: '{node.value}'",
                node,
                path,
            )
        if node.tag.endswith((":binary", ":set", ":omap", ":pairs")):
            raise self.fail(f"YAML type {node.tag.rsplit(':', 1)[-1]!r} is not supported in a recipe", node, path)
        if node.tag == CORE + "str" and node.style is None and _EXPONENT_FLOAT.match(node.value):
            return float(node.value)  # YAML 1.1 reads `1e-3` as a string; every user means the number
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(f"cannot read value: {exc}", node, path) from None

    def _flatten(self, node: yaml.MappingNode, path: KeyPath) -> int:
        """Resolve `<<:` merge keys in place; returns how many leading pairs came from merges.

        Merged pairs are de-duplicated (the one YAML keeps wins), so chains of merges cannot multiply.
        """
        explicit = sum(1 for key_node, _ in node.value if key_node.tag != MERGE_TAG)
        if explicit == len(node.value):
            return 0
        try:
            self.constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark or node.start_mark
            where = Location(self.file, mark.line + 1, mark.column + 1)
            raise RecipeError(
                f"invalid merge key `<<`: {exc.problem or exc.context}", location=where, path=path
            ) from None
        merged = node.value[: len(node.value) - explicit]
        last: dict[tuple[str, Any], int] = {}
        for i, (key_node, _) in enumerate(merged):
            last[(key_node.tag, key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node))] = i
        kept = [merged[i] for i in sorted(last.values())]
        node.value = kept + node.value[len(merged) :]
        return len(kept)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, depth: int) -> dict[str, Any]:
        if node.tag != CORE + "map":
            raise self._bad_tag(node, path)
        merged = self._flatten(node, path)
        out: dict[str, Any] = {}
        from_merge: set[str] = set()
        for i, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail("mapping keys must be plain strings", key_node, path)
            key = self._scalar(key_node, path)
            if not isinstance(key, str | int) or isinstance(key, bool):
                key = str(key)
            key = str(key)
            child = (*path, key)
            if key in out:
                if key in from_merge:
                    # a key written here overrides the one merged in by `<<:`
                    for marks in (self.value_marks, self.key_marks):
                        for p in [p for p in marks if p[: len(child)] == child]:
                            del marks[p]
                else:
                    first = self.key_marks[child]
                    raise self.fail(f"duplicate key {key!r} (first defined at line {first.line})", key_node, child)
            self.key_marks[child] = _mark(key_node, self.file)
            if i < merged:
                from_merge.add(key)
            else:
                from_merge.discard(key)
            out[key] = self.convert(value_node, child, depth + 1)
        return out


def load_text(text: str, file: str = "<recipe>") -> Document:
    """Parse YAML text into a `Document`; raises `RecipeError` on any problem."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise RecipeError(f"recipe is larger than {MAX_BYTES // (1024 * 1024)} MB; refused", location=Location(file))
    _refuse_deep_flow(text, file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
        if problem.startswith("but ") and exc.context:
            problem = f"{exc.context}, {problem}"  # "expected a single document in the stream, but found another"
        if "'\\t'" in problem:
            problem = "found a tab character; indent YAML with spaces"
        raise RecipeError(f"invalid YAML: {problem}", location=loc) from None
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        raise RecipeError(
            f"invalid YAML: character U+{exc.character:04X} is not allowed in YAML text",
            location=Location(file, line, column),
        ) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"invalid YAML: {exc}", location=Location(file)) from None
    except RecursionError:
        raise _too_deep(text, file) from None
    if node is None:
        raise RecipeError("recipe is empty", location=Location(file, 1, 1))
    _refuse_bombs(node, file)
    conv = _Converter(file)
    data = conv.convert(node, ())
    return Document(data=data, file=file, value_marks=conv.value_marks, key_marks=conv.key_marks)


def _missing_hint(path: Path) -> str:
    """' (did you mean recipes/mnist.yaml?)' when the name lacks a suffix that an existing file has."""
    for suffix in (".yaml", ".yml"):
        if path.suffix != suffix and path.with_name(path.name + suffix).is_file():
            return f" (did you mean {path.with_name(path.name + suffix)}?)"
    return ""


def load_file(path: str | Path) -> Document:
    """Read and parse a recipe file; the error names the file when it is missing, not a regular file, too
    big or not UTF-8. A FIFO or device is refused before it is opened for reading; the size cap holds on
    the bytes read, whatever `stat()` reports."""
    path = Path(path)
    shown = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {shown}{_missing_hint(path)}") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {shown}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise RecipeError(f"{shown} is a directory, not a recipe file")
    kind = file_kind(info.st_mode)
    if kind is not None:
        raise RecipeError(f"{shown} is {kind}, not a recipe file; refused")
    if info.st_size > MAX_BYTES:
        raise RecipeError(
            f"recipe is {info.st_size / 1e6:.1f} MB, larger than the {MAX_BYTES // (1024 * 1024)} MB limit; refused",
            location=Location(shown),
        )
    raw = read_regular(path, MAX_BYTES, "recipe")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = len(raw[raw.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", errors="replace")) + 1
        raise RecipeError(
            f"recipe is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8",
            location=Location(shown, line, column),
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return load_text(text, shown)
