"""The template engine: Jinja2's immutable sandbox, as email templates (user input) are rendered in.

No attribute of Python's internals is reachable, `*` and `**` cannot build a huge value, a name
the caller does not know is reported before rendering, and the HTML part is autoescaped. What a
template may use and how its problems are worded is the email service's business
(qualify.service.email.templates); this module only compiles and renders.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

_REPEAT_MAX = 100_000  # items or characters `*` may build
_POWER_MAX = 100


class TemplateSyntax(Exception):
    """A source that does not parse: the message, and the line it is on."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


class RenderFailure(Exception):
    """A render that went wrong (an unsafe attribute, a type error, ...): the message, the line it
    happened on when known, and the kind of error (its class name)."""

    def __init__(self, message: str, line: int | None, kind: str) -> None:
        super().__init__(message)
        self.message, self.line, self.kind = message, line, kind


class _Undefined(ChainableUndefined):
    """A missing key of `account` or `attributes` renders empty (leads differ in what they have);
    an attribute the sandbox refuses still raises, so `{{ ''.__class__ }}` is an error, not blank.
    Unknown top-level names never get here: they are refused before rendering."""

    __slots__ = ()

    def __str__(self) -> str:
        if self._undefined_exception is not UndefinedError:
            self._fail_with_undefined_error()
        return ""


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` bounded so a template cannot build a huge value."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > _POWER_MAX:
            raise SecurityError(f"exponent {right} is larger than {_POWER_MAX}")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > _REPEAT_MAX:
                    raise SecurityError(f"repeating builds more than {_REPEAT_MAX:,} items")
        return super().call_binop(context, operator, left, right)


def _finalize(value: Any) -> Any:
    """`None` (a field the lead lacks) prints as nothing, not as "None"."""
    return "" if value is None else value


@functools.cache
def _environment(autoescape: bool) -> _Sandbox:
    return _Sandbox(undefined=_Undefined, finalize=_finalize, autoescape=autoescape, keep_trailing_newline=True)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled source, and the names it uses that are neither known nor set by itself (with the
    line each is first used on), in the order they appear."""

    template: Template
    filename: str
    unknown: tuple[tuple[str, int], ...]

    def render(self, context: Mapping[str, Any]) -> str:
        """The text, or RenderFailure naming the line the error happened on."""
        try:
            return self.template.render(context)
        except Exception as error:  # anything a template can do wrong: an unsafe attribute, a type error, ...
            message = error.message if isinstance(error, TemplateError) and error.message else str(error)
            raise RenderFailure(message, _runtime_line(error, self.filename), type(error).__name__) from None


@functools.lru_cache(maxsize=512)
def compile_source(filename: str, source: str, *, autoescape: bool, known: frozenset[str]) -> Compiled:
    """Parse and compile once per source (raises TemplateSyntax). The filename is kept in the code,
    so a runtime error's traceback names the template line it happened on."""
    env = _environment(autoescape)
    try:
        tree = env.parse(source, filename=filename)
        code = env.compile(tree, filename=filename)
    except TemplateSyntaxError as error:
        raise TemplateSyntax(str(error.message), error.lineno) from None
    undeclared = meta.find_undeclared_variables(tree) - known - env.globals.keys()
    first_line: dict[str, int] = {}
    for node in tree.find_all(nodes.Name):
        if node.name in undeclared and node.ctx == "load":
            first_line.setdefault(node.name, node.lineno)
    unknown = tuple(sorted(first_line.items(), key=lambda item: (item[1], item[0])))
    return Compiled(env.template_class.from_code(env, code, env.make_globals(None), None), filename, unknown)


def _runtime_line(error: BaseException, filename: str) -> int | None:
    """The template line a runtime error happened on, from the traceback Jinja rewrites."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line
