"""A strict loopback fake of HubSpot's CRM REST API, for tests of the CRM sync adapter.

The official ``hubspot-api-client`` talks to it as to api.hubapi.com (``HubSpot(access_token=..., host=fake.url)``).
Every request is checked against HubSpot's documentation. One HubSpot would refuse gets HubSpot's status and JSON
error body and, when the client is to blame (400, 404, 405, 415, a 401 without a token), a line in ``fake.problems``,
so a test can end with ``assert fake.problems == []``. Sources (developers.hubspot.com): "Search the CRM" (operators,
limits, paging), the CRM objects batch endpoints, "Associations v4", "Properties", "API usage guidelines" (rate
limits, their headers, the 429 body), and the changelog entries named where they apply.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

Json = dict[str, Any]
Query = dict[str, list[str]]
Answer = tuple[int, Json]

_TYPES = {"contacts": "contacts", "0-1": "contacts", "companies": "companies", "0-2": "companies", "deals": "deals"}
_TYPES["0-3"] = "deals"  # HubSpot takes an object type's name or its id in paths
_SINGULAR = {"contacts": "contact", "companies": "company", "deals": "deal"}
_MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate", "deals": "hs_lastmodifieddate"}
_FIRST_ID = {"contacts": 101, "companies": 5001, "deals": 9001}
_GROUP = {"contacts": "contactinformation", "companies": "companyinformation", "deals": "dealinformation"}
# What search and batch read return when no properties are asked for ("Search the CRM": default properties).
_DEFAULT_PROPERTIES = {"contacts": "email firstname lastname", "companies": "domain name"}
_DEFAULT_PROPERTIES["deals"] = "amount closedate dealname dealstage pipeline"
_BATCH_LIMIT = 100  # CRM objects batch endpoints: at most 100 inputs
_ASSOCIATION_BATCH_LIMIT = 1000  # changelog 2025-02 "Batch Read Limit for HubSpot Associations API"
_SEARCH_MAX_LIMIT = 200  # changelog 2024-09 "Increasing our API limits": 200 results a search page
_SEARCH_WINDOW = 10_000  # search cannot page beyond 10,000 results
# The search guide: at most 5 filterGroups of at most 6 filters, 18 in all. (The 2024-08 changelog announced 10 a
# group and 25 in all; the fake keeps the guide's smaller numbers, which HubSpot accepts either way.)
_MAX_GROUPS, _MAX_GROUP_FILTERS, _MAX_FILTERS = 5, 6, 18
_OPERATORS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"}
_OPERATORS |= {"CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}
_NEGATIVE = ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")  # the operators a record without a value matches
# Associations v4, HUBSPOT_DEFINED type ids: (unlabeled, primary company, the primary's label) for each direction.
_ASSOCIATION_TYPES: dict[tuple[str, str], tuple[int, int | None, str | None]] = {
    ("contacts", "companies"): (279, 1, "Contact with Primary Company"),
    ("companies", "contacts"): (280, 2, "Contact with Primary Company"),
    ("deals", "companies"): (341, 5, "Deal with Primary Company"),
    ("companies", "deals"): (342, 6, "Deal with Primary Company"),
    ("deals", "contacts"): (3, None, None),
    ("contacts", "deals"): (4, None, None),
}
_FIELD_TYPES = {  # "Properties": the fieldType each property type takes
    "string": {"text", "textarea", "file", "html", "phonenumber", "calculation_equation"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox", "calculation_equation"},
    "bool": {"booleancheckbox", "calculation_equation"},
}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_AUTH = "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more "
_AUTH += "details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
# Request models' fields (HubSpot refuses a field it does not know: 'Unrecognized field ... not marked as ignorable').
_SEARCH_FIELDS = frozenset({"filterGroups", "sorts", "query", "properties", "limit", "after"})
_FILTER_FIELDS = frozenset({"propertyName", "operator", "value", "values", "highValue"})
_WRITE_FIELDS = frozenset({"id", "idProperty", "properties", "objectWriteTraceId"})
_READ_FIELDS = frozenset({"inputs", "properties", "propertiesWithHistory", "idProperty"})
_OPTION_FIELDS = frozenset({"label", "value", "description", "displayOrder", "hidden"})
_CREATE_REQUIRED = ("name", "label", "type", "fieldType", "groupName")
_CREATE_FIELDS = frozenset({*_CREATE_REQUIRED, "description", "options", "displayOrder", "hasUniqueValue", "hidden"})
_CREATE_FIELDS |= {"formField", "calculationFormula", "referencedObjectType", "externalOptions", "dataSensitivity"}
_CREATE_FIELDS |= {"currencyPropertyName", "numberDisplayHint", "showCurrencySymbol"}

# Standard properties, "name type fieldType Label" (hubspot_owner_id and companies.industry are enumerations whose
# options, the portal's owners and HubSpot's long industry list, this fake does not reproduce: they take any value).
_COMMON = "createdate datetime date Create Date; hs_object_id number number Record ID"
_STANDARD = {
    "contacts": """email string text Email; firstname string text First Name; lastname string text Last Name
        jobtitle string text Job Title; company string text Company Name; country string text Country/Region
        hs_lead_status enumeration radio Lead Status; lifecyclestage enumeration radio Lifecycle Stage
        hubspot_owner_id enumeration select Contact owner; lastmodifieddate datetime date Last Modified Date
        annualrevenue number number Annual Revenue; numemployees enumeration select Number of Employees
        industry string text Industry; hs_analytics_source enumeration select Original Traffic Source
        associatedcompanyid number number Primary Associated Company ID
        hs_lifecyclestage_marketingqualifiedlead_date datetime date Became a Marketing Qualified Lead Date
        hs_lifecyclestage_salesqualifiedlead_date datetime date Became a Sales Qualified Lead Date
        hs_lifecyclestage_opportunity_date datetime date Became an Opportunity Date
        hs_lifecyclestage_customer_date datetime date Became a Customer Date""",
    "companies": """name string text Company name; domain string text Company Domain Name
        industry enumeration select Industry; numberofemployees number number Number of Employees
        annualrevenue number number Annual Revenue; country string text Country/Region
        hs_lastmodifieddate datetime date Last Modified Date""",
    "deals": """dealname string text Deal Name; dealstage enumeration radio Deal Stage
        pipeline enumeration select Pipeline; amount number number Amount; closedate datetime date Close Date
        hs_lastmodifieddate datetime date Last Modified Date; hs_is_closed_won bool booleancheckbox Is Closed Won
        hs_is_closed bool booleancheckbox Is Deal Closed?; closed_lost_reason string textarea Closed Lost Reason
        hubspot_owner_id enumeration select Deal owner""",
}
_ENUMS = {
    "lifecyclestage": "subscriber lead marketingqualifiedlead salesqualifiedlead opportunity customer evangelist other",
    "hs_lead_status": "NEW OPEN IN_PROGRESS OPEN_DEAL UNQUALIFIED ATTEMPTED_TO_CONTACT CONNECTED BAD_TIMING",
    "numemployees": "1-5 5-25 25-50 50-100 100-500 500-1000 1000+",
    "hs_analytics_source": "ORGANIC_SEARCH PAID_SEARCH EMAIL_MARKETING SOCIAL_MEDIA REFERRALS OTHER_CAMPAIGNS "
    "DIRECT_TRAFFIC OFFLINE PAID_SOCIAL AI_REFERRALS",
    "dealstage": "appointmentscheduled qualifiedtobuy presentationscheduled decisionmakerboughtin contractsent "
    "closedwon closedlost",
    "pipeline": "default",
    "hs_is_closed_won": "true false",
    "hs_is_closed": "true false",
}
_CALCULATED = {"hs_object_id", "lastmodifieddate", "hs_lastmodifieddate", "hs_is_closed_won", "hs_is_closed"}
_CALCULATED |= {"hs_analytics_source"} | {f"hs_lifecyclestage_{s}_date" for s in _ENUMS["lifecyclestage"].split()}


class _Refusal(Exception):
    """A request HubSpot refuses: its status and JSON body; `problem` when the client is to blame for it."""

    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR", *, problem: bool = True) -> None:
        super().__init__(message)
        self.status, self.problem = status, problem
        self.body: Json = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
        self.body["category"] = category


def _iso(moment: datetime) -> str:
    """HubSpot's timestamps: UTC, milliseconds, 'Z'."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _instant(text: str) -> float | None:
    """Epoch milliseconds of a date value: epoch-ms digits (as HubSpot documents) or ISO-8601 text."""
    if re.fullmatch(r"-?\d+", text.strip()):
        return float(text)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000


