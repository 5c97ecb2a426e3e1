"""Segments and workflows: their definitions, the document that holds them, and how a lead is tested.

A **segment** is a named, dynamic filter: a list of tests on what is known about a lead now
(profile and account fields, scores, stage, owner, tags) and on what it did (events of a kind,
how often, within a window, or not at all). `match: all` (the default) needs every test,
`match: any` one of them.

A **workflow** starts for a lead on a trigger (entered a stage, entered or left a segment, the
score crossed a value, an event of a kind), if its `when` tests hold; runs its steps in order
(email, waits, owner notifications and changes, tags, a score bonus, a move to nurture); and
stops early when one of its `exit` tests holds (the goal is reached, e.g. the lead became SQL).

Both are written in one YAML document (`segments:`, `workflows:`, `templates:`), validated with
the line and field of every problem, like the scoring model. The tests are pure: they run on
`LeadFacts`, which the service builds from the store, online after each change and in batch
over every lead; both paths run this same code, so they cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qualify.domain.account_stages import AccountStage
from qualify.domain.conditions import Condition
from qualify.domain.engagement import DAY
from qualify.domain.errors import ModelError
from qualify.domain.lifecycle import Stage
from qualify.domain.located_yaml import LocatedYaml, YamlSyntaxError, kind_of
from qualify.domain.model_loader import _Validator as Validator
from qualify.domain.model_loader import known_field, refuse_nul

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:-]{0,99}")
# What a segment may test besides the profile and account fields the scoring model tests.
STATE_FIELDS = (
    "stage",
    "fit_score",
    "fit_grade",
    "engagement_score",
    "score",
    "probability",
    "persona",
    "owner",
    "days_in_stage",
    "days_since_created",
    "days_since_last_event",
)
# What a segment may test of the lead's account as the ingestion pipeline keeps it
# (docs/accounts.md): its stage, and how many roles of its buying group are covered.
ACCOUNT_STATE_FIELDS = ("account.stage", "account.coverage")
STEP_KINDS = (
    "send_email",
    "wait",
    "wait_for",
    "notify_owner",
    "set_owner",
    "add_tag",
    "remove_tag",
    "bonus",
    "move_to_nurture",
)
TRIGGER_KINDS = ("entered_stage", "account_entered_stage", "entered_segment", "left_segment", "score_crossed", "event")
MAX_BONUS = 100.0
MAX_WAIT_DAYS = 366.0


class AutomationError(ModelError):
    """A segments/workflows document that does not validate; each problem names line and field."""

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s) in the segments and workflows"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


# --- what is known about a lead ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeenEvent:
    type: str
    at: float  # UTC timestamp
    properties: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EventCount:
    """A count some test needs: the lead's events of `types` in the last `days` days (None: all
    time), counted by the store instead of read one by one (a test without `where`)."""

    types: tuple[str, ...]
    days: float | None


@dataclass(frozen=True, slots=True)
class ValueCount:
    """What a test with `where` needs: the lead's events of `types` in the last `days` days (None:
    all time), counted by the store per distinct combination of the values of `fields` (the event
    properties its conditions read). The test then tests each combination once and adds up the
    counts of those that pass: the same answer as testing the events one by one, without reading
    them (a lead's thousands of page views are a handful of distinct URLs)."""

    types: tuple[str, ...]
    days: float | None
    fields: tuple[str, ...]


def _longest(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


@dataclass(frozen=True, slots=True)
class FactNeeds:
    """What some tests need to know about a lead: the fields they read, whether its tags, the
    counts the event tests without `where` need and the counts per value those with `where` need.
    What no test reads need not be read from the store. `events` (by kind, each with how far back:
    None for all time) has the events read one by one instead: what the counts are tested against."""

    fields: frozenset[str] = frozenset()
    tags: bool = False
    events: Mapping[str, float | None] = field(default_factory=dict)
    counts: frozenset[EventCount] = frozenset()
    grouped: frozenset[ValueCount] = frozenset()

    @property
    def profile(self) -> bool:
        """Whether a test reads a profile or account field (not only the scoring state)."""
        return bool(self.fields - set(STATE_FIELDS))

    @property
    def account(self) -> bool:
        """Whether a test reads an account field."""
        return any(name.startswith("account.") for name in self.fields)

    def merge(self, *others: FactNeeds) -> FactNeeds:
        """These needs and the others', together."""
        every = (self, *others)
        events: dict[str, float | None] = {}
        for need in every:
            for kind, days in need.events.items():
                events[kind] = _longest(events[kind], days) if kind in events else days
        return FactNeeds(
            frozenset().union(*(n.fields for n in every)),
            any(n.tags for n in every),
            events,
            frozenset().union(*(n.counts for n in every)),
            frozenset().union(*(n.grouped for n in every)),
        )


@dataclass(slots=True)
class LeadFacts:
    """A lead as the tests see it: field values, tags, its events of the kinds a `where` test
    reads, and the counts of events the other event tests need."""

    lead_id: int
    values: dict[str, Any]
    tags: frozenset[str] = frozenset()
    events: list[SeenEvent] = field(default_factory=list)
    counts: dict[EventCount, int] = field(default_factory=dict)
    grouped: dict[ValueCount, list[tuple[tuple[Any, ...], int]]] = field(default_factory=dict)  # values, count


# --- tests ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldTest:
    condition: Condition

    def holds(self, facts: LeadFacts, now: float) -> bool:
        return self.condition.test(facts.values.get(self.condition.field))

    def describe(self) -> str:
        return self.condition.describe()


@dataclass(frozen=True, slots=True)
class TagTest:
    tag: str
    present: bool

    def holds(self, facts: LeadFacts, now: float) -> bool:
        return (self.tag.casefold() in facts.tags) is self.present

    def describe(self) -> str:
        return f"tagged {self.tag!r}" if self.present else f"not tagged {self.tag!r}"


@dataclass(frozen=True, slots=True)
class EventTest:
    """Did (or did not) do an event of one of `types`, matching `where`, `min_count`..`max_count`
    times within the last `within_days` days (all time without a window)."""

    types: tuple[str, ...]
    where: tuple[Condition, ...] = ()
    within_days: float | None = None
    min_count: int = 1
    max_count: int | None = None
    negate: bool = False

    # What the store counts for it: the count of its events (no `where`), or their counts per value
    # of the fields its conditions read, with where each condition's field is in those values.
    counted: EventCount = field(init=False, repr=False, compare=False)
    grouped: ValueCount = field(init=False, repr=False, compare=False)
    _reads: tuple[tuple[Condition, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = tuple(dict.fromkeys(c.field for c in self.where))
        object.__setattr__(self, "counted", EventCount(self.types, self.within_days))
        object.__setattr__(self, "grouped", ValueCount(self.types, self.within_days, fields))
        object.__setattr__(self, "_reads", tuple((c, fields.index(c.field)) for c in self.where))

    def count(self, facts: LeadFacts, now: float, *, enough: int | None = None) -> int:
        """Events in the window (counting stops at `enough`); one dated a little ahead of `now`
        (clock skew) counts as done. The store's count where the facts hold it."""
        if not self.where and (stored := facts.counts.get(self.counted)) is not None:
            return stored
        if self.where and (groups := facts.grouped.get(self.grouped)) is not None:
            return sum(n for values, n in groups if all(c.test(values[i]) for c, i in self._reads))
        since = now - self.within_days * DAY if self.within_days is not None else None
        n = 0
        for event in facts.events:
            if (
                event.type in self.types
                and (since is None or event.at >= since)
                and all(c.test(event.properties.get(c.field)) for c in self.where)
            ):
                n += 1
                if n == enough:
                    break
        return n

    def holds(self, facts: LeadFacts, now: float) -> bool:
        # Past min_count (no max) or past max_count, more events change nothing: stop counting.
        n = self.count(facts, now, enough=self.min_count if self.max_count is None else self.max_count + 1)
        inside = n >= self.min_count and (self.max_count is None or n <= self.max_count)
        return inside is not self.negate

    def describe(self) -> str:
        kinds = "/".join(self.types)
        detail = "".join(f", {c.describe()}" for c in self.where)
        window = f" in the last {self.within_days:g} days" if self.within_days is not None else ""
        if self.negate and self.min_count == 1 and self.max_count is None:
            return f"no {kinds}{detail}{window}"
        times = f" ≥ {self.min_count}×" if self.max_count is None else f" {self.min_count}–{self.max_count}×"
        return f"{'not ' if self.negate else ''}{kinds}{detail}{times}{window}"


Test = FieldTest | TagTest | EventTest


@dataclass(frozen=True, slots=True)
class Tests:
    """A list of tests and how they combine (`all` or `any`); no tests: always true."""

    items: tuple[Test, ...] = ()
    match: str = "all"

    def holds(self, facts: LeadFacts, now: float) -> bool:
        if not self.items:
            return True
        combine = all if self.match == "all" else any
        return combine(t.holds(facts, now) for t in self.items)

    def fields(self) -> set[str]:
        """The lead fields these tests read."""
        return {t.condition.field for t in self.items if isinstance(t, FieldTest)}

    def needs(self) -> FactNeeds:
        """What these tests need to know about a lead."""
        events = [t for t in self.items if isinstance(t, EventTest)]
        return FactNeeds(
            frozenset(self.fields()),
            any(isinstance(t, TagTest) for t in self.items),
        ).merge(
            *(
                FactNeeds(grouped=frozenset({t.grouped})) if t.where else FactNeeds(counts=frozenset({t.counted}))
                for t in events
            )
        )

    def describe(self) -> str:
        joiner = " and " if self.match == "all" else " or "
        return joiner.join(t.describe() for t in self.items) or "every lead"


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    description: str | None
    tests: Tests
    document: dict[str, Any]  # the definition as written (JSON-able), for the store and the API
    # A static segment has no tests: its members are the leads people (or the API) put in it, and
    # they stay until taken out (or erased); testing never adds or removes one.
    static: bool = False

    @property
    def version(self) -> str:
        return content_version(self.document)

    def holds(self, facts: LeadFacts, now: float, *, member: bool) -> bool:
        """Whether the lead belongs in the segment now; `member`: whether it is in it."""
        return member if self.static else self.tests.holds(facts, now)

    def describe(self) -> str:
        return "the leads people put in it" if self.static else self.tests.describe()

    @property
    def timed(self) -> bool:
        """Whether time alone can change membership (a window or a days_* field): batch refresh needed."""
        fields = {t.condition.field for t in self.tests.items if isinstance(t, FieldTest)}
        windowed = any(isinstance(t, EventTest) and t.within_days is not None for t in self.tests.items)
        return windowed or bool(fields & {"engagement_score", "score", *(f for f in STATE_FIELDS if "days" in f)})


# --- workflows -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: str  # one of TRIGGER_KINDS
    value: str | float  # the stage, the segment, the threshold or the event type
    where: tuple[Condition, ...] = ()  # for `event`: tests on its properties

    def describe(self) -> str:
        if self.kind == "score_crossed":
            return f"score crossed {self.value:g}" if isinstance(self.value, float) else f"score crossed {self.value}"
        if self.kind == "event":
            detail = "".join(f", {c.describe()}" for c in self.where)
            return f"event {self.value}{detail}"
        return f"{self.kind.replace('_', ' ')} {self.value}"


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # one of STEP_KINDS
    args: dict[str, Any]

    def describe(self) -> str:
        a = self.args
        match self.kind:
            case "send_email":
                return f"send email {a['template']!r}"
            case "wait":
                return f"wait {a['days']:g} days" if a["days"] >= 1 else f"wait {a['days'] * 24:g} hours"
            case "wait_for":
                return f"wait for {a['event']} (at most {a['timeout_days']:g} days, then {a['on_timeout']})"
            case "notify_owner":
                return "notify the owner" + (f": {a['message']}" if a.get("message") else "")
            case "set_owner":
                return f"set owner to {a['owner']}"
            case "add_tag" | "remove_tag":
                return f"{self.kind.replace('_', ' ')} {a['tag']!r}"
            case "bonus":
                return f"bonus {a['points']:+g} points" + (f" ({a['reason']})" if a.get("reason") else "")
            case "move_to_nurture":
                return "move to nurture" + (f" ({a['reason']})" if a.get("reason") else "")
        return self.kind


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    description: str | None
    trigger: Trigger
    when: Tests
    exit: Tests  # any of them ends the run (match "any"); empty: never
    steps: tuple[Step, ...]
    reenter_after_days: float | None  # None: a lead runs the workflow once
    document: dict[str, Any]

    @property
    def version(self) -> str:
        return content_version(self.document)

    def templates(self) -> set[str]:
        return {step.args["template"] for step in self.steps if step.kind == "send_email"}

    def segments(self) -> set[str]:
        return {str(self.trigger.value)} if self.trigger.kind in ("entered_segment", "left_segment") else set()


@dataclass(frozen=True, slots=True)
class Template:
    """An email as its author writes it: Jinja2 sources of the subject, the text body and an optional HTML body."""

    name: str
    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True, slots=True)
class AutomationDocument:
    segments: tuple[Segment, ...] = ()
    workflows: tuple[Workflow, ...] = ()
    templates: tuple[Template, ...] = ()


def content_version(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# --- loading -------------------------------------------------------------------------------------


def load_automation(text: str, source: str = "<automation>", *, stored: bool = False) -> AutomationDocument:
    """Parse and validate a document of `segments:`, `workflows:` and `templates:`; raise
    `AutomationError` listing every problem with its line and field (`stored`: as `load_model`)."""
    try:
        doc = LocatedYaml(text, source, stored=stored)
    except YamlSyntaxError as error:
        raise AutomationError([error.problem], source) from error
    refuse_nul(doc, doc.data)
    loader = _AutomationLoader(doc)
    result = loader.document()
    if doc.problems:
        raise AutomationError(doc.problems, source)
    return result


def load_segment(definition: Mapping[str, Any], source: str = "<segment>", *, stored: bool = False) -> Segment:
    """One segment from its definition (as sent to the API, or `stored`)."""
    text = json.dumps({"segments": [dict(definition)]}, default=str, ensure_ascii=False)
    return load_automation(text, source, stored=stored).segments[0]


def load_workflow(definition: Mapping[str, Any], source: str = "<workflow>", *, stored: bool = False) -> Workflow:
    text = json.dumps({"workflows": [dict(definition)]}, default=str, ensure_ascii=False)
    return load_automation(text, source, stored=stored).workflows[0]


class _AutomationLoader(Validator):
    def document(self) -> AutomationDocument:
        spec = self._mapping(self.doc.data or {}, "", {"segments", "workflows", "templates"})
        segments = [
            s
            for i, item in enumerate(self._list(spec.get("segments"), "segments"))
            if (s := self.segment(item, f"segments[{i}]"))
        ]
        self._unique([(s.name, "segments") for s in segments], "segment")
        templates = self.templates(spec.get("templates"))
        workflows = [
            w
            for i, item in enumerate(self._list(spec.get("workflows"), "workflows"))
            if (w := self.workflow(item, f"workflows[{i}]"))
        ]
        self._unique([(w.name, "workflows") for w in workflows], "workflow")
        if not (segments or workflows or templates) and not self.doc.problems:
            self.doc.problem("", "holds no segments, workflows or templates")
        return AutomationDocument(tuple(segments), tuple(workflows), tuple(templates))

    # --- pieces ------------------------------------------------------------------------------
    def _name(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not NAME.fullmatch(value):
            self.doc.problem(path, f"must be lower-case letters, digits, '-', '_' or '.' (at most 100), got {value!r}")
            return ""
        return value

    def _days(self, value: Any, path: str, *, maximum: float = MAX_WAIT_DAYS) -> float | None:
        number = self._number(value, path, minimum=0, exclusive=True)
        if number is not None and number > maximum:
            self.doc.problem(path, f"must be at most {maximum:g} days, got {number:g}")
            return None
        return number

    def tests(self, value: Any, path: str, match: str = "all") -> Tests:
        if value is None:
            return Tests((), match)
        items = value if isinstance(value, list) else [value]
        out = [
            t
            for i, item in enumerate(items)
            if (t := self.test(item, f"{path}[{i}]" if isinstance(value, list) else path))
        ]
        return Tests(tuple(out), match)

    def test(self, value: Any, path: str) -> Test | None:
        if not isinstance(value, dict):
            self.doc.problem(path, f"must be a mapping (a test), got {kind_of(value)}")
            return None
        if "event" in value or "no_event" in value:
            return self.event_test(value, path)
        if "tag" in value or "no_tag" in value:
            spec = self._mapping(value, path, {"tag", "no_tag"})
            if len(spec) != 1:
                self.doc.problem(path, "needs one of 'tag' or 'no_tag'")
                return None
            key = next(iter(spec))
            tag = spec[key]
            if not isinstance(tag, str) or not TAG.fullmatch(tag):
                self.doc.problem(f"{path}.{key}", f"must be a tag name (letters, digits, space, _.:-), got {tag!r}")
                return None
            return TagTest(tag, key == "tag")
        name = value.get("field")
        if isinstance(name, str) and name in (*STATE_FIELDS, *ACCOUNT_STATE_FIELDS):
            rest = {k: v for k, v in value.items() if k != "field"}
            if name == "stage":
                self._stages(rest, path)
            elif name == "account.stage":
                self._stages(rest, path, {s.value for s in AccountStage}, "account stage")
            condition = self.condition(rest, path, field=name)
        elif isinstance(name, str) and not known_field(name):
            self.doc.problem(
                f"{path}.field",
                f"unknown field {name!r}; a segment tests profile fields (as the scoring model does), "
                f"{', '.join((*STATE_FIELDS, *ACCOUNT_STATE_FIELDS))}, or uses event/no_event, tag/no_tag",
            )
            return None
        elif "field" not in value:
            self.doc.problem(path, "needs 'field', 'event', 'no_event', 'tag' or 'no_tag'")
            return None
        else:
            condition = self.condition(value, path)
        return FieldTest(condition) if condition is not None else None

    def _stages(self, spec: dict[str, Any], path: str, known: set[str] | None = None, what: str = "stage") -> None:
        known = known or {s.value for s in Stage}
        for op, arg in spec.items():
            values = arg if isinstance(arg, list) else [arg]
            if op in ("equals", "not_equals", "in", "not_in"):
                for v in values:
                    if str(v).strip().casefold() not in known:
                        self.doc.problem(
                            f"{path}.{op}", f"unknown {what} {v!r}; {what}s are {', '.join(sorted(known))}"
                        )

    def event_test(self, value: dict[str, Any], path: str) -> EventTest | None:
        allowed = {"event", "no_event", "where", "within_days", "min_count", "max_count"}
        spec = self._mapping(value, path, allowed)
        if ("event" in spec) == ("no_event" in spec):
            self.doc.problem(path, "needs exactly one of 'event' or 'no_event'")
            return None
        negate = "no_event" in spec
        key = "no_event" if negate else "event"
        types = self._event_types(spec[key], f"{path}.{key}")
        where = self.where(spec.get("where"), f"{path}.where")
        within = self._days(spec["within_days"], f"{path}.within_days", maximum=3660) if "within_days" in spec else None
        low = self._count(spec.get("min_count", 1), f"{path}.min_count")
        high = self._count(spec["max_count"], f"{path}.max_count") if "max_count" in spec else None
        if negate and ("min_count" in spec or "max_count" in spec):
            self.doc.problem(path, "no_event takes no min_count or max_count (write event with max_count instead)")
        if low is not None and high is not None and low > high:
            self.doc.problem(f"{path}.max_count", f"is below min_count ({high} < {low})")
        if not types:
            return None
        return EventTest(types, where, within, low if low is not None else 1, high, negate)

    def _count(self, value: Any, path: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.doc.problem(path, f"must be a whole number ≥ 0, got {value!r}")
            return None
        return value

    # --- segments ----------------------------------------------------------------------------
    def segment(self, value: Any, path: str) -> Segment | None:
        spec = self._mapping(value, path, {"name", "description", "match", "when", "static"}, {"name"})
        if not spec:
            return None
        name = self._name(spec.get("name"), f"{path}.name")
        static = spec.get("static", False)
        if not isinstance(static, bool):
            self.doc.problem(f"{path}.static", f"must be true or false, got {kind_of(static)}")
            static = False
        if static and ("when" in spec or "match" in spec):
            self.doc.problem(f"{path}.when", "a static segment has no tests: people put leads in it")
        elif not static and "when" not in spec:
            self.doc.problem(path, "missing required key 'when' (or 'static: true' for a list people fill)")
        match = spec.get("match", "all")
        if match not in ("all", "any"):
            self.doc.problem(f"{path}.match", f"must be 'all' or 'any', got {match!r}")
            match = "all"
        tests = self.tests(spec.get("when"), f"{path}.when", match)
        if isinstance(spec.get("when"), list) and not spec["when"]:
            self.doc.problem(f"{path}.when", "needs at least one test")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            self.doc.problem(f"{path}.description", f"must be a text, got {kind_of(description)}")
        if not name:
            return None
        return Segment(name, description, Tests() if static else tests, _plain(spec), static)

    # --- templates ---------------------------------------------------------------------------
    def templates(self, value: Any) -> list[Template]:
        out: list[Template] = []
        for i, item in enumerate(self._list(value, "templates")):
            path = f"templates[{i}]"
            spec = self._mapping(item, path, {"name", "subject", "text", "html"}, {"name", "subject", "text"})
            if not spec:
                continue
            name = self._name(spec.get("name"), f"{path}.name")
            subject = self._text(spec.get("subject"), f"{path}.subject")
            text = self._text(spec.get("text"), f"{path}.text")
            html = spec.get("html")
            if html is not None and not isinstance(html, str):
                self.doc.problem(f"{path}.html", f"must be a text, got {kind_of(html)}")
                html = None
            if name and subject and text:
                out.append(Template(name, subject, text, html))
        self._unique([(t.name, "templates") for t in out], "template")
        return out

    # --- workflows ---------------------------------------------------------------------------
    def workflow(self, value: Any, path: str) -> Workflow | None:
        allowed = {"name", "description", "trigger", "when", "exit", "steps", "reenter_after_days"}
        spec = self._mapping(value, path, allowed, {"name", "trigger", "steps"})
        if not spec:
            return None
        name = self._name(spec.get("name"), f"{path}.name")
        trigger = self.trigger(spec.get("trigger"), f"{path}.trigger")
        when = self.tests(spec.get("when"), f"{path}.when")
        exit_tests = self.tests(spec.get("exit"), f"{path}.exit", "any")
        steps = [
            s
            for i, item in enumerate(self._list(spec.get("steps"), f"{path}.steps"))
            if (s := self.step(item, f"{path}.steps[{i}]"))
        ]
        if not spec.get("steps"):
            self.doc.problem(f"{path}.steps", "needs at least one step")
        reenter = (
            self._days(spec["reenter_after_days"], f"{path}.reenter_after_days", maximum=3660)
            if "reenter_after_days" in spec
            else None
        )
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            self.doc.problem(f"{path}.description", f"must be a text, got {kind_of(description)}")
        if not name or trigger is None:
            return None
        return Workflow(name, description, trigger, when, exit_tests, tuple(steps), reenter, _plain(spec))

    def trigger(self, value: Any, path: str) -> Trigger | None:
        spec = self._mapping(value, path, {*TRIGGER_KINDS, "where"})
        kinds = [k for k in spec if k in TRIGGER_KINDS]
        if len(kinds) != 1:
            if spec:
                self.doc.problem(path, f"needs exactly one of: {', '.join(TRIGGER_KINDS)}")
            return None
        kind = kinds[0]
        arg, at = spec[kind], f"{path}.{kind}"
        if "where" in spec and kind != "event":
            self.doc.problem(f"{path}.where", "only an event trigger takes 'where'")
        if kind in ("entered_stage", "account_entered_stage"):
            what = "stage" if kind == "entered_stage" else "account stage"
            stages = {s.value for s in Stage} if kind == "entered_stage" else {s.value for s in AccountStage}
            if arg not in stages:
                self.doc.problem(at, f"unknown {what} {arg!r}; {what}s are {', '.join(sorted(stages))}")
                return None
            return Trigger(kind, str(arg))
        if kind in ("entered_segment", "left_segment"):
            name = self._name(arg, at)
            return Trigger(kind, name) if name else None
        if kind == "score_crossed":
            number = self._number(arg, at)
            return Trigger(kind, number) if number is not None else None
        types = self._event_types(arg, at)
        if len(types) != 1:
            if types:
                self.doc.problem(at, "names one event type")
            return None
        return Trigger(kind, types[0], self.where(spec.get("where"), f"{path}.where"))

    def step(self, value: Any, path: str) -> Step | None:
        if not isinstance(value, dict) or len(value) != 1:
            self.doc.problem(path, f"must be a mapping with one of: {', '.join(STEP_KINDS)}")
            return None
        kind, arg = next(iter(value.items()))
        at = f"{path}.{kind}"
        if kind not in STEP_KINDS:
            self._mapping(value, path, set(STEP_KINDS))
            return None
        match kind:
            case "send_email":
                template = self._name(arg, at)
                return Step(kind, {"template": template}) if template else None
            case "wait":
                spec = self._mapping(arg, at, {"days", "hours", "minutes"})
                if len(spec) != 1:
                    if spec:
                        self.doc.problem(at, "needs one of days, hours or minutes")
                    return None
                unit, amount = next(iter(spec.items()))
                if unit not in ("days", "hours", "minutes"):
                    return None  # named by _mapping
                per_day = {"days": 1, "hours": 24, "minutes": 1440}[unit]
                number = self._number(amount, f"{at}.{unit}", minimum=0, exclusive=True)
                if number is None:
                    return None
                days = number / per_day
                if days > MAX_WAIT_DAYS:
                    self.doc.problem(f"{at}.{unit}", f"waits at most {MAX_WAIT_DAYS:g} days")
                    return None
                return Step(kind, {"days": days})
            case "wait_for":
                spec = self._mapping(arg, at, {"event", "timeout_days", "on_timeout"}, {"event", "timeout_days"})
                if not spec:
                    return None
                types = self._event_types(spec.get("event"), f"{at}.event")
                timeout = self._days(spec.get("timeout_days"), f"{at}.timeout_days")
                on_timeout = spec.get("on_timeout", "continue")
                if on_timeout not in ("continue", "exit"):
                    self.doc.problem(f"{at}.on_timeout", f"must be 'continue' or 'exit', got {on_timeout!r}")
                    return None
                if len(types) != 1 or timeout is None:
                    if len(types) > 1:
                        self.doc.problem(f"{at}.event", "names one event type")
                    return None
                return Step(kind, {"event": types[0], "timeout_days": timeout, "on_timeout": on_timeout})
            case "notify_owner":
                if arg is not None and not isinstance(arg, str):
                    spec = self._mapping(arg, at, {"message"})
                    arg = spec.get("message")
                    if arg is not None and not isinstance(arg, str):
                        self.doc.problem(f"{at}.message", f"must be a text, got {kind_of(arg)}")
                        return None
                return Step(kind, {"message": (arg or "").strip()[:500]})
            case "set_owner":
                owner = self._text(arg, at)
                return Step(kind, {"owner": owner[:200]}) if owner else None
            case "add_tag" | "remove_tag":
                if not isinstance(arg, str) or not TAG.fullmatch(arg):
                    self.doc.problem(at, f"must be a tag name (letters, digits, space, _.:-), got {arg!r}")
                    return None
                return Step(kind, {"tag": arg})
            case "bonus":
                spec = (
                    self._mapping(arg, at, {"points", "reason"}, {"points"})
                    if isinstance(arg, dict)
                    else {"points": arg}
                )
                points = self._number(spec.get("points"), f"{at}.points")
                if points is None:
                    return None
                if abs(points) > MAX_BONUS or points == 0:
                    self.doc.problem(f"{at}.points", f"must be non-zero and within ±{MAX_BONUS:g}, got {points:g}")
                    return None
                reason = spec.get("reason")
                if reason is not None and not isinstance(reason, str):
                    self.doc.problem(f"{at}.reason", f"must be a text, got {kind_of(reason)}")
                    return None
                return Step(kind, {"points": points, "reason": (reason or "").strip()[:200]})
            case "move_to_nurture":
                if arg is not None and not isinstance(arg, str):
                    spec = self._mapping(arg, at, {"reason"})
                    arg = spec.get("reason")
                return Step(kind, {"reason": str(arg or "").strip()[:200]})
        return None


def _plain(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The definition as JSON-able data (dates in YAML become text), for storage and versions."""
    loaded: dict[str, Any] = json.loads(json.dumps(dict(spec), default=str, ensure_ascii=False))
    return loaded


def referenced_templates(workflows: Iterable[Workflow]) -> set[str]:
    return {name for w in workflows for name in w.templates()}
