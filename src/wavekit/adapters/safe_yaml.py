"""A YAML loader for hostile input: line numbers, no alias bombs, no duplicate keys.

`load_yaml(text)` returns plain Python data whose mappings are LineDict (the line of the
mapping and of each key) and whose sequences are LineList (the line of each item), or raises
YamlRefused: one error with line, column and a short reason, never pyyaml's raw dump.

Refused on top of YAML syntax errors (safe tags only, so no Python objects are built):

- more than `max_aliases` aliases (`*name`), an alias inside the node it names (a recursive
  structure), or aliases that expand the document by more than MAX_EXPANSION nodes;
- nesting deeper than MAX_DEPTH;
- a mapping key that is not a scalar, or the same key twice in one mapping (YAML says keys
  are unique; pyyaml would silently keep the last);
- a scalar that cannot be built (an integer of more than 4,300 digits...).

A timestamp that is not a real date (`2026-13-45`) stays the text it was, for the schema to
report as not a date.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from wavekit.adapters.problems import show

MAX_DEPTH = 50
MAX_EXPANSION = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlRefused(yaml.MarkedYAMLError):
    """The document cannot be used; `line` and `column` are 1-based (None when unknown)."""

    def __init__(self, reason: str, mark: Any = None) -> None:
        super().__init__(problem=reason, problem_mark=mark)
        self.reason = reason
        self.line: int | None = mark.line + 1 if mark is not None else None
        self.column: int | None = mark.column + 1 if mark is not None else None
        self.mapping: Any = None  # a duplicate key: the mapping it is in, and the key
        self.key: Any = None

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line else ""
        return where + self.reason


class LineDict(dict[Any, Any]):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list[Any]):
    """A sequence that remembers its own line and the line of each item (1-based)."""

    line: int = 0
    lines: list[int]


def _check_graph(root: Node, max_aliases: int) -> None:
    """Walk the composed node graph once (iteratively): aliases, recursion, depth, keys."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    size: dict[int, int] = {}  # expanded node count of each finished node
    aliases = 0
    distinct = 0

    def children(node: Node) -> list[tuple[Node, Any]]:
        if isinstance(node, MappingNode):
            out: list[tuple[Node, Any]] = []
            for key, value in node.value:
                if not isinstance(key, ScalarNode):
                    raise YamlRefused("a mapping key must be a plain value, not a "
                                      "list or mapping", key.start_mark)
                out.append((key, key.start_mark))
                out.append((value, key.start_mark))
            return out
        if isinstance(node, SequenceNode):
            return [(item, node.start_mark) for item in node.value]
        return []

    stack: list[tuple[Node, list[tuple[Node, Any]]]] = [(root, children(root))]
    state[id(root)] = 1
    sums: list[int] = [1]
    while stack:
        node, todo = stack[-1]
        if not todo:
            stack.pop()
            total = sums.pop()
            state[id(node)] = 2
            size[id(node)] = total
            distinct += 1
            if sums:
                sums[-1] += total
            continue
        child, mark = todo.pop()
        seen = state.get(id(child))
        if seen == 1:
            raise YamlRefused("an alias refers to a node that contains it (a recursive "
                              "structure)", mark)
        if seen == 2:
            aliases += 1
            if aliases > max_aliases:
                raise YamlRefused(f"more than {max_aliases} aliases (*name) in the document",
                                  mark)
            sums[-1] += size[id(child)]
            continue
        if len(stack) >= MAX_DEPTH:
            raise YamlRefused(f"nested more than {MAX_DEPTH} levels deep", child.start_mark)
        state[id(child)] = 1
        stack.append((child, children(child)))
        sums.append(1)
    if size[id(root)] - distinct > MAX_EXPANSION:
        raise YamlRefused(f"aliases expand the document by more than {MAX_EXPANSION:,} "
                          "nodes", root.start_mark)


_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present