def _comparable(kind: str, text: str) -> Any:
    """A value as search compares it: numbers and instants as numbers, text without case; None if it is not one."""
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            return None
    return _instant(text) if kind in ("date", "datetime") else text.strip().lower() or None


def _text(value: Any, what: str = "a property value") -> str | None:
    """HubSpot keeps every value as a string; it takes JSON numbers and booleans too, but not objects or lists."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise _Refusal(400, f"Invalid input JSON: {what} must be a string, not {json.dumps(value)}")


def _fields(body: Any, allowed: frozenset[str], cls: str, required: tuple[str, ...] = ()) -> Json:
    """Checks a JSON object against one of HubSpot's request models: no unknown field, the required ones set."""
    if not isinstance(body, dict):
        raise _Refusal(400, f"Invalid input JSON: expected an object ({cls}), got {json.dumps(body)[:80]}")
    unknown = [key for key in body if key not in allowed]
    if unknown:
        message = f'Unrecognized field "{unknown[0]}" (class {cls}), not marked as ignorable'
        raise _Refusal(400, f"Invalid input JSON on line 1, column 1: {message}")
    missing = [key for key in required if body.get(key) is None]
    if missing:
        raise _Refusal(400, f"Invalid input JSON: Cannot build {cls}, some required attributes are not set {missing}")
    return body


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Refusal(400, f"Invalid input JSON: {what} must be a list of strings")
    return value


def _inputs(request: Json, limit: int) -> list[Any]:
    inputs = request["inputs"]
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= limit:
        size = len(inputs) if isinstance(inputs, list) else "not a list"
        raise _Refusal(400, f"A batch takes between 1 and {limit} inputs (got {size})")
    return inputs


def _invalid(name: str, message: str, error: str) -> Json:
    return {"isValid": False, "message": message, "error": error, "name": name, "localizedErrorMessage": message}


