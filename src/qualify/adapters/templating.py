"""The template engine: Jinja2's immutable sandbox, as email templates (user input) are rendered in.

No attribute of Python's internals is reachable, a name the caller does not know is reported
before rendering, and the HTML part is autoescaped. A template is hostile input, so a render is
bounded in memory and time, while it runs: no operator, filter or string method may build a text
or list longer than `SIZE_MAX` (`*`, `+`, `~`, `%`, `center`, `indent`, `replace`, `format`,
`ljust`…, each checked before it builds), a render may take at most `STEPS_MAX` loop iterations
and calls in all (nested loops and recursive macros count every step), and its output stops at
`max_chars`. What a template may use and how its problems are worded is the email service's
business (qualify.service.email.templates); this module only compiles and renders.
"""

from __future__ import annotations

import contextvars
import functools
import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

_REPEAT_MAX = 100_000  # items or characters `*` may build
_POWER_MAX = 100
SIZE_MAX = 1_000_000  # characters or items any one operation may build
STEPS_MAX = 100_000  # loop iterations and calls of one render, all together (an email needs a few hundred)
OUTPUT_MAX = 1_000_000  # characters of one render's output (the caller may ask for fewer)
_WIDE_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})
# A width or precision in a format string: `%0999999999d`, `{:>999999999}`, `%*d` (width from an argument).
_PRINTF_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\d+)")


class _Budget:
    """The steps one render has taken."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = 0

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > STEPS_MAX:
            raise SecurityError(f"the template takes more than {STEPS_MAX:,} steps (loop iterations and calls)")


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("template_budget")


def _budget() -> _Budget:
    found = _BUDGET.get(None)
    if found is None:  # rendered outside Compiled.render (a constant folded at compile time): a budget of its own
        found = _Budget()
        _BUDGET.set(found)
    return found


def _too_big(size: int, what: str) -> None:
    if size > SIZE_MAX:
        raise SecurityError(f"{what} would build more than {SIZE_MAX:,} characters or items")


def _check_printf(text: str, args: Any) -> None:
    """`text % args`: refuse a width or precision beyond SIZE_MAX, or taken from an argument."""
    for match in _PRINTF_WIDTH.finditer(text):
        for number in match.groups():
            if number == "*":
                raise SecurityError("a width or precision taken from an argument (`*`) is not allowed")
            if number is not None:
                _too_big(int(number), "a width or precision")


def _check_format(text: str) -> None:
    for match in _FORMAT_WIDTH.finditer(text):
        _too_big(int(match.group(1)), "a width or precision")


def _steps(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every loop's iterable, each iteration counted against the render's budget."""
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


def _concat(*parts: Any) -> str:
    """`a ~ b ~ …`, refused before it builds a text longer than SIZE_MAX."""
    texts = [str(part) for part in parts]
    _too_big(sum(len(t) for t in texts), "joining texts with ~")
    return "".join(texts)


class _Bounded(NodeTransformer):
    """Rewrites a parsed template so that every loop counts its iterations and every `~` is checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        found = self.generic_visit(node)
        assert isinstance(found, nodes.For)
        found.iter = nodes.Call(nodes.Name("_steps", "load"), [found.iter], [], None, None, lineno=found.lineno)
        return found

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        found = self.generic_visit(node)
        assert isinstance(found, nodes.Concat)
        return nodes.Call(nodes.Name("_concat", "load"), list(found.nodes), [], None, None, lineno=found.lineno)


def _width_filter(name: str, original: Callable[..., Any], size: Callable[..., int]) -> Callable[..., Any]:
    """`original`, refused when `size(*args, **kwargs)` (what it would build) is beyond SIZE_MAX."""

    passes = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0  # a context first: not the value

    @functools.wraps(original)  # keeps jinja_pass_arg: Jinja passes the wrapper what it passed the original
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _too_big(size(*args[passes:], **kwargs), f"the filter {name}")
        return original(*args, **kwargs)

    return bounded


def _number(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _center_size(value: Any, width: Any = 80) -> int:
    return max(len(str(value)), _number(width))


def _indent_size(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> int:
    text = str(value)
    pad = _number(width) if not isinstance(width, str) else len(width)
    return len(text) + (text.count("\n") + 1) * pad


def _replace_size(value: Any, old: Any, new: Any, count: Any = None, *args: Any) -> int:
    text, old, new = str(value), str(old), str(new)
    times = len(text) + 1 if old == "" else text.count(old)
    if count is not None and _number(count) >= 0:
        times = min(times, _number(count))
    return len(text) + times * max(len(new) - len(old), 0)


def _format_size(value: Any, *args: Any, **kwargs: Any) -> int:
    _check_printf(str(value), args)
    return len(str(value))


def _slice_size(value: Any, slices: Any, *args: Any) -> int:
    return _number(slices)


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
    """The immutable sandbox, with every way to build a huge value bounded and every call counted."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.update(_steps=_steps, _concat=_concat)
        sizes: dict[str, Callable[..., int]] = {
            "center": _center_size,
            "indent": _indent_size,
            "replace": _replace_size,
            "format": _format_size,
            "slice": _slice_size,
        }
        for name, size in sizes.items():
            self.filters[name] = _width_filter(name, self.filters[name], size)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > _POWER_MAX:
            raise SecurityError(f"exponent {right} is larger than {_POWER_MAX}")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > _REPEAT_MAX:
                    raise SecurityError(f"repeating builds more than {_REPEAT_MAX:,} items")
        if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _too_big(len(left) + len(right), "adding")
        if operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _budget().step()
        if getattr(__obj, "__name__", None) in _WIDE_METHODS and isinstance(getattr(__obj, "__self__", None), str):
            _too_big(max([_number(a) for a in args] + [len(__obj.__self__)]), f"str.{__obj.__name__}")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if isinstance(getattr(value, "__self__", None), str) and getattr(value, "__name__", None) in (
            "format",
            "format_map",
        ):
            _check_format(value.__self__)
        return super().wrap_str_format(value)


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

    def render(self, context: Mapping[str, Any], max_chars: int = OUTPUT_MAX) -> str:
        """The text, or RenderFailure naming the line the error happened on; one that would be
        longer than `max_chars`, or take more than STEPS_MAX steps, is stopped there."""
        token = _BUDGET.set(_Budget())
        try:
            parts, size = [], 0
            for chunk in self.template.generate(context):
                size += len(chunk)
                if size > max_chars:
                    raise SecurityError(f"the rendered text is longer than {max_chars:,} characters")
                parts.append(chunk)
            return "".join(parts)
        except Exception as error:  # anything a template can do wrong: an unsafe attribute, a type error, ...
            message = error.message if isinstance(error, TemplateError) and error.message else str(error)
            raise RenderFailure(message, _runtime_line(error, self.filename), type(error).__name__) from None
        finally:
            _BUDGET.reset(token)


@functools.lru_cache(maxsize=512)
def compile_source(filename: str, source: str, *, autoescape: bool, known: frozenset[str]) -> Compiled:
    """Parse and compile once per source (raises TemplateSyntax). The filename is kept in the code,
    so a runtime error's traceback names the template line it happened on."""
    env = _environment(autoescape)
    try:
        tree = _Bounded().visit(env.parse(source, filename=filename))
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