class SafeLineLoader(_Base):  # type: ignore[misc]  # the base is picked at import (libyaml or not)
    """yaml.SafeLoader (libyaml when present) with line numbers and the checks above."""

    max_aliases = 50

    depth = 0
    has_anchors = True  # load_yaml clears it for a text without "&": then no alias exists
    # Where duplicate keys go when loading continues past them (the first value is kept);
    # None: a duplicate key refuses the document.
    duplicates: list[YamlRefused] | None = None

    def construct_document(self, node: Node) -> Any:
        if self.has_anchors:
            _check_graph(node, self.max_aliases)
        return super().construct_document(node)


def _enter(loader: SafeLineLoader, node: Node) -> None:
    loader.depth += 1
    if loader.depth > MAX_DEPTH:
        raise YamlRefused(f"nested more than {MAX_DEPTH} levels deep", node.start_mark)


def _construct_mapping(loader: SafeLineLoader, node: MappingNode) -> LineDict:
    _enter(loader, node)
    for key, _ in node.value:
        if not isinstance(key, ScalarNode):
            raise YamlRefused("a mapping key must be a plain value, not a list or mapping",
                              key.start_mark)
    own = sum(1 for key, _ in node.value if key.tag != MERGE_TAG)
    loader.flatten_mapping(node)
    merged = len(node.value) - own  # flatten_mapping puts the merged pairs first
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    written: set[Any] = set()  # keys written in this mapping itself (merged ones may be
    for i, (key_node, value_node) in enumerate(node.value):  # overridden once)
        key = loader.construct_object(key_node, deep=True)
        if i >= merged:
            if key in written:
                dup = YamlRefused(f"duplicate key {show(key)} (first at line "
                                  f"{out.key_lines[key]})", key_node.start_mark)
                if loader.duplicates is None:
                    raise dup
                dup.mapping, dup.key = out, key  # for the caller to name the field
                loader.duplicates.append(dup)
                continue
            written.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    loader.depth -= 1
    return out


def _construct_sequence(loader: SafeLineLoader, node: SequenceNode) -> LineList:
    _enter(loader, node)
    out = LineList([loader.construct_object(child, deep=True) for child in node.value])
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    loader.depth -= 1
    return out


def _construct_int(loader: SafeLineLoader, node: ScalarNode) -> Any:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise YamlRefused("a number with more than 4,300 digits", node.start_mark) from None


def _construct_timestamp(loader: SafeLineLoader, node: ScalarNode) -> Any:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError, TypeError):
        return loader.construct_scalar(node)  # not a real date: the schema says so


SafeLineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                               _construct_mapping)
SafeLineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
                               _construct_sequence)
SafeLineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
SafeLineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _reason(exc: yaml.YAMLError, text: str) -> tuple[str, int | None, int | None]:
    if isinstance(exc, YamlRefused):
        return exc.reason, exc.line, exc.column
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem and exc.context_mark is not None:
            reason += f" ({exc.context} at line {exc.context_mark.line + 1})"
        return reason, (mark.line + 1 if mark else None), (mark.column + 1 if mark else None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return (f"character U+{char:04X} is not allowed in YAML", line,
                exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1)
    return (str(exc).splitlines() or ["not valid YAML"])[0][:200], None, None


def load_yaml(text: str, *, max_aliases: int = 50,
              duplicates: list[YamlRefused] | None = None) -> Any:
    """Parse one YAML document; YamlRefused (line, column, reason) if it cannot be used.

    With a `duplicates` list, a key repeated in a mapping is appended there (the first value
    is kept) and loading goes on, so that other problems are found in the same pass.
    """
    loader_cls = type("Loader", (SafeLineLoader,), {"max_aliases": max_aliases,
                                                    "has_anchors": "&" in text,
                                                    "duplicates": duplicates})
    try:
        return yaml.load(text, Loader=loader_cls)  # a SafeLoader subclass: safe tags only
    except YamlRefused:
        raise
    except yaml.YAMLError as exc:
        reason, line, column = _reason(exc, text)
        refused = YamlRefused(reason)
        refused.line, refused.column = line, column
        raise refused from None
    except RecursionError:  # only without libyaml: the pure-Python composer recurses
        raise YamlRefused(f"nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:  # a safety net
        reason = (str(exc).splitlines() or [exc.__class__.__name__])[0][:160]
        raise YamlRefused(f"cannot read a value: {reason}") from None
