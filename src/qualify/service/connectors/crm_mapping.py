"""The CRM sync mapping: what is pulled from a CRM, which sales statuses are stage actions, and
what is written back. A YAML document (reference: docs/integrations.md), validated like the
import mappings: every problem named with its line and key, before anything is sent or read.

    crm: hubspot
    pull:                       # in this order; each an import mapping (docs/import.md) over the
      companies:                # CRM's field names, with its kind
        kind: accounts
        fields: {domain: domain, name: name}
      contacts:
        kind: leads
        fields: {email: email, first_name: firstname}
    status:                     # the sales status on the people's records, as stage actions
      object: contacts
      field: hs_lead_status
      at: lastmodifieddate
      map:
        IN_PROGRESS: accept
        UNQUALIFIED: {action: disqualify, reason: no_need}
    push:                       # written on the people's records: CRM field <- Qualify column
      object: contacts
      create_fields: true
      fields:
        qualify_stage: stage
        qualify_score: score
    push_accounts:              # written on the companies pulled: CRM field <- account column
      object: companies
      fields:
        qualify_mqls: mqls
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qualify.adapters.crm import VENDORS, FieldSpec
from qualify.domain.errors import InvalidInput, ModelProblem
from qualify.domain.lifecycle import REASON_CODES, STAGE_ACTIONS
from qualify.domain.located_yaml import LocatedYaml, YamlSyntaxError, closest
from qualify.service.imports.mapping import Mapping, read_mapping_part
from qualify.service.reading.lead_export import ACCOUNT_COLUMNS, COLUMNS

# What a push may write: the columns of `qualify export leads`, and the reason the lead became MQL.
PUSHABLE = {**COLUMNS, "mql_reason": "text"}
CREATES_PEOPLE = ("hubspot",)  # the CRMs a push may create people in (by email)
MAX_TEXT = 200_000  # characters of a sync mapping: a page of YAML, not a data file
PULL_KINDS = ("accounts", "leads", "deals")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}(\.[A-Za-z][A-Za-z0-9_]{0,79})?$")
_TOP = {"crm", "description", "pull", "status", "push", "push_accounts"}
_STATUS = {"object", "field", "at", "map"}
_PUSH = {"object", "create", "create_fields", "fields"}
_ACCOUNT_PUSH = {"object", "create_fields", "fields"}
_FIELD_TYPES = {"float": "number", "int": "number", "text": "text", "time": "datetime"}


class SyncMappingError(InvalidInput):
    """A sync mapping that does not validate; every problem names its line and key."""

    def __init__(self, problems: list[ModelProblem], source: str) -> None:
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the CRM sync mapping", *(f"  {p}" for p in problems)]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class Pull:
    """One CRM object pulled into one kind of Qualify record, through an import mapping."""

    object: str
    kind: str
    mapping: Mapping

    @property
    def columns(self) -> list[str]:
        """The CRM fields the mapping reads: the ones a pull asks for."""
        rules = (*self.mapping.fields, *self.mapping.extras, *self.mapping.lifecycle)
        return sorted({rule.column for rule in rules if rule.column})


@dataclass(frozen=True, slots=True)
class StatusAction:
    action: str
    reason: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """The sales status field of the people's records: a change to a mapped value is the action."""

    object: str
    field: str
    at: str  # the record's field that dates the change
    actions: dict[str, StatusAction]


@dataclass(frozen=True, slots=True)
class Push:
    """What is written on the people's records: CRM field name -> Qualify column (`PUSHABLE`)."""

    object: str
    fields: dict[str, str]
    create: bool = False  # create the people the CRM lacks (HubSpot, by email)
    create_fields: bool = False  # create the CRM fields that are missing (HubSpot properties)
    accounts: bool = False  # written on the companies' records, from ACCOUNT_COLUMNS

    def specs(self) -> list[FieldSpec]:
        columns = ACCOUNT_COLUMNS if self.accounts else PUSHABLE
        return [
            FieldSpec(name, f"Qualify {column.replace('_', ' ')}", _FIELD_TYPES[columns[column]])
            for name, column in self.fields.items()
        ]


