"""A generated CRM history, as a team adopting Qualify would export it: companies, the people at
them, their web sessions (with page and pricing-page counts), emails and sales activities (with
an outcome), the dates sales accepted them, and deals (opened, won or lost, with an amount).

Who buys depends on what those properties carry, not on how many events there are: a person's
interest shows in the share of their sessions' pages that are pricing pages and in how often a
sales call connects (not in how many sessions or calls there are), a deal is won more often when
it is small, and people at the same company share its warmth. Sales accepts about half the people
whatever their interest. So a model that reads event properties, deals and the account's other
people can learn what one that only counts events cannot (benchmarks/crm_features.py measures
how much: the signal is built in here, so the figure says what these features can read, not
what they will add on another team's data).

    files = write_crm_history(folder, CrmShape(companies=40, people=240), seed=7)
    # then: qualify import accounts|events|stages|deals FILE (no mapping needed)
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)
OUTCOMES = ("connected", "voicemail", "no_answer")
INDUSTRIES = ("software", "finance", "health", "retail", "manufacturing")


@dataclass(frozen=True)
class CrmShape:
    companies: int = 40
    people: int = 240
    start: datetime = START
    end: datetime = END
    active_days: int = 120  # how long after its creation a person keeps acting


@dataclass(frozen=True)
class CrmFiles:
    accounts: Path
    events: Path
    stages: Path
    deals: Path


@dataclass
class _Person:
    email: str
    company: int
    interest: float
    created: datetime


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method: the means here are small)."""
    limit, k, product = pow(2.718281828459045, -mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def generate_crm_history(shape: CrmShape, seed: int) -> dict[str, list[list[Any]]]:
    """The rows of the four files (module doc), each list headed by its column names."""
    rng = random.Random(seed)
    span = (shape.end - shape.start).total_seconds()
    warmth = [rng.random() for _ in range(shape.companies)]
    accounts: list[list[Any]] = [["domain", "name", "industry", "employees"]]
    for c in range(shape.companies):
        accounts.append([f"company{c}.com", f"Company {c}", INDUSTRIES[c % len(INDUSTRIES)], rng.randint(20, 5000)])
    people = []
    for i in range(shape.people):
        company = rng.randrange(shape.companies)
        created = shape.start + timedelta(seconds=rng.uniform(0, span * 0.7))
        interest = 0.6 * warmth[company] + 0.4 * rng.random()
        people.append(_Person(f"person{i}@company{company}.com", company, interest, created))
    events: list[list[Any]] = [["event_id", "email", "type", "occurred_at", "properties"]]
    stages: list[list[Any]] = [["email", "action", "at", "by", "reason"]]
    deals: list[list[Any]] = [["deal_id", "email", "opened_at", "closed_at", "outcome", "amount", "reason"]]
    n = 0

    def emit(person: _Person, kind: str, properties: dict[str, Any]) -> None:
        nonlocal n
        at = person.created + timedelta(seconds=rng.uniform(0, shape.active_days * 86_400))
        if at < shape.end:
            events.append([f"ev-{n}", person.email, kind, _iso(at), json.dumps(properties)])
            n += 1

    for index, person in enumerate(people):
        events.append([f"ev-{n}", person.email, "form_submit", _iso(person.created), json.dumps({"form": "signup"})])
        n += 1
        for _ in range(1 + _poisson(rng, 4)):
            pages = 1 + _poisson(rng, 3)
            pricing = sum(rng.random() < 0.05 + 0.4 * person.interest for _ in range(pages))
            emit(person, "web_session", {"pages": pages, "pricing_pages": pricing})
        for _ in range(_poisson(rng, 4)):
            emit(person, "email_open", {"campaign": f"newsletter-{rng.randint(1, 8)}"})
        for _ in range(_poisson(rng, 2)):
            connected = 0.15 + 0.6 * person.interest
            outcome = rng.choices(OUTCOMES, [connected, (1 - connected) / 2, (1 - connected) / 2])[0]
            emit(person, "sales_activity", {"outcome": outcome, "channel": rng.choice(("call", "email"))})
        if rng.random() < 0.55:  # sales accepts about half, whatever their interest
            continue
        accepted = person.created + timedelta(days=rng.uniform(10, 40))
        opened = accepted + timedelta(days=rng.uniform(3, 15))
        closed = opened + timedelta(days=rng.uniform(20, 90))
        rep = f"rep{index % 5}"
        if accepted >= shape.end:
            continue
        stages.append([person.email, "accept", _iso(accepted), rep, ""])
        if opened >= shape.end:
            continue
        amount = round(rng.uniform(5_000, 60_000), -2)
        won = rng.random() < 0.25 + 0.7 * person.interest - amount / 200_000
        if closed >= shape.end:
            deals.append([f"D-{index}", person.email, _iso(opened), "", "open", amount, ""])
        else:
            reason = "" if won else rng.choice(("price", "competitor", "no_decision"))
            deals.append(
                [f"D-{index}", person.email, _iso(opened), _iso(closed), "won" if won else "lost", amount, reason]
            )
    events[1:] = sorted(events[1:], key=lambda row: (row[3], row[0]))  # as a CRM exports them: in time order
    return {"accounts": accounts, "events": events, "stages": stages, "deals": deals}


def write_crm_history(folder: Path, shape: CrmShape, seed: int) -> CrmFiles:
    """The generated history as four CSV files in `folder`, ready for `qualify import`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in generate_crm_history(shape, seed).items():
        path = folder / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
        paths[name] = path
    return CrmFiles(**paths)
