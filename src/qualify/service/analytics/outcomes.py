"""Known outcomes without a stage history: who converted, from a lead attribute (`--label
COLUMN`) or a labels file (`--labels FILE`), for `qualify train` and `qualify evaluate`.

A labels file is CSV with a header: the lead (`email`, `external_id` or `lead`: an email, an
external id or `#id`), the outcome (`label`: 1/0, true/false, yes/no, y/n, t/f) and, optionally,
the instant to judge it at (`at` or `instant`, ISO 8601, UTC unless a zone is given; empty: the
lead's newest activity). A row that cannot be used (an unknown lead, an outcome that is not yes
or no, a bad instant, a lead named twice) is reported with its line, field and value, and the
good rest is used. A lead with no value in the label column is reported the same way.

A file of leads to keep out of training (`qualify train --exclude FILE`, `excluded_leads`) names
them the same way, by a CSV column or one key per line; a key that names no lead is reported.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput
from qualify.domain.records import LEAD_FIELDS, lead_key
from qualify.service.unit_of_work import Workspace

TRUE = frozenset({"1", "1.0", "true", "t", "yes", "y"})
FALSE = frozenset({"0", "0.0", "false", "f", "no", "n"})
KEY_COLUMNS = ("email", "external_id", "lead")
INSTANT_COLUMNS = ("at", "instant")
LABEL_COLUMN = "label"
EXAMPLES = 20  # problems listed (all are counted)
BOTH = "give either --label COLUMN or --labels FILE, not both"


def outcome_of(value: Any) -> int | None:
    """1 or 0 from a yes/no value (a boolean, 0/1, or the words in TRUE and FALSE, in any case);
    None when it is none of them."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    text = str(value).strip().lower() if value is not None else ""
    return 1 if text in TRUE else 0 if text in FALSE else None


@dataclass
class KnownOutcomes:
    """The outcomes read, one row per lead (`frame`: lead_id, at, label), and what was not used."""

    frame: pd.DataFrame
    source: str  # "attribute converted", "file labels.csv"
    column: str | None  # the attribute that holds the outcome (never a feature), if any
    read: int  # rows (or leads) read
    problems: Counter[str] = field(default_factory=Counter)  # reason -> count
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first EXAMPLES problems

    def problem(self, where: dict[str, Any], field_: str, value: Any, reason: str) -> None:
        self.problems[reason] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(where | {"field": field_, "value": value, "reason": reason})

    def summary(self) -> dict[str, Any]:
        labels = self.frame["label"]
        return {
            "source": self.source,
            "read": self.read,
            "used": len(self.frame),
            "positives": int(labels.sum()),
            "dated": int(self.frame["at"].notna().sum()),
            "skipped": sum(self.problems.values()),
            "problems": dict(self.problems.most_common()),
            "examples": self.examples,
        }


def known_outcomes(workspace: Workspace, *, label: str | None = None, labels_file: Path | None = None) -> KnownOutcomes:
    """The outcomes from the label column (a lead attribute, or a lead field) or from a labels file."""
    if (label is None) == (labels_file is None):
        raise InvalidInput(BOTH, field="label")
    if label is not None:
        return _from_column(workspace, label)
    assert labels_file is not None
    return _from_file(workspace, labels_file)