@dataclass(frozen=True)
class SyncMapping:
    crm: str
    pulls: tuple[Pull, ...]
    status: Status | None
    push: Push | None
    source: str
    push_accounts: Push | None = None
    text: str = field(repr=False, default="")

    def pull_of(self, obj: str) -> Pull | None:
        return next((p for p in self.pulls if p.object == obj), None)

    def fields_of(self, pull: Pull) -> list[str]:
        """What to ask of a pulled object: its mapping's columns, and the status and its date."""
        extra = [self.status.field, self.status.at] if self.status and self.status.object == pull.object else []
        return sorted({*pull.columns, *extra})


def load_sync_mapping(path: Path) -> SyncMapping:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read the CRM sync mapping {path}: {error}") from error
    return parse_sync_mapping(text, path.name)


def parse_sync_mapping(text: str, source: str = "<crm mapping>") -> SyncMapping:
    """Validate a sync mapping given as text; raise `SyncMappingError` naming every problem."""
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"{source}: {len(text):,} characters; a CRM sync mapping is at most {MAX_TEXT:,}")
    try:
        tree = LocatedYaml(text, source, typed_scalars=False)
    except YamlSyntaxError as error:
        raise SyncMappingError([error.problem], source) from error
    mapping = _Reader(tree).read(text)
    if tree.problems:
        raise SyncMappingError(sorted(tree.problems, key=lambda p: p.line or 0), source)
    return mapping


