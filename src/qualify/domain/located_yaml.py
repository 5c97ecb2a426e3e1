"""YAML documents that remember where every value came from, so problems can name the line.

Shared by the scoring model loader and the import mapping: both report every problem with
its line and its key path (`engagement.rules[2].cap_per_day`).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from qualify.domain.errors import ModelProblem

_LAST_STEP = re.compile(r"(\.[^.\[]+|\[\d+\])$")
_NULLS = ("", "~", "null", "Null", "NULL")
# Bounds on what a document may hold, so that no text can take the reader's memory or time: the
# nesting of lists and mappings, and the values once every alias is followed (a "billion laughs"
# document of a few hundred bytes expands ten-fold per level of aliases).
MAX_DEPTH = 64
MAX_VALUES = 100_000


class YamlSyntaxError(Exception):
    """The text is not YAML at all; `problem` says where it broke."""

    def __init__(self, problem: ModelProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class LocatedYaml:
    """The parsed document (`data`), the line of every key path, and the problems found so far.

    With `typed_scalars=False` every scalar stays the text it was written as (`NO` is the
    text NO, not false), which is what value maps of an import need.
    """

    def __init__(self, text: str, source: str, *, typed_scalars: bool = True, stored: bool = False) -> None:
        self.source = source
        # Read from the store: accepted when it was written, under rules that may have tightened
        # since (a regular expression RE2 refuses still loads, with Python's engine).
        self.stored = stored
        self.lines: dict[str, int] = {}
        self.problems: list[ModelProblem] = []
        self._typed = typed_scalars
        self._constructor = SafeConstructor()
        self._values = 0
        self._open: set[int] = set()  # the collections being converted: an alias to one is a cycle
        try:
            _check_nesting(text)  # before composing: the composer recurses once per level
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            raise YamlSyntaxError(_syntax_problem(error)) from error
        self.data: Any = self._convert(node, "") if node is not None else None

    def _convert(self, node: Node, path: str) -> Any:
        self.lines.setdefault(path or "(document)", node.start_mark.line + 1)
        self._values += 1
        if self._values > MAX_VALUES:
            raise YamlSyntaxError(
                ModelProblem(
                    path or "(document)",
                    f"the document holds more than {MAX_VALUES:,} values once its aliases are followed: "
                    "write it out, or use fewer aliases",
                    node.start_mark.line + 1,
                )
            )
        if isinstance(node, (MappingNode, SequenceNode)):
            if id(node) in self._open:
                self.problem(path, "an alias refers to the list or mapping that holds it")
                return None
            self._open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self._open.discard(id(node))
        assert isinstance(node, ScalarNode)
        return self._scalar(node)

    def _collection(self, node: MappingNode | SequenceNode, path: str) -> Any:
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(self._scalar(key_node)) if isinstance(key_node, ScalarNode) else "(complex key)"
                child = f"{path}.{key}" if path else key
                self.lines[child] = key_node.start_mark.line + 1
                if key in out:
                    self.problem(child, "appears twice")
                out[key] = self._convert(value_node, child)
            return out
        return [self._convert(item, f"{path}[{i}]") for i, item in enumerate(node.value)]

    def _scalar(self, node: ScalarNode) -> Any:
        if self._typed:
            return self._constructor.construct_object(node, deep=True)
        if node.style is None and node.value in _NULLS:
            return None
        return str(node.value)

    def line(self, path: str) -> int | None:
        """The line of `path`, or of the nearest enclosing key that has one."""
        while path and path not in self.lines:
            match = _LAST_STEP.search(path)
            path = path[: match.start()] if match else ""
        return self.lines.get(path or "(document)")

    def problem(self, path: str, message: str) -> None:
        self.problems.append(ModelProblem(path or "(document)", message, self.line(path)))


def _check_nesting(text: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, naming the line, from the parser's events
    (which, unlike composing, takes no stack per level)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark is not None else None
                raise YamlSyntaxError(ModelProblem("(document)", f"nested more than {MAX_DEPTH} levels deep", line))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _syntax_problem(error: yaml.YAMLError) -> ModelProblem:
    mark, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
    message = f"not valid YAML: {getattr(error, 'problem', None) or error}"
    if context is not None and getattr(error, "context", None):
        message += f" ({error.context} that starts on line {context.line + 1})"  # type: ignore[attr-defined]
    return ModelProblem("(document)", message, mark.line + 1 if mark is not None else None)


def closest(key: str, allowed: set[str]) -> str:
    """' (did you mean 'x'?)' for a near miss, else nothing."""
    match = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def kind_of(value: Any) -> str:
    """How a value reads to a person, for 'must be X, got Y' messages."""
    if value is None:
        return "nothing"
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a text",
        bool: "true/false",
        int: "a whole number",
        float: "a number",
    }
    return names.get(type(value), f"a value of type {type(value).__name__}")
