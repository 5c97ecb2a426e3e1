"""Load and validate a scoring model YAML document, naming the line and field of every problem."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from qualify.domain import records
from qualify.domain.conditions import OPERATORS, Condition
from qualify.domain.errors import ModelError, ModelProblem
from qualify.domain.located_yaml import LocatedYaml, YamlSyntaxError, closest, kind_of
from qualify.domain.scoring_model import (
    GRADES,
    DisqualifyRule,
    EngagementRule,
    FastTrack,
    FitRule,
    FitSpec,
    Persona,
    Policy,
    ScoringModel,
)

# What fit and disqualify rules may test: the stored fields plus two computed from the email.
LEAD_FIELDS = (*records.LEAD_FIELDS[:1], "email_domain", "is_free_mail", *records.LEAD_FIELDS[1:])
ACCOUNT_FIELDS = ("domain", *records.ACCOUNT_FIELDS)
_ATTRIBUTE_FIELD = re.compile(r"(account\.)?attributes\.[A-Za-z0-9_][A-Za-z0-9_ .-]*")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def known_field(name: str) -> bool:
    if name in LEAD_FIELDS or _ATTRIBUTE_FIELD.fullmatch(name):
        return True
    return name.startswith("account.") and name.removeprefix("account.") in ACCOUNT_FIELDS


def load_model(text: str, source: str = "<model>") -> ScoringModel:
    """Parse and validate a scoring model; raise `ModelError` listing every problem found."""
    try:
        doc = LocatedYaml(text, source)
    except YamlSyntaxError as error:
        raise ModelError([error.problem], source) from error
    model = _Validator(doc).model()
    if doc.problems or model is None:
        raise ModelError(doc.problems or [ModelProblem("(document)", "empty model")], source)
    return model


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
        if op == "regex":
            if not isinstance(arg, str):
                self.doc.problem(at, "must be a text")
                return None
            try:
                pattern = re.compile(arg, re.IGNORECASE)
            except re.error as exc:
                self.doc.problem(at, f"not a valid regular expression: {exc}")
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

    def fit(self, value: Any) -> FitSpec:
        spec = self._mapping(value, "fit", {"grades", "rules", "personas"}, {"personas"})
        grades_raw = spec.get("grades", {"A": 75, "B": 50, "C": 25})
        grades_spec = self._mapping(grades_raw, "fit.grades", {"A", "B", "C"}, {"A", "B", "C"})
        grades: dict[str, float] = {}
        for letter in ("A", "B", "C"):
            if letter in grades_spec:
                number = self._number(grades_spec[letter], f"fit.grades.{letter}", minimum=0)
                if number is not None:
                    grades[letter] = number
        if len(grades) == 3 and not grades["A"] > grades["B"] > grades["C"]:
            self.doc.problem("fit.grades", "bands must fall: A > B > C")
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
        return FitSpec(
            grades or {"A": 75, "B": 50, "C": 25},
            self.fit_rules(spec.get("rules"), "fit.rules"),
            tuple(personas),
        )

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
            {"thresholds", "requalify_margin", "requalify_after_days"},
            {"thresholds"},
        )
        thresholds: dict[str, float] = {}
        raw = self._mapping(mql.get("thresholds", {}), "policy.mql.thresholds", set(GRADES))
        for grade, number in raw.items():
            if grade in GRADES and number is not None:
                checked = self._number(number, f"policy.mql.thresholds.{grade}")
                if checked is not None:
                    thresholds[grade] = checked
        if "thresholds" in mql and not thresholds:
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
        return Policy(thresholds, margin, tuple(fast), floor, min_days, cooldown)

    def model(self) -> ScoringModel | None:
        data = self.doc.data
        top = self._mapping(
            data,
            "",
            {"name", "description", "fit", "engagement", "disqualify", "policy"},
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
        )


def default_model_text() -> str:
    from importlib.resources import files

    return files("qualify").joinpath("default_model.yaml").read_text(encoding="utf-8")


def load_default_model() -> ScoringModel:
    """The scoring model that ships with Qualify (documented in docs/scoring-model.md)."""
    return load_model(default_model_text(), "default_model.yaml")