def _definition(object_type: str, row: str, stamp: str) -> Json:
    """A standard property's definition, in the shape GET /crm/v3/properties/{objectType} answers."""
    name, kind, field_type, label = row.split(maxsplit=3)
    values = _ENUMS.get(name, "").split()
    definition: Json = {"name": name, "label": label, "type": kind, "fieldType": field_type, "description": ""}
    definition |= {"groupName": _GROUP[object_type], "displayOrder": -1, "hidden": False, "archived": False}
    definition["options"] = [{"label": v, "value": v, "displayOrder": i, "hidden": False} for i, v in enumerate(values)]
    definition |= {"hasUniqueValue": object_type == "contacts" and name == "email", "hubspotDefined": True}
    definition |= {"calculated": name in _CALCULATED, "externalOptions": name == "hubspot_owner_id"}
    definition |= {"formField": name not in _CALCULATED, "createdAt": stamp, "updatedAt": stamp}
    definition["modificationMetadata"] = {"archivable": False, "readOnlyDefinition": True}
    definition["modificationMetadata"]["readOnlyValue"] = name in _CALCULATED
    return definition


class FakeHubSpot:
    """HubSpot's CRM API on 127.0.0.1, strict about what it is sent; see the module's docstring."""

    search_rate_headers = False  # HubSpot's search endpoints answer without the X-HubSpot-RateLimit-* headers

    def __init__(
        self,
        token: str = "pat-test-token",
        *,
        page_limit: int = 200,
        rate_limit: int | None = None,
        rate_window: float = 1.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.token, self.page_limit, self.rate_limit, self.rate_window = token, page_limit, rate_limit, rate_window
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.url = ""
        self.objects: dict[str, dict[str, Json]] = {object_type: {} for object_type in _SINGULAR}
        self.associations: dict[tuple[str, str], dict[str, set[str]]] = {pair: {} for pair in _ASSOCIATION_TYPES}
        self.properties: dict[str, dict[str, Json]] = {}
        for object_type, table in _STANDARD.items():
            rows = [row.strip() for row in re.split(r"[;\n]", f"{table}; {_COMMON}") if row.strip()]
            definitions = [_definition(object_type, row, _iso(self.clock())) for row in rows]
            self.properties[object_type] = {definition["name"]: definition for definition in definitions}
        self.requests: list[tuple[str, str, int]] = []
        self.problems: list[str] = []
        self._next_id = dict(_FIRST_ID)
        self._primary: dict[tuple[str, str], str] = {}  # (contacts|deals, id) -> the id of its primary company
        self._lock = threading.RLock()
        self._hits: deque[float] = deque()
        self._daily = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[re.Pattern[str], dict[str, Callable[[list[str], Any, Query], Answer]]]] = [
            (re.compile(r"/crm/v3/properties/([^/]+)"), {"GET": self._list_properties, "POST": self._create_property}),
            (re.compile(r"/crm/v3/properties/([^/]+)/([^/]+)"), {"GET": self._get_property}),
            (re.compile(r"/crm/v3/objects/([^/]+)/search"), {"POST": self._search}),
            (re.compile(r"/crm/v3/objects/([^/]+)/batch/upsert"), {"POST": self._upsert}),
            (re.compile(r"/crm/v3/objects/([^/]+)/batch/update"), {"POST": self._update}),
            (re.compile(r"/crm/v3/objects/([^/]+)/batch/read"), {"POST": self._read}),
            (re.compile(r"/crm/v4/associations/([^/]+)/([^/]+)/batch/read"), {"POST": self._read_associations}),
        ]

    # ----- the test's side: a salesperson working in HubSpot, and what was asked -----

    def add(
        self,
        object_type: str,
        properties: dict[str, Any],
        *,
        at: datetime | None = None,
        associations: dict[str, list[str]] | None = None,
    ) -> str:
        """Creates a record CRM-side; `associations` links it to existing records, e.g. {"companies": ["5001"]}."""
        with self._lock:
            object_type = self._known(object_type)
            links = [(self._known(other), str(i)) for other, ids in (associations or {}).items() for i in ids]
            for other, other_id in links:
                if (object_type, other) not in _ASSOCIATION_TYPES or other_id not in self.objects[other]:
                    raise ValueError(f"cannot associate a new {_SINGULAR[object_type]} with {other} {other_id}")
            record_id = self._write(object_type, None, self._salesperson(object_type, properties, None), at)
            for other, other_id in links:
                self._link(object_type, record_id, other, other_id)
            return record_id

    def update(self, object_type: str, record_id: str, properties: Json, *, at: datetime | None = None) -> None:
        """A salesperson's change: sets the properties and moves the modification date."""
        with self._lock:
            if record_id not in self.objects[self._known(object_type)]:
                raise ValueError(f"no {_SINGULAR[object_type]} {record_id}")
            self._write(object_type, record_id, self._salesperson(object_type, properties, record_id), at)

    def count(self, method: str, path_prefix: str) -> int:
        """How many requests (whatever their answer) had this method and a path starting with the prefix."""
        with self._lock:
            return sum(1 for m, path, _ in self.requests if m == method.upper() and path.startswith(path_prefix))

    def _known(self, object_type: str) -> str:
        if object_type not in _SINGULAR:
            raise ValueError(f"unknown object type {object_type!r}; expected one of {sorted(_SINGULAR)}")
        return object_type

    def _salesperson(self, object_type: str, properties: dict[str, Any], record_id: str | None) -> dict[str, Any]:
        try:
            return self._clean(object_type, properties, api=False, record_id=record_id)
        except _Refusal as refusal:
            raise ValueError(str(refusal)) from None

    def _link(self, object_type: str, record_id: str, other: str, other_id: str) -> None:
        """Associates two records both ways; a contact's or a deal's first company becomes its primary company."""
        self.associations[(object_type, other)].setdefault(record_id, set()).add(other_id)
        self.associations[(other, object_type)].setdefault(other_id, set()).add(record_id)
        if "companies" not in (object_type, other):
            return
        company, owner = (
            (other_id, (object_type, record_id)) if other == "companies" else (record_id, (other, other_id))
        )
        if owner not in self._primary:
            self._primary[owner] = company
            if owner[0] == "contacts":  # HubSpot mirrors a contact's primary company in associatedcompanyid
                self.objects["contacts"][owner[1]]["properties"].setdefault("associatedcompanyid", company)

    # ----- the store -----

    def _clean(self, object_type: str, props: Any, *, api: bool, record_id: str | None) -> dict[str, Any]:
        """Validates values as HubSpot does on write, and returns them as HubSpot keeps them (strings)."""
        if not isinstance(props, dict):
            raise _Refusal(400, "Invalid input JSON: properties must be an object of property names to values")
        definitions, clean, invalid = self.properties[object_type], dict[str, Any](), list[Json]()
        for name, value in props.items():
            definition, text = definitions.get(name), _text(value)
            options = [option["value"] for option in definition["options"]] if definition else []
            if definition is None:
                invalid.append(_invalid(name, f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST"))
            elif api and definition["modificationMetadata"]["readOnlyValue"]:
                message = f"{name} is a read only property; its value cannot be set."
                invalid.append(_invalid(name, message, "READ_ONLY_VALUE"))
            elif text and name == "email" and not _EMAIL.fullmatch(text.strip()):
                invalid.append(_invalid(name, f"Email address {text} is invalid", "INVALID_EMAIL"))
            elif text and options and set(text.split(";")) - set(options):  # checkboxes hold ;-separated values
                message = f"{text} was not one of the allowed options: {options}"
                invalid.append(_invalid(name, message, "INVALID_OPTION"))
            elif text and definition["type"] == "datetime" and (ms := _instant(text)) is not None:
                clean[name] = _iso(datetime.fromtimestamp(ms / 1000, UTC))
            else:
                clean[name] = text.strip().lower() if text and name == "email" else text  # HubSpot lowercases emails
        if invalid:
            raise _Refusal(400, "Property values were not valid: " + json.dumps(invalid, separators=(",", ":")))
        for name, text in clean.items():  # a unique-value property (contacts.email) cannot hold another record's value
            other = self._find(object_type, name, text) if text and definitions[name]["hasUniqueValue"] else None
            if other is not None and other != record_id:
                message = f"{_SINGULAR[object_type].title()} already exists. Existing ID: {other}"
                raise _Refusal(409, message, "CONFLICT", problem=False)
        return clean

    def _find(self, object_type: str, name: str, value: str) -> str | None:
        """The live record whose property holds this value (without case, as HubSpot matches emails)."""
        for record_id, record in self.objects[object_type].items():
            held = record["properties"].get(name)
            if held is not None and held.lower() == value.lower() and not record["archived"]:
                return record_id
        return None

    def _write(self, object_type: str, record_id: str | None, values: dict[str, Any], at: datetime | None) -> str:
        """Creates (record_id None) or changes a record; every write moves the modification date."""
        stamp = _iso(at or self.clock())
        if record_id is None:
            record_id = str(self._next_id[object_type])
            self._next_id[object_type] += 1
            self.objects[object_type][record_id] = {"id": record_id, "properties": {"createdate": stamp}}
        record = self.objects[object_type][record_id]
        props = record["properties"]
        stage_before = props.get("lifecyclestage")
        changed = record.setdefault("changed", {})  # when each property took its value: its history
        changed.update({name: stamp for name, value in values.items() if props.get(name) != value})
        props.update(values)
        stage = values.get("lifecyclestage")  # HubSpot stamps the date a contact enters a lifecycle stage
        entered = f"hs_lifecyclestage_{stage}_date"
        if stage and stage != stage_before and entered in self.properties[object_type] and entered not in values:
            props[entered] = props.get(entered) or stamp
        if object_type == "deals" and values.get("dealstage"):  # calculated properties follow the stage
            won, closed = values["dealstage"] == "closedwon", values["dealstage"] in ("closedwon", "closedlost")
            derived = {"hs_is_closed_won": str(won).lower(), "hs_is_closed": str(closed).lower()}
            props.update({name: flag for name, flag in derived.items() if name not in values})
        props["hs_object_id"], props[_MODIFIED[object_type]] = record_id, stamp
        record.update(createdAt=props["createdate"] or stamp, updatedAt=stamp, archived=False)
        return record_id

    def _view(self, object_type: str, record: Json, names: list[str] | None, history: list[str] | None = None) -> Json:
        """A record as HubSpot answers it: the asked properties (null when unset) and the three it always sends."""
        props, defined = record["properties"], self.properties[object_type]
        asked = _DEFAULT_PROPERTIES[object_type].split() if names is None else names
        shown = {name: props.get(name) for name in [*asked, "hs_object_id", "createdate", _MODIFIED[object_type]]}
        view: Json = {"id": record["id"], "properties": {k: v for k, v in shown.items() if k in defined}}
        view |= {"createdAt": record["createdAt"], "updatedAt": record["updatedAt"], "archived": record["archived"]}
        if history:
            past = {
                name: [
                    {
                        "value": props[name],
                        "timestamp": record.get("changed", {}).get(name, record["updatedAt"]),
                        "sourceType": "CRM_UI",
                    }
                ]
                if props.get(name) is not None
                else []
                for name in history
            }
            view["propertiesWithHistory"] = {name: entries for name, entries in past.items() if name in defined}
        return view

    # ----- HTTP -----

    def __enter__(self) -> FakeHubSpot:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 expects

            def do_GET(self) -> None:
                fake._serve(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        split = urlsplit(http.path)
        raw = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        with self._lock:
            status, body, headers = self._answer(http.command, split.path, parse_qs(split.query), raw, http.headers)
            self.requests.append((http.command, split.path, status))
        data = json.dumps(body).encode()
        http.send_response(status)
        headers |= {"Content-Type": "application/json;charset=utf-8", "Content-Length": str(len(data))}
        for name, value in headers.items():
            http.send_header(name, value)
        http.end_headers()
        http.wfile.write(data)

    def _answer(
        self, method: str, path: str, query: Query, raw: bytes, headers: Any
    ) -> tuple[int, Json, dict[str, str]]:
        try:
            authorization = headers.get("Authorization") or ""
            if not authorization.startswith("Bearer ") or not authorization[7:].strip():
                raise _Refusal(401, _AUTH, "INVALID_AUTHENTICATION")
            if authorization[7:] != self.token:  # a wrong token is a test's doing, not the client's fault
                raise _Refusal(401, _AUTH, "INVALID_AUTHENTICATION", problem=False)
            if not self._admit():
                return 429, self._rate_limited(), self._rate_headers(path)
            status, body = self._route(method, path, query, raw, headers.get("Content-Type") or "")
        except _Refusal as refusal:
            if refusal.problem:
                self.problems.append(f"{method} {path} -> {refusal.status}: {refusal.body['message']}")
            status, body = refusal.status, refusal.body
        except Exception as error:  # a bug of the fake's own: HubSpot's 500, and a problem so that no test passes
            self.problems.append(f"{method} {path} -> 500: the fake failed: {error!r}")
            status, body = 500, {"status": "error", "message": "internal error", "category": "INTERNAL_ERROR"}
        return status, body, self._rate_headers(path)

    def _route(self, method: str, path: str, query: Query, raw: bytes, content_type: str) -> Answer:
        for pattern, handlers in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method not in handlers:
                raise _Refusal(405, f"HTTP {method} is not allowed here; this endpoint takes {', '.join(handlers)}")
            body = None
            if method == "POST" and not content_type.startswith("application/json"):
                raise _Refusal(415, f"Content-Type {content_type or '(none)'} is not supported; send application/json")
            if method == "POST":
                try:
                    body = json.loads(raw or b"")
                except json.JSONDecodeError as error:
                    message = f"Invalid input JSON on line {error.lineno}, column {error.colno}: {error.msg}"
                    raise _Refusal(400, message) from None
            return handlers[method](list(match.groups()), body, query)
        raise _Refusal(404, f"No HubSpot endpoint answers {method} {path}", "OBJECT_NOT_FOUND")

    # ----- rate limits ("API usage guidelines": the 429 body and the X-HubSpot-RateLimit-* headers) -----

    def _window(self) -> float:
        return self.rate_window if self.rate_limit is not None else 10.0

    def _admit(self) -> bool:
        now = time.monotonic()
        while self._hits and self._hits[0] <= now - self._window():
            self._hits.popleft()
        if self.rate_limit is not None and len(self._hits) >= self.rate_limit:
            return False
        self._hits.append(now)
        self._daily += 1
        return True

    def _rate_limited(self) -> Json:
        policy = "TEN_SECONDLY_ROLLING" if self._window() >= 10 else "SECONDLY"
        body = {"status": "error", "message": f"You have reached your {policy.lower()} limit."}
        body |= {"errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()), "policyName": policy}
        return body | {"requestId": str(uuid.uuid4())}

    def _rate_headers(self, path: str) -> dict[str, str]:
        headers = {"X-HubSpot-Correlation-Id": str(uuid.uuid4())}
        if path.endswith("/search") and not self.search_rate_headers:
            return headers
        cap = self.rate_limit if self.rate_limit is not None else 190  # a private app's ten-second burst
        headers |= {"X-HubSpot-RateLimit-Daily": "1000000", "X-HubSpot-RateLimit-Max": str(cap)}
        headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(0, 1_000_000 - self._daily))
        headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(round(self._window() * 1000))
        headers["X-HubSpot-RateLimit-Remaining"] = str(max(0, cap - len(self._hits)))
        return headers

    # ----- endpoints: properties -----

    def _object_type(self, name: str) -> str:
        if name.lower() not in _TYPES:
            raise _Refusal(400, f"Unable to infer object type from: {name}")
        return _TYPES[name.lower()]

    def _list_properties(self, args: list[str], body: Any, query: Query) -> Answer:
        return 200, {"results": list(self.properties[self._object_type(args[0])].values())}

    def _get_property(self, args: list[str], body: Any, query: Query) -> Answer:
        definition = self.properties[self._object_type(args[0])].get(args[1])
        if definition is None:  # a well-formed look-up of a property that is not there: not the client's fault
            raise _Refusal(404, f"Unable to find property {args[1]}", "OBJECT_NOT_FOUND", problem=False)
        return 200, definition

    def _create_property(self, args: list[str], body: Any, query: Query) -> Answer:
        """POST /crm/v3/properties/{objectType} with a PropertyCreate."""
        object_type = self._object_type(args[0])
        spec = _fields(body, _CREATE_FIELDS, "PropertyCreate", _CREATE_REQUIRED)
        if not all(isinstance(spec[key], str) and spec[key].strip() for key in _CREATE_REQUIRED):
            raise _Refusal(400, f"Invalid input JSON: {', '.join(_CREATE_REQUIRED)} must be non-empty strings")
        name, kind, field_type, options = spec["name"], spec["type"], spec["fieldType"], spec.get("options") or []
        if not _NAME.fullmatch(name):
            raise _Refusal(400, f"Property name '{name}' is invalid: lower-case letters, digits and _, from a letter")
        if name in self.properties[object_type]:
            raise _Refusal(409, f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS", problem=False)
        if field_type not in _FIELD_TYPES.get(kind, ()):
            raise _Refusal(400, f"fieldType '{field_type}' does not go with type '{kind}' ({sorted(_FIELD_TYPES)})")
        for option in options if isinstance(options, list) else [None]:
            _fields(option, _OPTION_FIELDS, "OptionInput", ("label", "value"))
        if kind == "enumeration" and not options:
            raise _Refusal(400, f"Property '{name}' is an enumeration: it needs options")
        if not isinstance(spec.get("hasUniqueValue", False), bool):
            raise _Refusal(400, "Invalid input JSON: hasUniqueValue must be a boolean")
        definition = _definition(object_type, f"{name} {kind} {field_type} {spec['label']}", _iso(self.clock()))
        definition |= {"groupName": spec["groupName"], "description": spec.get("description") or ""}
        definition |= {"hasUniqueValue": spec.get("hasUniqueValue", False), "hubspotDefined": False}
        definition["options"] = [{"displayOrder": i, "hidden": False, **option} for i, option in enumerate(options)]
        definition["modificationMetadata"] = {"archivable": True, "readOnlyDefinition": False, "readOnlyValue": False}
        self.properties[object_type][name] = definition
        return 201, definition

    # ----- endpoints: search -----

    def _search(self, args: list[str], body: Any, query: Query) -> Answer:
        """POST /crm/v3/objects/{objectType}/search with a PublicObjectSearchRequest."""
        object_type = self._object_type(args[0])
        request = _fields(body, _SEARCH_FIELDS, "PublicObjectSearchRequest")
        groups = request.get("filterGroups") or []
        if not isinstance(groups, list) or len(groups) > _MAX_GROUPS:
            raise _Refusal(400, f"filterGroups must be a list of at most {_MAX_GROUPS} groups")
        tests: list[list[Callable[[Json], bool]]] = []
        for group in groups:
            filters = _fields(group, frozenset({"filters"}), "FilterGroup", ("filters",))["filters"]
            if not isinstance(filters, list) or not 1 <= len(filters) <= _MAX_GROUP_FILTERS:
                raise _Refusal(400, f"A filter group holds between 1 and {_MAX_GROUP_FILTERS} filters")
            tests.append([self._filter(object_type, spec) for spec in filters])
        if sum(map(len, tests)) > _MAX_FILTERS:
            raise _Refusal(400, f"A search takes at most {_MAX_FILTERS} filters in all")
        sorts = request.get("sorts") or []
        if not isinstance(sorts, list) or len(sorts) > 1:
            raise _Refusal(400, "sorts must be a list of at most one sort (only one sorting rule applies to a search)")
        names = None if request.get("properties") is None else _strings(request["properties"], "properties")
        limit, after = request.get("limit", 10), request.get("after") or "0"
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _SEARCH_MAX_LIMIT:
            raise _Refusal(400, f"limit must be an integer from 1 to {_SEARCH_MAX_LIMIT}, not {json.dumps(limit)}")
        if not re.fullmatch(r"\d+", str(after)):
            raise _Refusal(400, f"after must be a previous page's paging.next.after, not {json.dumps(after)}")
        if int(after) + limit > _SEARCH_WINDOW:
            raise _Refusal(400, f"Search results are limited to {_SEARCH_WINDOW}: cannot page to {int(after) + limit}")
        words = (_text(request.get("query"), "query") or "").lower()
        found = [
            record
            for record in sorted(self.objects[object_type].values(), key=lambda record: int(record["id"]))
            if not record["archived"]
            and (not tests or any(all(test(record) for test in group) for group in tests))
            and (not words or any(words in str(value).lower() for value in record["properties"].values() if value))
        ]
        if sorts:
            found = self._sorted(object_type, found, sorts[0])
        page = found[int(after) : int(after) + min(limit, self.page_limit)]
        answer: Json = {"total": len(found), "results": [self._view(object_type, record, names) for record in page]}
        if int(after) + len(page) < len(found):
            answer["paging"] = {"next": {"after": str(int(after) + len(page))}}
        return 200, answer

    def _sorted(self, object_type: str, records: list[Json], sort: Any) -> list[Json]:
        sort = {"propertyName": sort} if isinstance(sort, str) else sort  # HubSpot takes a name or a Sort object
        spec = _fields(sort, frozenset({"propertyName", "direction"}), "Sort", ("propertyName",))
        definition = self.properties[object_type].get(spec["propertyName"])
        direction = spec.get("direction", "ASCENDING")
        if definition is None or direction not in ("ASCENDING", "DESCENDING"):
            raise _Refusal(400, f"Cannot sort by {json.dumps(sort)}: unknown property or direction")
        kind, name = definition["type"], definition["name"]
        keyed = [(_comparable(kind, record["properties"].get(name) or ""), record) for record in records]
        present = [pair for pair in keyed if pair[0] is not None]
        present.sort(key=lambda pair: pair[0], reverse=direction == "DESCENDING")
        return [record for _, record in present] + [record for key, record in keyed if key is None]  # unset: last

    def _filter(self, object_type: str, spec: Any) -> Callable[[Json], bool]:
        """One search filter, checked against its property's type, as a test of a record."""
        spec = _fields(spec, _FILTER_FIELDS, "Filter", ("propertyName", "operator"))
        name, operator = spec["propertyName"], str(spec["operator"])
        definition = self.properties[object_type].get(name) if isinstance(name, str) else None
        if definition is None:
            raise _Refusal(400, f"Cannot filter on {json.dumps(name)}: no such {_SINGULAR[object_type]} property")
        if operator not in _OPERATORS:
            raise _Refusal(400, f"Unknown filter operator {json.dumps(operator)}; HubSpot's are {sorted(_OPERATORS)}")
        kind = definition["type"]

        def operand(value: Any, field: str) -> Any:
            text = _text(value, f"filter {field}")
            if text is None or (key := _comparable(kind, text)) is None:
                raise _Refusal(400, f"Filter {operator} on {name} needs a {kind} in '{field}', not {json.dumps(value)}")
            return key

        operands: list[Any] = []
        if operator in ("IN", "NOT_IN"):
            if not isinstance(spec.get("values"), list) or not spec["values"]:
                raise _Refusal(400, f"Filter {operator} on {name} needs a non-empty 'values' list")
            operands = [operand(value, "values") for value in spec["values"]]
        elif operator not in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            operands = [operand(spec.get("value"), "value")]
            if operator == "BETWEEN":
                operands.append(operand(spec.get("highValue"), "highValue"))

        def test(record: Json) -> bool:
            raw = record["properties"].get(name)
            value = None if raw in (None, "") else _comparable(kind, raw)
            if operator.endswith("HAS_PROPERTY"):
                return (value is not None) == (operator == "HAS_PROPERTY")
            if value is None:  # a record without a value matches only the negative operators
                return operator in _NEGATIVE
            if operator.endswith("CONTAINS_TOKEN"):  # a token, with * as a wildcard
                words = [str(value), *re.split(r"[\s,;]+", str(value))]
                hit = any(fnmatch.fnmatchcase(word, str(operands[0])) for word in words)
                return hit == (operator == "CONTAINS_TOKEN")
            first = operands[0]
            outcomes = {"EQ": value == first, "NEQ": value != first, "IN": value in operands}
            outcomes |= {"NOT_IN": value not in operands, "BETWEEN": first <= value <= operands[-1]}
            outcomes |= {"LT": value < first, "LTE": value <= first, "GT": value > first, "GTE": value >= first}
            return bool(outcomes[operator])

        return test

    # ----- endpoints: batch -----

    def _id_property(self, object_type: str, name: Any) -> str:
        definition = self.properties[object_type].get(name) if isinstance(name, str) else None
        if definition is None or not definition["hasUniqueValue"]:
            raise _Refusal(400, f"idProperty {json.dumps(name)} is not a unique-value property of {object_type}")
        return str(name)

    def _complete(self, results: list[Json], started: str) -> Json:
        return {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _iso(self.clock())}

    def _batch_answer(self, object_type: str, results: list[Json], missing: list[str], started: str) -> Answer:
        """200 with the results, or 207 multi-status with an OBJECT_NOT_FOUND error naming the missing ids."""
        answer = self._complete(results, started)
        if not missing:
            return 200, answer
        kind = _SINGULAR[object_type].upper()
        message = f"Could not get some {kind} objects, they may be deleted or not exist. Check that ids are valid."
        error: Json = {"status": "error", "category": "OBJECT_NOT_FOUND", "message": message}
        error |= {"context": {"ids": missing}, "links": {}, "errors": []}
        return 207, answer | {"numErrors": 1, "errors": [error]}

    def _write_inputs(self, object_type: str, body: Any, upsert: bool) -> list[tuple[Json, str, str | None]]:
        """Batch upsert/update inputs as (input, id, idProperty); refuses a batch that names an id twice."""
        request = _fields(body, frozenset({"inputs"}), "BatchInputSimplePublicObjectBatchInput", ("inputs",))
        checked: list[tuple[Json, str, str | None]] = []
        for item in _inputs(request, _BATCH_LIMIT):
            spec = _fields(item, _WRITE_FIELDS, "SimplePublicObjectBatchInput", ("id", "properties"))
            if upsert and spec.get("idProperty") is None:
                raise _Refusal(400, "An upsert input needs an idProperty, a unique-value property (contacts: email)")
            id_property = None if spec.get("idProperty") is None else self._id_property(object_type, spec["idProperty"])
            key = (_text(spec["id"], "id") or "").strip()
            if not key:
                raise _Refusal(400, "Invalid input JSON: an input's id must not be empty")
            checked.append((spec, key.lower() if id_property == "email" else key, id_property))
        keys = [key.lower() for _, key, _ in checked]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise _Refusal(400, f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique")
        return checked

    def _upsert(self, args: list[str], body: Any, query: Query) -> Answer:
        """POST /crm/v3/objects/{objectType}/batch/upsert: creates the records its idProperty does not find."""
        object_type, started, plan = self._object_type(args[0]), _iso(self.clock()), []
        for spec, key, id_property in self._write_inputs(object_type, body, upsert=True):
            target = self._find(object_type, str(id_property), key)
            values = self._clean(object_type, spec["properties"], api=True, record_id=target)
            plan.append((target, {str(id_property): key, **values}))  # the idProperty is written too
        results = []
        for target, values in plan:
            record = self.objects[object_type][self._write(object_type, target, values, None)]
            results.append(self._view(object_type, record, list(values)) | {"new": target is None})
        return self._batch_answer(object_type, results, [], started)

    def _update(self, args: list[str], body: Any, query: Query) -> Answer:
        """POST /crm/v3/objects/{objectType}/batch/update: ids it does not find come back as a 207's errors."""
        object_type, started, plan, missing = self._object_type(args[0]), _iso(self.clock()), [], []
        for spec, key, id_property in self._write_inputs(object_type, body, upsert=False):
            live = key in self.objects[object_type] and not self.objects[object_type][key]["archived"]
            target = self._find(object_type, id_property, key) if id_property else key if live else None
            if target is None:
                missing.append(key)
            else:
                plan.append((target, self._clean(object_type, spec["properties"], api=True, record_id=target)))
        results = []
        for target, values in plan:
            self._write(object_type, target, values, None)
            results.append(self._view(object_type, self.objects[object_type][target], list(values)))
        return self._batch_answer(object_type, results, missing, started)

    def _read(self, args: list[str], body: Any, query: Query) -> Answer:
        """POST /crm/v3/objects/{objectType}/batch/read (BatchReadInputSimplePublicObjectId)."""
        object_type, started = self._object_type(args[0]), _iso(self.clock())
        request = _fields(body, _READ_FIELDS, "BatchReadInputSimplePublicObjectId", ("inputs",))
        names = None if request.get("properties") is None else _strings(request["properties"], "properties")
        history = _strings(request.get("propertiesWithHistory") or [], "propertiesWithHistory")
        id_property = request.get("idProperty") and self._id_property(object_type, request["idProperty"])
        archived = (query.get("archived") or ["false"])[0] == "true"  # ?archived=true reads archived records only
        results, missing, shown = [], [], set()
        for item in _inputs(request, _BATCH_LIMIT):
            key = _text(_fields(item, frozenset({"id"}), "SimplePublicObjectId", ("id",))["id"], "id") or ""
            record_id = self._find(object_type, id_property, key) if id_property else key
            record = self.objects[object_type].get(record_id or "")
            if record is None or record["archived"] != archived:
                missing.append(key)
            elif record["id"] not in shown:
                shown.add(record["id"])
                results.append(self._view(object_type, record, names, history))
        return self._batch_answer(object_type, results, missing, started)

    def _read_associations(self, args: list[str], body: Any, query: Query) -> Answer:
        """POST /crm/v4/associations/{from}/{to}/batch/read: each input's associated ids, with their types."""
        source, target, started = self._object_type(args[0]), self._object_type(args[1]), _iso(self.clock())
        if (source, target) not in _ASSOCIATION_TYPES:
            raise _Refusal(400, f"This fake holds no associations from {source} to {target}")
        request = _fields(body, frozenset({"inputs"}), "BatchInputPublicFetchAssociationsBatchRequest", ("inputs",))
        results: list[Json] = []
        errors: list[Json] = []
        for item in _inputs(request, _ASSOCIATION_BATCH_LIMIT):
            spec = _fields(item, frozenset({"id", "after"}), "PublicFetchAssociationsBatchRequest", ("id",))
            key = _text(spec["id"], "id") or ""
            linked = sorted(self.associations[(source, target)].get(key, ()), key=int)
            to = [{"toObjectId": int(i), "associationTypes": self._types(source, key, target, i)} for i in linked]
            if to:
                results.append({"from": {"id": key}, "to": to})
                continue
            error: Json = {"status": "error", "category": "OBJECT_NOT_FOUND", "links": {}, "errors": []}
            error["subCategory"] = "crm.associations.NO_ASSOCIATIONS_FOUND"
            error["message"] = f"No {_SINGULAR[target]} is associated with {_SINGULAR[source]} {key}."
            error["context"] = {"fromObjectId": [key], "fromObjectType": [source], "toObjectType": [target]}
            errors.append(error)
        answer = self._complete(results, started)
        return (207, answer | {"numErrors": len(errors), "errors": errors}) if errors else (200, answer)

    def _types(self, source: str, source_id: str, target: str, target_id: str) -> list[Json]:
        """The associationTypes of one association: the unlabeled type, and the primary-company one where it is."""
        unlabeled, primary, label = _ASSOCIATION_TYPES[(source, target)]
        types: list[Json] = [{"category": "HUBSPOT_DEFINED", "typeId": unlabeled, "label": None}]
        owner, company = ((source, source_id), target_id) if target == "companies" else ((target, target_id), source_id)
        if primary is not None and self._primary.get(owner) == company:
            types.insert(0, {"category": "HUBSPOT_DEFINED", "typeId": primary, "label": label})
        return types
