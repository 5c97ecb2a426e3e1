"""Explanations: every score is the sum of its contributions, and each says why in words."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Contribution:
    """One term of a score: `points` now, from `rule`, described by `text`."""

    rule: str
    points: float
    text: str

    def render(self) -> str:
        return f"{self.points:+.1f} {self.text}"

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "points": round(self.points, 4), "text": self.text}


def days_phrase(days: float) -> str:
    if days < 1 / 24:
        return "just now"
    if days < 1:
        hours = round(days * 24)
        return f"{hours} hour{'s' if hours != 1 else ''} ago"
    whole = round(days)
    return f"{whole} day{'s' if whole != 1 else ''} ago"