def _frame(rows: list[tuple[int, datetime | None, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["lead_id", "at", "label"])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame.astype({"lead_id": "int64", "label": "int64"})


def _from_column(workspace: Workspace, label: str) -> KnownOutcomes:
    name = label.removeprefix("attributes.")
    leads = schema.leads
    is_field = name in LEAD_FIELDS and not label.startswith("attributes.")
    column = leads.c[name] if is_field else leads.c.attributes
    query = select(leads.c.id, leads.c.email, leads.c.external_id, column.label("value")).where(
        leads.c.erased_at.is_(None)
    )
    with workspace.unit_of_work(read_only=True) as uow:
        found = uow.connection.execute(query.order_by(leads.c.id)).all()
    found_outcomes = KnownOutcomes(_frame([]), f"{'field' if is_field else 'attribute'} {name}", None, len(found))
    rows: list[tuple[int, datetime | None, int]] = []
    seen_names: Counter[str] = Counter()
    for lead_id, email, external_id, value in found:
        if not is_field:
            attributes = value or {}
            seen_names.update(attributes.keys())
            value = attributes.get(name)
        where = {"lead": lead_key(email, external_id) if (email or external_id) else f"#{lead_id}"}
        if value is None:
            found_outcomes.problem(where, name, None, "no outcome given")
            continue
        outcome = outcome_of(value)
        if outcome is None:
            found_outcomes.problem(where, name, value, "not a yes/no outcome (1/0, true/false, yes/no)")
            continue
        rows.append((lead_id, None, outcome))
    if not is_field and found and not seen_names[name]:
        common = ", ".join(n for n, _ in seen_names.most_common(12)) or "none"
        raise InvalidInput(f"no lead has the attribute {name!r} (attributes seen: {common})", field="label")
    found_outcomes.frame = _frame(rows)
    found_outcomes.column = None if is_field else name
    return found_outcomes


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class LeadKeys:
    """The workspace's leads (not erased) by their keys: email, external id (a merged lead's old
    keys too, a lead's own winning) and `#id`."""

    def __init__(self, workspace: Workspace) -> None:
        leads, aliases = schema.leads, schema.lead_aliases
        with workspace.unit_of_work(read_only=True) as uow:
            conn = uow.connection
            known = conn.execute(
                select(leads.c.id, leads.c.email, leads.c.external_id).where(leads.c.erased_at.is_(None))
            ).all()
            merged = conn.execute(select(aliases.c.lead_id, aliases.c.email, aliases.c.external_id)).all()
        self.by_email: dict[str, int] = {}
        self.by_external: dict[str, int] = {}
        self.ids = {lead_id for lead_id, _, _ in known}
        for lead_id, email, external_id in [*merged, *known]:  # a lead's own keys win over its aliases
            if email:
                self.by_email[email] = lead_id
            if external_id:
                self.by_external[external_id] = lead_id

    def find(self, column: str, key: str) -> int | None:
        """The lead named by `key` in a column `email`, `external_id` or `lead` (any of the three:
        an email has an @, `#42` is an id, anything else an external id); None when unknown."""
        key = key.strip()
        if column == "email" or (column == "lead" and "@" in key):
            return self.by_email.get(key.lower())
        if column == "lead" and key.startswith("#") and key[1:].isdigit():
            return int(key[1:]) if int(key[1:]) in self.ids else None
        return self.by_external.get(key)


def _from_file(workspace: Workspace, path: Path) -> KnownOutcomes:
    find = LeadKeys(workspace).find

    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        key_column = next((name for name in KEY_COLUMNS if name in header), None)
        instant_column = next((name for name in INSTANT_COLUMNS if name in header), None)
        if key_column is None or LABEL_COLUMN not in header:
            raise InvalidInput(
                f"{path}, line 1: the header must name the lead (email, external_id or lead) and the outcome "
                f"(label), and may name the instant (at); found: {', '.join(header) or 'nothing'}",
                field="labels",
            )
        outcomes = KnownOutcomes(_frame([]), f"file {path.name}", None, 0)
        rows: list[tuple[int, datetime | None, int]] = []
        first_line: dict[int, int] = {}
        for record in reader:
            outcomes.read += 1
            line = reader.line_num
            where = {"line": line}
            key = (record.get(key_column) or "").strip()
            lead_id = find(key_column, key) if key else None
            if lead_id is None:
                outcomes.problem(where, key_column, key, "no such lead" if key else "no lead given")
                continue
            value = (record.get(LABEL_COLUMN) or "").strip()
            outcome = outcome_of(value) if value else None
            if outcome is None:
                reason = "not a yes/no outcome (1/0, true/false, yes/no)" if value else "no outcome given"
                outcomes.problem(where, LABEL_COLUMN, value, reason)
                continue
            moment: datetime | None = None
            text = (record.get(instant_column) or "").strip() if instant_column else ""
            if text:
                try:
                    moment = _instant(text)
                except ValueError:
                    outcomes.problem(where, instant_column or "at", text, "not an ISO 8601 instant")
                    continue
            if lead_id in first_line:
                outcomes.problem(where, key_column, key, f"the lead is labelled already, on line {first_line[lead_id]}")
                continue
            first_line[lead_id] = line
            rows.append((lead_id, moment, outcome))
    outcomes.frame = _frame(rows)
    return outcomes


@dataclass
class Excluded:
    """The leads a file names to keep out of training (`qualify train --exclude FILE`), and the
    keys that named no lead."""

    path: Path
    lead_ids: frozenset[int]
    read: int  # keys read (rows, or lines)
    problems: Counter[str] = field(default_factory=Counter)  # reason -> count
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first EXAMPLES problems

    def summary(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "read": self.read,
            "leads": len(self.lead_ids),
            "skipped": sum(self.problems.values()),
            "problems": dict(self.problems.most_common()),
            "examples": self.examples,
        }


def excluded_leads(workspace: Workspace, path: Path) -> Excluded:
    """The leads named in `path`: CSV with a header naming the lead (`email`, `external_id` or
    `lead`; where a row has several, the first filled in of those), or one key per line (an email,
    an external id or `#id`) without a header. Blank lines are skipped; a key that names no lead is
    reported with its line, not fatal. A file that cannot be read is an error naming it."""
    if not path.is_file():
        raise InvalidInput(f"--exclude {path}: no such file", field="exclude")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        at = path.read_bytes()[: error.start].count(b"\n") + 1
        raise InvalidInput(f"--exclude {path}, line {at}: not UTF-8 text", field="exclude") from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    header: list[str] = []
    if first is not None:
        header = [name.strip().lower() for name in next(csv.reader([lines[first]]))]
    columns = [name for name in KEY_COLUMNS if name in header]
    if not columns and len(header) > 1:  # a CSV header that names no lead
        raise InvalidInput(
            f"--exclude {path}, line {(first or 0) + 1}: the header must name the lead (email, external_id or "
            f"lead); found: {', '.join(header)}. Without a header, write one key per line.",
            field="exclude",
        )
    find = LeadKeys(workspace).find
    found = Excluded(path, frozenset(), 0)
    ids: set[int] = set()

    def problem(line: int, column: str, value: str, reason: str) -> None:
        found.problems[reason] += 1
        if len(found.examples) < EXAMPLES:
            found.examples.append({"line": line, "field": column, "value": value, "reason": reason})

    if columns:  # CSV with a header
        assert first is not None
        reader = csv.reader(lines[first + 1 :])
        for number, record in enumerate(reader, start=first + 2):
            if not any(cell.strip() for cell in record):
                continue
            found.read += 1
            cells = dict(zip(header, (cell.strip() for cell in record), strict=False))
            column = next((name for name in columns if cells.get(name)), columns[0])
            key = cells.get(column, "")
            lead_id = find(column, key) if key else None
            if lead_id is None:
                problem(number, column, key, "no such lead" if key else "no lead given")
                continue
            ids.add(lead_id)
    else:  # one key per line
        for number, line in enumerate(lines, start=1):
            key = line.strip()
            if not key:
                continue
            found.read += 1
            lead_id = find("lead", key)
            if lead_id is None:
                problem(number, "lead", key, "no such lead")
                continue
            ids.add(lead_id)
    found.lead_ids = frozenset(ids)
    return found
