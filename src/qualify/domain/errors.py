"""Errors a user can act on: each says what was wrong and where."""

from __future__ import annotations


class QualifyError(Exception):
    """Base of every error Qualify raises on purpose."""


class InvalidInput(QualifyError):
    """A value that cannot be accepted; `field` names where it was."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ModelError(QualifyError):
    """A scoring model document that does not validate; each problem names line and field."""

    def __init__(self, problems: list[ModelProblem], source: str = "<model>") -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s) in the scoring model"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class ModelProblem:
    __slots__ = ("line", "message", "path")

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.message = message
        self.line = line

    def __str__(self) -> str:
        where = f"line {self.line}, " if self.line else ""
        return f"{where}{self.path}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "field": self.path, "message": self.message}


class IllegalTransition(QualifyError):
    """A stage change the lifecycle does not allow."""


class NotFound(QualifyError):
    """A lead, account or model that does not exist."""


class NotYourLead(QualifyError):
    """A sales rep acted on a lead another rep owns (or a key bound to no rep acted as one)."""


class Conflict(QualifyError):
    """A change that lost to concurrent writes every time it was tried."""
