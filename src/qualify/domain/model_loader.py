"""Load and validate a scoring model YAML document, naming the line and field of every problem."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from qualify.domain import records
from qualify.domain.conditions import OPERATORS, Condition, Regex, compile_regex
from qualify.domain.engagement import BONUS_AWARD, BONUS_EVENT
from qualify.domain.errors import ModelError, ModelProblem
from qualify.domain.located_yaml import LocatedYaml, YamlSyntaxError, closest, kind_of
from qualify.domain.scoring_model import (
    GRADES,
    AccountBar,
    AccountSpec,
    BusinessHours,
    BuyingRole,
    DisqualifyRule,
    EngagementRule,
    FastTrack,
    FitRule,
    FitSpec,
    HandoffSpec,
    Persona,
    Policy,
    Rep,
    RoutingRule,
    ScoringModel,
    SlaSpec,
    Team,
)

# What fit and disqualify rules may test: the stored fields plus two computed from the email.
LEAD_FIELDS = (*records.LEAD_FIELDS[:1], "email_domain", "is_free_mail", *records.LEAD_FIELDS[1:])
ACCOUNT_FIELDS = ("domain", *records.ACCOUNT_FIELDS)
_ATTRIBUTE_FIELD = re.compile(r"(account\.)?attributes\.[A-Za-z0-9_][A-Za-z0-9_ .-]*")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# The regular expressions of a model run in Python, DuckDB (RE2), PostgreSQL and Spark (Java):
# their common ground has no look-around, no back-references and no Python-only group syntax.
# Stored models keep loading whatever they hold; the batch side refuses what it cannot run.
_UNPORTABLE_REGEX = re.compile(r"\(\?(?:=|!|<=|<!|P)|\\[1-9]|\(\?#")


def batch_problems(model: ScoringModel) -> list[str]:
    """What in `model` the batch engines cannot run the way Python does (empty: all of it runs)."""
    conditions: list[tuple[str, Condition]] = [(f"fit rule {r.name}", c) for r in model.fit.rules for c in r.conditions]
    conditions += [(f"fit rule {r.name}", c) for p in model.fit.personas for r in p.rules for c in r.conditions]
    conditions += [(f"engagement rule {r.name}", c) for r in model.engagement_rules for c in r.where]
    conditions += [(f"disqualify rule {r.name}", c) for r in model.disqualify for c in r.conditions]
    out = []
    for where, condition in conditions:
        found = _UNPORTABLE_REGEX.search(str(condition.value)) if condition.op in ("regex", "not_regex") else None
        if found:
            out.append(
                f"{where}: {condition.field} {condition.op} {condition.value!r} uses {found.group(0)!r} (look-around, "
                "back-reference or Python-only syntax), which not every batch engine runs; e.g. write not_regex instead of (?!…)"
            )
    return out


_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# What routing itself writes as the rule that chose an owner: a routing rule may not take these names.
ROUTING_NAMES = ("account owner", "previous owner", "default team")
_MIDNIGHT = 24 * 60  # "24:00" in minutes
MAX_SLA_HOURS = 8760  # a year: anything longer is a typo, and the business-hours walk stays short


def known_field(name: str) -> bool:
    if name in LEAD_FIELDS or _ATTRIBUTE_FIELD.fullmatch(name):
        return True
    return name.startswith("account.") and name.removeprefix("account.") in ACCOUNT_FIELDS


def load_model(text: str, source: str = "<model>", *, stored: bool = False) -> ScoringModel:
    """Parse and validate a scoring model; raise `ModelError` listing every problem found. A
    `stored` one (read back from the store) keeps loading what it was accepted with."""
    try:
        doc = LocatedYaml(text, source, stored=stored)
    except YamlSyntaxError as error:
        raise ModelError([error.problem], source) from error
    refuse_nul(doc, doc.data)
    model = _Validator(doc).model()
    if doc.problems or model is None:
        raise ModelError(doc.problems or [ModelProblem("(document)", "empty model")], source)
    return model


def refuse_nul(doc: LocatedYaml, value: Any, path: str = "") -> None:
    """A problem for every key and text that holds the NUL character (written `\\0` or `\\x00` in
    YAML): PostgreSQL can neither store nor compare it, so a rule name holding one would make every
    event it scores fail to be stored there, and a value holding one stops the batch query."""

    def nul(where: str, message: str) -> None:
        doc.problems.append(ModelProblem(where.replace("\x00", "\\0") or "(document)", message, doc.line(where)))

    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                nul(child, "the key holds the NUL character (\\0), which PostgreSQL cannot store: remove it")
            refuse_nul(doc, item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            refuse_nul(doc, item, f"{path}[{i}]")
    elif isinstance(value, str) and "\x00" in value:
        nul(path, "holds the NUL character (\\0), which PostgreSQL cannot store: remove it")


def model_version(data: Any) -> str:
    """A content hash: comments and layout do not change the version, any value does."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class _Validator:
    def __init__(self, doc: LocatedYaml) -> None:
        self.doc = doc

    # --- helpers -------------------------------------------------------------------------
    def _mapping(self, value: Any, path: str, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
        if not isinstance(value, dict):
            self.doc.problem(path, f"must be a mapping, got {kind_of(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = closest(key, allowed)
                self.doc.problem(
                    f"{path}.{key}" if path else key,
                    f"unknown key{hint}; expected one of: {', '.join(sorted(allowed))}",
                )
        for key in sorted(required - value.keys()):
            self.doc.problem(path, f"missing required key '{key}'")
        return value

    def _list(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.doc.problem(path, f"must be a list, got {kind_of(value)}")
            return []
        return value

    def _number(
        self,
        value: Any,
        path: str,
        *,
        minimum: float | None = None,
        exclusive: bool = False,
        allow_none: bool = False,
    ) -> float | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.doc.problem(path, f"must be a number, got {kind_of(value)}")
            return None
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            self.doc.problem(path, "must be a finite number")
            return None
        if minimum is not None and (number <= minimum if exclusive else number < minimum):
            self.doc.problem(path, f"must be {'>' if exclusive else '≥'} {minimum:g}, got {number:g}")
            return None
        return number

    def _text(self, value: Any, path: str, *, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.doc.problem(path, f"must be a non-empty text, got {kind_of(value)}")
            return ""
        return value.strip()

    def _event_types(self, value: Any, path: str) -> tuple[str, ...]:
        types = [value] if isinstance(value, str) else self._list(value, path)
        before = len(self.doc.problems)
        out = []
        for i, item in enumerate(types):
            where = path if isinstance(value, str) else f"{path}[{i}]"
            if not isinstance(item, str) or not _EVENT_TYPE.fullmatch(item):
                self.doc.problem(where, f"event type must be lower_snake_case, got {item!r}")
            else:
                out.append(item)
        if not out and len(self.doc.problems) == before:
            self.doc.problem(path, "needs at least one event type")
        return tuple(out)

    def _unique(self, names: list[tuple[str, str]], what: str) -> None:
        seen: set[str] = set()
        for name, path in names:
            if name in seen:
                self.doc.problem(path, f"{what} name {name!r} is used twice")
            seen.add(name)

    # --- conditions ----------------------------------------------------------------------
    def condition(self, value: Any, path: str, *, field: str | None = None) -> Condition | None:
        """One condition: `{field: x, <op>: v}`, or for properties `{<op>: v}` / a bare value."""
        if field is not None and not isinstance(value, dict):
            return Condition(field, "equals", value)  # bare property value means equals
        allowed = set(OPERATORS) | ({"field"} if field is None else set())
        spec = self._mapping(value, path, allowed)
        if not spec:
            return None
        name = field
        if name is None:
            raw_field = spec.get("field")
            if not isinstance(raw_field, str) or not known_field(raw_field):
                self.doc.problem(
                    f"{path}.field",
                    f"unknown field {raw_field!r}; use one of {', '.join(LEAD_FIELDS)}, "
                    f"account.<{'|'.join(ACCOUNT_FIELDS)}>, attributes.<name> or account.attributes.<name>",
                )
                return None
            name = raw_field
        ops = [k for k in spec if k in OPERATORS]
        if len(ops) != 1:
            self.doc.problem(path, f"needs exactly one operator of: {', '.join(OPERATORS)} (got {len(ops)})")
            return None
        op = ops[0]
        arg = spec[op]
        at = f"{path}.{op}"
        if op in ("in", "not_in"):
            if not isinstance(arg, list) or not arg:
                self.doc.problem(at, "must be a non-empty list")
                return None
            return Condition(name, op, tuple(arg))
        if op in ("regex", "not_regex"):
            if not isinstance(arg, str):
                self.doc.problem(at, "must be a text")
                return None
            try:
                pattern = compile_regex(arg)
            except ValueError as exc:
                if self.doc.stored:  # accepted before RE2: loads as it did (batch_problems names it)
                    return Condition(name, op, arg, Regex(re.compile(arg, re.IGNORECASE)))
                self.doc.problem(
                    at,
                    f"not a regular expression this product runs: {exc} (RE2 syntax: no look-around or back-references)",
                )
                return None
            return Condition(name, op, arg, pattern)
        if op == "range":
            low, high = (
                (arg.get("min"), arg.get("max"))
                if isinstance(arg, dict)
                else (arg if isinstance(arg, list) and len(arg) == 2 else (None, None))
            )
            if isinstance(arg, dict):
                self._mapping(arg, at, {"min", "max"})
            elif not (isinstance(arg, list) and len(arg) == 2):
                self.doc.problem(at, "must be [min, max] or {min: .., max: ..}")
                return None
            lo = self._number(low, at, allow_none=True)
            hi = self._number(high, at, allow_none=True)
            if lo is None and hi is None:
                self.doc.problem(at, "needs a min, a max or both")
                return None
            if lo is not None and hi is not None and lo > hi:
                self.doc.problem(at, f"min {lo:g} is above max {hi:g}")
                return None
            return Condition(name, op, (lo, hi))
        if op == "exists":
            if not isinstance(arg, bool):
                self.doc.problem(at, "must be true or false")
                return None
            return Condition(name, op, arg)
        if isinstance(arg, (dict, list)) or arg is None:
            self.doc.problem(at, f"must be a single value, got {kind_of(arg)}")
            return None
        return Condition(name, op, arg)

    def conditions(self, value: Any, path: str) -> tuple[Condition, ...]:
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            cond = self.condition(item, f"{path}[{i}]" if isinstance(value, list) else path)
            if cond is not None:
                out.append(cond)
        if not items:
            self.doc.problem(path, "needs at least one condition")
        return tuple(out)

    def where(self, value: Any, path: str) -> tuple[Condition, ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.doc.problem(path, "must map event property names to conditions")
            return ()
        out = []
        for prop, spec in value.items():
            cond = self.condition(spec, f"{path}.{prop}", field=str(prop))
            if cond is not None:
                out.append(cond)
        return tuple(out)

    # --- sections ------------------------------------------------------------------------
    def fit_rule(self, value: Any, path: str) -> FitRule | None:
        spec = self._mapping(value, path, {"name", "when", "points"}, {"name", "when", "points"})
        if not spec:
            return None
        name = self._text(spec.get("name"), f"{path}.name")
        conditions = self.conditions(spec.get("when"), f"{path}.when") if "when" in spec else ()
        points = self._number(spec.get("points"), f"{path}.points") if "points" in spec else None
        if not name or not conditions or points is None:
            return None
        return FitRule(name, conditions, points)

    def fit_rules(self, value: Any, path: str) -> tuple[FitRule, ...]:
        rules = [self.fit_rule(item, f"{path}[{i}]") for i, item in enumerate(self._list(value, path))]
        kept = tuple(r for r in rules if r is not None)
        self._unique([(r.name, f"{path}[{i}].name") for i, r in enumerate(rules) if r], "rule")
        return kept

    def grades(self, value: Any, path: str) -> dict[str, float]:
        """Grade bands `{A: …, B: …, C: …}`, falling (D is everything below C); the defaults when absent."""
        grades_spec = self._mapping(value, path, {"A", "B", "C"}, {"A", "B", "C"})
        grades: dict[str, float] = {}
        for letter in ("A", "B", "C"):
            if letter in grades_spec:
                number = self._number(grades_spec[letter], f"{path}.{letter}", minimum=0)
                if number is not None:
                    grades[letter] = number
        if len(grades) == 3 and not grades["A"] > grades["B"] > grades["C"]:
            self.doc.problem(path, "bands must fall: A > B > C")
        return grades or {"A": 75, "B": 50, "C": 25}

    def fit(self, value: Any) -> FitSpec:
        spec = self._mapping(value, "fit", {"grades", "rules", "personas"}, {"personas"})
        grades = self.grades(spec.get("grades", {"A": 75, "B": 50, "C": 25}), "fit.grades")
        personas = []
        for i, item in enumerate(self._list(spec.get("personas"), "fit.personas")):
            path = f"fit.personas[{i}]"
            p = self._mapping(item, path, {"name", "description", "rules"}, {"name", "rules"})
            if p:
                personas.append(
                    Persona(
                        self._text(p.get("name"), f"{path}.name"),
                        self._text(p.get("description"), f"{path}.description", required=False),
                        self.fit_rules(p.get("rules"), f"{path}.rules"),
                    )
                )
        if "personas" in spec and not personas:
            self.doc.problem("fit.personas", "needs at least one persona")
        self._unique([(p.name, f"fit.personas[{i}].name") for i, p in enumerate(personas)], "persona")
        return FitSpec(grades, self.fit_rules(spec.get("rules"), "fit.rules"), tuple(personas))

    def accounts(self, value: Any) -> AccountSpec | None:
        """The `accounts` section: fit on the account's fields, the people's engagement rolled up
        (each person's held at `per_person_cap`), and the buying group's roles."""
        spec = self._mapping(value, "accounts", {"fit", "engagement", "buying_group", "stages"}, {"fit"})
        if not spec:
            return None
        fit = self._mapping(spec.get("fit"), "accounts.fit", {"grades", "rules"}, {"rules"}) if "fit" in spec else {}
        grades = self.grades(fit.get("grades", {"A": 75, "B": 50, "C": 25}), "accounts.fit.grades")
        rules = self.fit_rules(fit.get("rules"), "accounts.fit.rules")
        raw_rules = self._list(fit.get("rules"), "accounts.fit.rules")
        for i, rule in enumerate(raw_rules):
            for field, where in self._fields_of(rule, f"accounts.fit.rules[{i}].when"):
                if known_field(field) and not field.startswith("account."):
                    self.doc.problem(where, f"an account's fit tests the account's fields (account.…), not {field!r}")
        if "fit" in spec and not rules and not raw_rules:
            self.doc.problem("accounts.fit.rules", "needs at least one rule")
        engagement = self._mapping(_or_empty(spec, "engagement"), "accounts.engagement", {"per_person_cap"})
        cap = self._number(
            engagement.get("per_person_cap"), "accounts.engagement.per_person_cap", minimum=0, exclusive=True,
            allow_none=True,
        )  # fmt: skip
        group = self._mapping(
            _or_empty(spec, "buying_group"), "accounts.buying_group", {"roles", "within_days", "min_engagement"}
        )
        within = self._number(
            group.get("within_days", 90), "accounts.buying_group.within_days", minimum=0, exclusive=True
        )
        least = self._number(group.get("min_engagement", 0), "accounts.buying_group.min_engagement", minimum=0)
        roles: list[tuple[BuyingRole, str]] = []
        for i, item in enumerate(self._list(group.get("roles"), "accounts.buying_group.roles")):
            path = f"accounts.buying_group.roles[{i}]"
            role = self._mapping(item, path, {"name", "when"}, {"name", "when"})
            if not role:
                continue
            for field, where in self._fields_of(role, f"{path}.when"):
                if field.startswith("account."):
                    self.doc.problem(where, f"a role tests the person's fields, not the account's ({field!r})")
            name = self._text(role.get("name"), f"{path}.name")
            conditions = self.conditions(role.get("when"), f"{path}.when") if "when" in role else ()
            if name and conditions:
                roles.append((BuyingRole(name, conditions), f"{path}.name"))
        self._unique([(r.name, where) for r, where in roles], "role")
        stages = self._mapping(_or_empty(spec, "stages"), "accounts.stages", {"engaged", "mqa", "requalify_after_days"})
        engaged, mqa = (
            self.account_bar(stages[name], f"accounts.stages.{name}", len(roles))
            if stages.get(name) is not None
            else None
            for name in ("engaged", "mqa")
        )
        requalify = self._number(
            stages.get("requalify_after_days", 30), "accounts.stages.requalify_after_days", minimum=0
        )
        return AccountSpec(
            grades,
            rules,
            cap,
            tuple(r for r, _ in roles),
            within or 90.0,
            least or 0.0,
            engaged,
            mqa,
            30.0 if requalify is None else requalify,
        )

    def account_bar(self, value: Any, path: str, roles: int) -> AccountBar | None:
        """What an account needs to reach a stage: `{fit, engagement, roles}`, each at least."""
        bar = self._mapping(value, path, {"fit", "engagement", "roles"})
        if not bar:
            if isinstance(value, dict):
                self.doc.problem(path, "needs at least one of: fit, engagement, roles")
            return None
        fit, engagement = (self._number(bar.get(k), f"{path}.{k}", allow_none=True) for k in ("fit", "engagement"))
        covered = bar.get("roles")
        if covered is not None and (isinstance(covered, bool) or not isinstance(covered, int) or covered < 1):
            self.doc.problem(f"{path}.roles", f"must be a whole number of roles ≥ 1, got {covered!r}")
            covered = None
        elif covered is not None and covered > roles:
            self.doc.problem(f"{path}.roles", f"asks for {covered} roles, but the buying group defines {roles}")
            covered = None
        return AccountBar(fit, engagement, covered)

    @staticmethod
    def _fields_of(rule: Any, path: str) -> list[tuple[str, str]]:
        """The `field` of each condition of a rule's `when` (a mapping or a list), with its path."""
        when = rule.get("when") if isinstance(rule, dict) else None
        items = when if isinstance(when, list) else [when]
        return [
            (item["field"], f"{path}[{j}].field" if isinstance(when, list) else f"{path}.field")
            for j, item in enumerate(items)
            if isinstance(item, dict) and isinstance(item.get("field"), str)
        ]

    def engagement(self, value: Any) -> tuple[tuple[EngagementRule, ...], float | None]:
        spec = self._mapping(value, "engagement", {"half_life_days", "rules"}, {"rules"})
        default_half_life = (
            self._number(
                spec.get("half_life_days"),
                "engagement.half_life_days",
                minimum=0,
                exclusive=True,
                allow_none=True,
            )
            if spec
            else None
        )
        rules = []
        names: list[tuple[str, str]] = []
        for i, item in enumerate(self._list(spec.get("rules"), "engagement.rules")):
            path = f"engagement.rules[{i}]"
            r = self._mapping(
                item,
                path,
                {
                    "name",
                    "event",
                    "where",
                    "points",
                    "half_life_days",
                    "cap_per_day",
                    "cap",
                    "once",
                    "label",
                },
                {"name", "event", "points"},
            )
            if not r:
                continue
            half_life = default_half_life
            if "half_life_days" in r:
                half_life = self._number(
                    r["half_life_days"],
                    f"{path}.half_life_days",
                    minimum=0,
                    exclusive=True,
                    allow_none=True,
                )
            points = self._number(r.get("points"), f"{path}.points") if "points" in r else None
            cap_day = self._number(
                r.get("cap_per_day"),
                f"{path}.cap_per_day",
                minimum=0,
                exclusive=True,
                allow_none=True,
            )
            cap = self._number(r.get("cap"), f"{path}.cap", minimum=0, exclusive=True, allow_none=True)
            once = r.get("once", False)
            if not isinstance(once, bool):
                self.doc.problem(f"{path}.once", "must be true or false")
            if once and points is not None:
                if cap is not None:
                    self.doc.problem(f"{path}.once", "once and cap exclude each other")
                cap = abs(points)
            label = r.get("label")
            if label is not None and not isinstance(label, str):
                self.doc.problem(f"{path}.label", "must be a text")
                label = None
            name = self._text(r.get("name"), f"{path}.name")
            events = self._event_types(r.get("event"), f"{path}.event") if "event" in r else ()
            where = self.where(r.get("where"), f"{path}.where")
            if name == BONUS_AWARD:
                self.doc.problem(
                    f"{path}.name",
                    f"{BONUS_AWARD!r} is what a {BONUS_EVENT} event's award is called; choose another name",
                )
            if BONUS_EVENT in events:
                # One meaning for the type: the points the event carries (docs/scoring-model.md).
                self.doc.problem(
                    f"{path}.event",
                    f"{BONUS_EVENT} is reserved: such an event awards its own points, decaying with "
                    "engagement.half_life_days; remove it from the rule",
                )
            if name and events and points is not None:
                if points == 0:
                    self.doc.problem(f"{path}.points", "0 points does nothing; remove the rule")
                rules.append(EngagementRule(name, events, where, points, half_life, cap_day, cap, label))
            if name:
                names.append((name, f"{path}.name"))
        self._unique(names, "rule")
        return tuple(rules), default_half_life

    def disqualify(self, value: Any) -> tuple[DisqualifyRule, ...]:
        rules = []
        names: list[tuple[str, str]] = []
        for i, item in enumerate(self._list(value, "disqualify")):
            path = f"disqualify[{i}]"
            r = self._mapping(item, path, {"name", "when", "reason"}, {"name", "when", "reason"})
            if r and "when" in r:
                rules.append(
                    DisqualifyRule(
                        self._text(r.get("name"), f"{path}.name"),
                        self.conditions(r["when"], f"{path}.when"),
                        self._text(r.get("reason"), f"{path}.reason"),
                    )
                )
                names.append((rules[-1].name, f"{path}.name"))
        self._unique(names, "rule")
        return tuple(rules)

    def policy(self, value: Any) -> Policy:
        spec = self._mapping(value, "policy", {"mql", "fast_track", "decay_out"}, {"mql"})
        mql = self._mapping(
            spec.get("mql", {}),
            "policy.mql",
            {"thresholds", "requalify_margin", "requalify_after_days", "probability", "combine"},
            {"thresholds"},
        )
        thresholds: dict[str, float] = {}
        raw = self._mapping(mql.get("thresholds", {}), "policy.mql.thresholds", set(GRADES))
        for grade, number in raw.items():
            if grade in GRADES and number is not None:
                checked = self._number(number, f"policy.mql.thresholds.{grade}")
                if checked is not None:
                    thresholds[grade] = checked
        probability: dict[str, float] = {}
        raw = self._mapping(mql.get("probability", {}), "policy.mql.probability", set(GRADES))
        for grade, number in raw.items():
            if grade in GRADES and number is not None:
                checked = self._number(number, f"policy.mql.probability.{grade}", minimum=0)
                if checked is not None and checked > 1:
                    self.doc.problem(f"policy.mql.probability.{grade}", f"a probability is at most 1, got {checked:g}")
                elif checked is not None:
                    probability[grade] = checked
        combine = mql.get("combine", "any")
        if combine not in ("any", "all"):
            self.doc.problem("policy.mql.combine", f"must be any or all, got {combine!r}")
            combine = "any"
        if "thresholds" in mql and not thresholds and not probability:
            self.doc.problem(
                "policy.mql.thresholds",
                "no grade can become MQL: give at least one grade a threshold",
            )
        margin = self._number(mql.get("requalify_margin", 0), "policy.mql.requalify_margin", minimum=0) or 0.0
        cooldown = self._number(mql.get("requalify_after_days", 0), "policy.mql.requalify_after_days", minimum=0) or 0.0
        fast = []
        for i, item in enumerate(self._list(spec.get("fast_track"), "policy.fast_track")):
            path = f"policy.fast_track[{i}]"
            f = self._mapping(item, path, {"event", "to", "where"}, {"event", "to"})
            if not f:
                continue
            target = f.get("to")
            if target not in ("mql", "sql"):
                self.doc.problem(f"{path}.to", f"must be mql or sql, got {target!r}")
                continue
            if "event" in f:
                fast.append(
                    FastTrack(
                        self._event_types(f["event"], f"{path}.event"),
                        target,
                        self.where(f.get("where"), f"{path}.where"),
                    )
                )
        decay = self._mapping(spec.get("decay_out", {}), "policy.decay_out", {"floor", "min_days_in_mql"})
        floor = self._number(decay.get("floor"), "policy.decay_out.floor", allow_none=True)
        min_days = self._number(decay.get("min_days_in_mql", 0), "policy.decay_out.min_days_in_mql", minimum=0) or 0.0
        if floor is not None and thresholds:
            lowest = min(thresholds.values())
            if floor >= lowest:
                self.doc.problem(
                    "policy.decay_out.floor",
                    f"must be below the lowest MQL threshold ({lowest:g}), or leads would flap between MQL and nurture",
                )
        return Policy(thresholds, margin, tuple(fast), floor, min_days, cooldown, probability, combine)

    # --- handoff -------------------------------------------------------------------------
    def handoff(self, value: Any) -> HandoffSpec | None:
        spec = self._mapping(value, "handoff", {"teams", "rules", "account_owner_first", "default_team", "sla"})
        if isinstance(value, dict) and not value:
            self.doc.problem("handoff", "is empty: give teams and rules, an sla, or remove the section")
        if not spec:
            return None
        teams = self.teams(spec.get("teams"))
        names = {team.name for team in teams}
        rules = self.routing_rules(spec.get("rules"), names)
        first = spec.get("account_owner_first", False)
        if not isinstance(first, bool):
            self.doc.problem("handoff.account_owner_first", f"must be true or false, got {kind_of(first)}")
        default = None
        if spec.get("default_team") is not None:
            default = self._team_name(spec["default_team"], "handoff.default_team", names)
        sla = self.sla(spec["sla"]) if "sla" in spec else None
        return HandoffSpec(teams, rules, first is True, default, sla)

    def teams(self, value: Any) -> tuple[Team, ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.doc.problem("handoff.teams", f"must map team names to lists of reps, got {kind_of(value)}")
            return ()
        teams: list[Team] = []
        team_of: dict[str, str] = {}
        for name, reps in value.items():
            path = f"handoff.teams.{name}"
            items = self._list(reps, path)
            if not items and (reps is None or isinstance(reps, list)):
                self.doc.problem(path, "needs at least one rep")
            team = Team(str(name), tuple(r for i, item in enumerate(items) if (r := self.rep(item, f"{path}[{i}]"))))
            for i, rep in enumerate(team.reps):
                # One team per rep: capacity is counted per rep, and an account owner's team must be clear.
                if rep.name in team_of:
                    self.doc.problem(f"{path}[{i}]", f"rep {rep.name!r} is already in team {team_of[rep.name]!r}")
                team_of[rep.name] = team.name
            teams.append(team)
        return tuple(teams)

    def rep(self, value: Any, path: str) -> Rep | None:
        if isinstance(value, str):
            bare = self._text(value, path)
            return Rep(bare) if bare else None
        spec = self._mapping(value, path, {"name", "capacity_per_week"}, {"name"})
        if not spec:
            return None
        name = self._text(spec.get("name"), f"{path}.name")
        capacity = spec.get("capacity_per_week")
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
            self.doc.problem(f"{path}.capacity_per_week", f"must be a whole number ≥ 1, got {capacity!r}")
            capacity = None
        return Rep(name, capacity) if name else None

    def _team_name(self, value: Any, path: str, known: set[str]) -> str | None:
        name = self._text(value, path)
        if name and name not in known:
            listed = ", ".join(sorted(known)) or "none: add handoff.teams"
            self.doc.problem(path, f"unknown team {name!r}{closest(name, known)}; teams: {listed}")
            return None
        return name or None

    def routing_rules(self, value: Any, teams: set[str]) -> tuple[RoutingRule, ...]:
        rules: list[RoutingRule] = []
        names: list[tuple[str, str]] = []
        for i, item in enumerate(self._list(value, "handoff.rules")):
            path = f"handoff.rules[{i}]"
            r = self._mapping(item, path, {"name", "when", "team", "owner"}, {"name", "when"})
            if not r:
                continue
            name = self._text(r.get("name"), f"{path}.name")
            if name in ROUTING_NAMES:
                self.doc.problem(f"{path}.name", f"{name!r} is what routing itself records; choose another name")
            conditions = self.conditions(r["when"], f"{path}.when") if "when" in r else ()
            if ("team" in r) == ("owner" in r):
                self.doc.problem(path, "needs exactly one of team (round robin) or owner (a rep by name)")
                continue
            team = self._team_name(r["team"], f"{path}.team", teams) if "team" in r else None
            owner = self._text(r["owner"], f"{path}.owner") if "owner" in r else None
            if name and conditions and (team or owner):
                rules.append(RoutingRule(name, conditions, team, owner))
            if name:
                names.append((name, f"{path}.name"))
        self._unique(names, "rule")
        return tuple(rules)

    def sla(self, value: Any) -> SlaSpec | None:
        spec = self._mapping(value, "handoff.sla", {"hours", "business_hours"}, {"hours"})
        if not spec or "hours" not in spec:
            return None
        hours = self._number(spec["hours"], "handoff.sla.hours", minimum=0, exclusive=True)
        if hours is not None and hours > MAX_SLA_HOURS:
            self.doc.problem("handoff.sla.hours", f"must be at most {MAX_SLA_HOURS} (a year), got {hours:g}")
            hours = None
        business = self.business_hours(spec["business_hours"]) if spec.get("business_hours") is not None else None
        return SlaSpec(hours, business) if hours is not None else None

    def business_hours(self, value: Any) -> BusinessHours | None:
        path = "handoff.sla.business_hours"
        spec = self._mapping(value, path, {"days", "start", "end", "timezone"}, {"days", "start", "end", "timezone"})
        days = self._weekdays(spec["days"], f"{path}.days") if "days" in spec else None
        start = self._clock(spec["start"], f"{path}.start") if "start" in spec else None
        end = self._clock(spec["end"], f"{path}.end") if "end" in spec else None
        zone = self._timezone(spec["timezone"], f"{path}.timezone") if "timezone" in spec else None
        if start == _MIDNIGHT:
            self.doc.problem(f"{path}.start", '"24:00" may only end the day')
            return None
        if start is not None and end is not None and end <= start:
            self.doc.problem(f"{path}.end", "must be after start (business hours may not run past midnight)")
            return None
        if not days or start is None or end is None or zone is None:
            return None
        return BusinessHours(days, _time_of(start), None if end == _MIDNIGHT else _time_of(end), zone)

    def _weekdays(self, value: Any, path: str) -> frozenset[int] | None:
        items = self._list(value, path)
        days: set[int] = set()
        for i, item in enumerate(items):
            if item not in WEEKDAYS:
                self.doc.problem(f"{path}[{i}]", f"must be one of {', '.join(WEEKDAYS)}, got {item!r}")
            elif WEEKDAYS.index(item) + 1 in days:
                self.doc.problem(f"{path}[{i}]", f"{item} is listed twice")
            else:
                days.add(WEEKDAYS.index(item) + 1)
        if not items and (value is None or isinstance(value, list)):
            self.doc.problem(path, "needs at least one day")
        return frozenset(days) if days else None

    def _clock(self, value: Any, path: str) -> int | None:
        """A time of day "HH:MM" as minutes since midnight ("24:00" is 1440, the end of the day)."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MIDNIGHT:
            # YAML 1.1 reads an unquoted 17:00 as the base-60 number 1020: say so, it is a common slip.
            written = f"{value // 60:02d}:{value % 60:02d}"
            self.doc.problem(
                path,
                f'must be a time of day in quotes: unquoted {written} reads as the number {value}; write "{written}"',
            )
            return None
        match = _CLOCK.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            self.doc.problem(path, f'must be a time of day "HH:MM" from "00:00" to "24:00", got {value!r}')
            return None
        hours, minutes = value.strip().split(":")
        return int(hours) * 60 + int(minutes)

    def _timezone(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.doc.problem(path, f"must be a time zone name such as Europe/Berlin or UTC, got {kind_of(value)}")
            return None
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError, OSError):
            self.doc.problem(path, f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin or UTC")
            return None
        return value.strip()

    def model(self) -> ScoringModel | None:
        data = self.doc.data
        top = self._mapping(
            data,
            "",
            {"name", "description", "fit", "engagement", "disqualify", "policy", "handoff", "accounts"},
            {"name", "fit", "engagement", "policy"},
        )
        if not top:
            return None
        name = self._text(top.get("name"), "name")
        description = self._text(top.get("description"), "description", required=False)
        # A missing section is reported once, as a missing key above, not again inside.
        fit = self.fit(top["fit"]) if "fit" in top else FitSpec({"A": 75, "B": 50, "C": 25}, (), ())
        rules, half_life = self.engagement(top["engagement"]) if "engagement" in top else ((), None)
        disqualify = self.disqualify(top.get("disqualify"))
        policy = self.policy(top["policy"]) if "policy" in top else Policy({}, 0.0, (), None, 0.0)
        handoff = self.handoff(top["handoff"]) if top.get("handoff") is not None else None
        accounts = self.accounts(top["accounts"]) if top.get("accounts") is not None else None
        return ScoringModel(
            name,
            description,
            model_version(data),
            fit,
            rules,
            half_life,
            disqualify,
            policy,
            self.doc.source,
            handoff,
            accounts,
        )


def _or_empty(spec: dict[str, Any], key: str) -> Any:
    """A section's optional mapping: absent or null reads as empty, anything else as written."""
    value = spec.get(key)
    return {} if value is None else value


def _time_of(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)


def default_model_text() -> str:
    from importlib.resources import files

    return files("qualify").joinpath("default_model.yaml").read_text(encoding="utf-8")


def load_default_model() -> ScoringModel:
    """The scoring model that ships with Qualify (documented in docs/scoring-model.md)."""
    return load_model(default_model_text(), "default_model.yaml")