class _Reader:
    def __init__(self, tree: LocatedYaml) -> None:
        self.tree = tree

    def read(self, text: str) -> SyncMapping:
        data = self._dict(self.tree.data, "")
        self._keys(data, "", _TOP)
        crm = data.get("crm")
        if crm not in VENDORS:
            self.tree.problem("crm", f"{crm!r} is not a CRM Qualify connects to; expected one of: {', '.join(VENDORS)}")
        pulls = self._pulls(data.get("pull"))
        status = self._status(data.get("status"), pulls)
        push = self._push(data.get("push"))
        if push is not None and push.create and crm in VENDORS and crm not in CREATES_PEOPLE:
            self.tree.problem(
                "push.create", f"Qualify writes only to the {crm} records the sync pulled: leave create out"
            )
        accounts = self._push_accounts(data.get("push_accounts"), pulls)
        return SyncMapping(str(crm), tuple(pulls), status, push, self.tree.source, accounts, text)

    def _pulls(self, value: Any) -> list[Pull]:
        pulls = []
        for obj, spec in self._dict(value, "pull").items():
            path = f"pull.{obj}"
            if not _NAME.match(obj):
                self.tree.problem(path, f"{obj!r} is not an object name (letters, digits and _)")
                continue
            spec = self._dict(spec, path)
            kind = spec.get("kind")
            if kind not in PULL_KINDS:
                self.tree.problem(f"{path}.kind", f"{kind!r}: a pulled object becomes one of: {', '.join(PULL_KINDS)}")
                continue
            mapping = read_mapping_part(self.tree, path)
            pull = Pull(obj, kind, mapping)
            for column in pull.columns:
                if not _FIELD.match(column):
                    self.tree.problem(path, f"{column!r} is not a field name of the CRM (letters, digits, _ and one .)")
            pulls.append(pull)
        return pulls

    def _status(self, value: Any, pulls: list[Pull]) -> Status | None:
        if value is None:
            return None
        data = self._keys(self._dict(value, "status"), "status", _STATUS)
        obj, name, at = (self._name(data.get(k), f"status.{k}") for k in ("object", "field", "at"))
        people = [p.object for p in pulls if p.kind == "leads"]
        if obj is not None and obj not in people:
            self.tree.problem(
                "status.object", f"{obj!r} is not pulled as leads (pulled as leads: {', '.join(people) or 'none'})"
            )
        actions = {}
        for raw, spec in self._dict(data.get("map"), "status.map").items():
            path = f"status.map.{raw}"
            spec = (
                {"action": spec}
                if isinstance(spec, str)
                else self._keys(self._dict(spec, path), path, {"action", "reason", "note"})
            )
            action = spec.get("action")
            if action not in STAGE_ACTIONS:
                self.tree.problem(
                    path,
                    f"action {action!r}{closest(str(action), set(STAGE_ACTIONS))}; expected one of: {', '.join(STAGE_ACTIONS)}",
                )
                continue
            reason = spec.get("reason")
            if reason is not None and reason not in REASON_CODES:
                self.tree.problem(
                    f"{path}.reason",
                    f"{reason!r}{closest(str(reason), set(REASON_CODES))}; expected one of: {', '.join(REASON_CODES)}",
                )
            actions[str(raw)] = StatusAction(action, reason, spec.get("note"))
        if not actions:
            self.tree.problem("status.map", "map at least one status value to a stage action")
        if obj is None or name is None or at is None:
            return None
        return Status(obj, name, at, actions)

    def _push(self, value: Any) -> Push | None:
        if value is None:
            return None
        data = self._keys(self._dict(value, "push"), "push", _PUSH)
        obj = self._name(data.get("object"), "push.object")
        fields = self._push_fields(data.get("fields"), "push", PUSHABLE, "Qualify")
        flags = {k: self._flag(data.get(k), f"push.{k}") for k in ("create", "create_fields")}
        return Push(obj, fields, **flags) if obj else None

    def _push_accounts(self, value: Any, pulls: list[Pull]) -> Push | None:
        """`push_accounts`: the accounts' values written on the companies' records the sync pulled."""
        if value is None:
            return None
        data = self._keys(self._dict(value, "push_accounts"), "push_accounts", _ACCOUNT_PUSH)
        obj = self._name(data.get("object"), "push_accounts.object")
        companies = [p.object for p in pulls if p.kind == "accounts"]
        if obj is not None and obj not in companies:
            self.tree.problem(
                "push_accounts.object",
                f"{obj!r} is not pulled as accounts (pulled as accounts: {', '.join(companies) or 'none'})",
            )
        fields = self._push_fields(data.get("fields"), "push_accounts", ACCOUNT_COLUMNS, "account")
        flag = self._flag(data.get("create_fields"), "push_accounts.create_fields")
        return Push(obj, fields, create_fields=flag, accounts=True) if obj and fields else None

    def _push_fields(self, value: Any, key: str, columns: dict[str, str], whose: str) -> dict[str, str]:
        """`<key>.fields`: CRM field names to the columns (`whose`: Qualify's, or an account's)."""
        fields = {}
        for name, column in self._dict(value, f"{key}.fields").items():
            path = f"{key}.fields.{name}"
            if not _NAME.match(name):
                self.tree.problem(path, f"{name!r} is not a field name of the CRM (letters, digits and _)")
            elif column not in columns:
                label = "Qualify's columns" if whose == "Qualify" else f"an {whose}'s columns"
                self.tree.problem(
                    path, f"{column!r}{closest(str(column), set(columns))}; {label}: {', '.join(columns)}"
                )
            else:
                fields[name] = str(column)
        if not fields:
            self.tree.problem(f"{key}.fields", f"name at least one field to write (CRM field: {whose} column)")
        return fields

    # --- values ---------------------------------------------------------------------------------
    def _dict(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.tree.problem(path, "must be a mapping (key: value lines)")
            return {}
        return value

    def _keys(self, data: dict[str, Any], path: str, allowed: set[str]) -> dict[str, Any]:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                self.tree.problem(
                    where, f"unknown key{closest(key, allowed)}; expected one of: {', '.join(sorted(allowed))}"
                )
        return data

    def _name(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not _NAME.match(value):
            self.tree.problem(path, f"needs a field or object name of the CRM, got {value!r}")
            return None
        return value

    def _flag(self, value: Any, path: str) -> bool:
        if value is None:
            return False
        if str(value).lower() not in ("true", "false"):
            self.tree.problem(path, "must be true or false")
            return False
        return str(value).lower() == "true"
