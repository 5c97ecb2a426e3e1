"""The dashboard's colours: every text colour on every background it is drawn on reads at the
WCAG 2.1 AA contrast of 4.5:1 (normal text). Read from the style sheet itself, so a colour changed
there is checked here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[2] / "src/qualify/entrypoints/web/static/app.css").read_text()
VARIABLES = dict(re.findall(r"--([a-z]+):\s*(#[0-9a-fA-F]{6})", CSS))
WHITE, PAGE, CODE = "#ffffff", "#f6f7fb", "#f1f3f8"  # cards and inputs, the page, code and the editors' gutter
NOTICE, FLAG, OVERDUE = "#e8f3ec", "#fdecea", "#fdf3f2"  # the backgrounds of a notice, a flag, an overdue row

# (what, text colour, background): each pair the style sheet puts together.
PAIRS = [
    ("body text on a card", VARIABLES["ink"], WHITE),
    ("body text on the page", VARIABLES["ink"], PAGE),
    ("muted text on a card", VARIABLES["muted"], WHITE),
    ("muted text on the page (labels, small print)", VARIABLES["muted"], PAGE),
    ("line numbers in the gutter", VARIABLES["muted"], CODE),
    ("links on a card", VARIABLES["accent"], WHITE),
    ("links on the page", VARIABLES["accent"], PAGE),
    ("button text", WHITE, VARIABLES["accent"]),
    ("errors on a card", VARIABLES["bad"], WHITE),
    ("errors on a flag", VARIABLES["bad"], FLAG),
    ("an overdue MQL's text", VARIABLES["ink"], OVERDUE),
    ("an overdue MQL's warning", VARIABLES["bad"], OVERDUE),
    ("done, in green", VARIABLES["ok"], WHITE),
    ("a notice", VARIABLES["ink"], NOTICE),
]


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_formula_gives_the_known_extremes() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic near miss


def test_every_background_named_here_is_in_the_style_sheet() -> None:
    for colour in (PAGE, CODE, NOTICE, FLAG, OVERDUE):
        assert colour in CSS, colour


@pytest.mark.parametrize(("what", "text", "background"), PAIRS, ids=[p[0] for p in PAIRS])
def test_text_reads_at_aa_contrast(what: str, text: str, background: str) -> None:
    assert contrast(text, background) >= 4.5, f"{what}: {contrast(text, background):.2f}:1"
