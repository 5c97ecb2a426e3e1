"""A strict fake of Salesforce's REST API (v59.0 and any vNN.N) on loopback HTTPS, for testing the CRM sync.

simple-salesforce always builds https:// URLs, so the fake serves TLS with a certificate for 127.0.0.1 signed by a
throwaway trustme CA; ``fake.session()`` (or any requests.Session with ``verify=fake.ca_path``) trusts it:

    with FakeSalesforce(page_size=2) as fake:
        sf = Salesforce(instance_url=fake.url, session_id=fake.token, session=fake.session())
        ...
        assert fake.problems == []

Every request is checked against Salesforce's documentation (REST API Developer Guide: Query, QueryAll, Query More
Results, sObject Collections create/update, sObject Describe, Limits, Status Codes and Error Responses, Query Options
and Limit Info headers; SOQL and SOSL Reference: SELECT, WHERE, logical operators, date formats). A request Salesforce
would refuse gets Salesforce's answer (status and [{"message", "errorCode"}]) and a line in ``problems``; so does a
record a collection request fails for the client's own fault (unknown or read-only field, malformed Id, bad value),
but not one failing for the CRM's state (deleted record, rolled back by allOrNone). 401 for a wrong token and
REQUEST_LIMIT_EXCEEDED are answered without a problem: tests cause them on purpose.

The org holds Lead, Contact, Account, Opportunity and User with their standard fields (``fields``: describe entries;
``add_field``: an admin's custom field). ``records`` hold Salesforce's JSON values: 18-character Ids, datetimes as
"2026-12-06T21:00:00.000+0000", dates as "2026-12-06". New records belong to ``api_user_id``, the API's own user.
SOQL: SELECT fields and relationship paths (Contact.Account.Website) FROM one sObject, WHERE with = != <> < <= > >=
[NOT] IN, AND / OR / NOT and parentheses, ORDER BY ... [ASC|DESC] [NULLS FIRST|LAST], LIMIT. Valid SOQL beyond that
(LIKE, aggregates, date literals such as TODAY, OFFSET) is refused as MALFORMED_QUERY too, so the problem shows.
A page holds min(page_size, the Sforce-Query-Options batchSize) records. Stricter than Salesforce on purpose: Lead
Status is a restricted picklist, and a JSON value must have its field's JSON type (no "5" for an int).
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import socket
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import requests
import trustme

# ----------------------------------------------------------------------------------------------------- the schema
_COMMON = [("Id", "id"), ("OwnerId", "reference"), ("CreatedDate", "datetime"), ("LastModifiedDate", "datetime")]
_COMMON += [("SystemModstamp", "datetime"), ("IsDeleted", "boolean")]
_SOBJECTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "Lead": ("00Q", [("Email", "email"), ("FirstName", "string"), ("LastName", "string"), ("Title", "string"),
                     ("Company", "string"), ("Country", "string"), ("LeadSource", "picklist"), ("Status", "picklist"),
                     ("IsConverted", "boolean"), ("ConvertedDate", "date"), ("ConvertedContactId", "reference"),
                     ("ConvertedOpportunityId", "reference"), ("Industry", "picklist"), ("NumberOfEmployees", "int"),
                     ("AnnualRevenue", "currency"), ("Website", "url")]),
    "Contact": ("003", [("Email", "email"), ("FirstName", "string"), ("LastName", "string"), ("Title", "string"),
                        ("AccountId", "reference"), ("MailingCountry", "string"), ("LeadSource", "picklist")]),
    "Account": ("001", [("Name", "string"), ("Website", "url"), ("Industry", "picklist"), ("NumberOfEmployees", "int"),
                        ("AnnualRevenue", "currency"), ("BillingCountry", "string")]),
    "Opportunity": ("006", [("Name", "string"), ("StageName", "picklist"), ("IsClosed", "boolean"),
                            ("IsWon", "boolean"), ("Amount", "currency"), ("CloseDate", "date"),
                            ("AccountId", "reference"), ("ContactId", "reference"), ("LeadSource", "picklist")]),
    "User": ("005", [("Email", "email"), ("Name", "string"), ("IsActive", "boolean")]),
}  # fmt: skip
_REFERENCE_TO = {"OwnerId": ["User"], "AccountId": ["Account"], "ContactId": ["Contact"],
                 "ConvertedContactId": ["Contact"], "ConvertedOpportunityId": ["Opportunity"]}  # fmt: skip
# Lead.OwnerId may point at a User or a queue (Group): a polymorphic key, queried through the "Name" pseudo-object.
_POLYMORPHIC = {("Lead", "OwnerId"): ["Group", "User"]}
# Set by the platform (or by lead conversion), never by an update: describe says updateable=false.
_READ_ONLY = {"Id", "CreatedDate", "LastModifiedDate", "SystemModstamp", "IsDeleted", "IsConverted", "IsClosed",
              "IsWon", "ConvertedDate", "ConvertedContactId", "ConvertedOpportunityId"}  # fmt: skip
_REQUIRED = {"Lead": {"LastName", "Company"}, "Contact": {"LastName"}, "Account": {"Name"},
             "Opportunity": {"Name", "StageName", "CloseDate"}, "User": {"Name", "Email"}}  # fmt: skip
_LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
_PICKLISTS = {
    "Status": _LEAD_STATUSES,
    "LeadSource": ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"],
    "Industry": ["Agriculture", "Banking", "Consulting", "Education", "Finance", "Healthcare", "Technology", "Other"],
    "StageName": ["Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
                  "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost"],
}  # fmt: skip
_RESTRICTED = {("Lead", "Status")}  # the fake refuses a lead status outside LeadStatus's values
_LENGTHS = {"Email": 80, "FirstName": 40, "LastName": 80, "Title": 128, "Country": 80, "MailingCountry": 80}
_STRINGS = {"string", "email", "picklist", "url", "textarea", "phone"}
_NUMBERS = {"int", "double", "currency", "percent"}


def _label(name: str) -> str:
    return re.sub(r" Id$", " ID", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name.removesuffix("__c").replace("_", " ")))


def _entry(sobject: str, name: str, type_: str, *, custom: bool = False, label: str | None = None) -> dict[str, Any]:
    """A describe field entry, as in the DescribeSObjectResult's fields list."""
    refs = _POLYMORPHIC.get((sobject, name), _REFERENCE_TO.get(name, [])) if type_ == "reference" else []
    writable = name not in _READ_ONLY and not (sobject == "User" and name == "Name")
    return {
        "name": name, "label": label or (f"{sobject} ID" if name == "Id" else _label(name)), "type": type_,
        "length": (_LENGTHS.get(name, 255) if type_ in _STRINGS else 18 if type_ in ("id", "reference") else 0),
        "custom": custom, "updateable": writable, "createable": writable,
        "nillable": name not in _REQUIRED.get(sobject, set()) and type_ not in ("id", "boolean")
        and name not in ("CreatedDate", "LastModifiedDate", "SystemModstamp", "OwnerId", "Status"),
        "defaultedOnCreate": type_ == "boolean" or name in ("Id", "OwnerId", "Status", "CreatedDate"),
        "filterable": True, "sortable": True, "calculated": False,
        "referenceTo": refs, "relationshipName": name.removesuffix("Id") if refs else None,
        "polymorphicForeignKey": len(refs) > 1, "namePointing": len(refs) > 1,
        "picklistValues": [{"value": v, "label": v, "active": True, "defaultValue": v == _LEAD_STATUSES[0]}
                           for v in _PICKLISTS.get(name, [])] if type_ == "picklist" else [],
        "restrictedPicklist": (sobject, name) in _RESTRICTED,
    }  # fmt: skip


# ---------------------------------------------------- Ids (15 characters plus the 3-character case-safe suffix)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _id18(value: object) -> str | None:
    """The 18-character form of a 15- or 18-character Id; None when it is malformed or its suffix is wrong."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?", value):
        return None
    suffix = "".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[sum(1 << i for i, ch in enumerate(value[k : k + 5]) if ch.isupper())]
                     for k in (0, 5, 10))  # fmt: skip
    return value[:15] + suffix if len(value) == 15 or value[15:].upper() == suffix else None


# ----------------------------------------------------- values: Salesforce's JSON forms of dates and datetimes
_DT = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)")


def _parse_dt(text: str) -> datetime | None:
    if not (m := _DT.fullmatch(text)):
        return None
    zone = m[8] if m[8] != "Z" else "+00:00"
    try:
        when = datetime.fromisoformat(f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}{zone[:3]}:{zone[-2:]}")
    except ValueError:
        return None
    return when.replace(microsecond=int((m[7] or "0")[:6].ljust(6, "0"))).astimezone(UTC)


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d\d-\d\d", text) else None
    except ValueError:
        return None


def _fmt_dt(when: datetime) -> str:
    when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def _comparable(entry: Mapping[str, Any], value: Any) -> Any:
    """A stored value as SOQL compares it: datetimes and dates parsed, text case-insensitively."""
    if value is None:
        return None
    if entry["type"] == "datetime":
        return _parse_dt(value)
    if entry["type"] == "date":
        return _parse_date(value)
    return value.casefold() if entry["type"] in _STRINGS else value


class _ApiError(Exception):
    """An error answer: the HTTP status and Salesforce's [{"message", "errorCode"}]; a problem unless told not."""

    def __init__(self, status: int, code: str, message: str, *, problem: bool = True) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.problem = status, code, message, problem


def _bad_query(message: str) -> _ApiError:
    return _ApiError(400, "MALFORMED_QUERY", message)


# ---------------------------------------------------------- SOQL (SOQL and SOSL Reference: SELECT, WHERE, ORDER BY)
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<dt>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))"
    r"|(?P<date>\d{4}-\d\d-\d\d)(?![\dT:])|(?P<num>-?\d+(?:\.\d+)?)(?![\w.])|(?P<op><=|>=|!=|<>|=|<|>)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*))"
)
_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "ORDER", "BY", "ASC", "DESC", "NULLS", "FIRST",
             "LAST", "LIMIT", "OFFSET", "TRUE", "FALSE", "NULL", "LIKE", "GROUP", "HAVING"}  # fmt: skip
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\", "_": "\\_", "%": "\\%"}  # fmt: skip


class _Path:
    """A resolved field path: the reference hops (field, relationship name, target, attributes type), then a field."""

    def __init__(self, hops: list[tuple[str, str, str, str]], entry: dict[str, Any]) -> None:
        self.hops, self.entry, self.name = hops, entry, entry["name"]


class _Soql:
    """Parses `SELECT f, r.f FROM T [WHERE ...] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n]`."""

    def __init__(self, text: str, fake: FakeSalesforce) -> None:
        self.fake, pos = fake, 0
        self.tokens: list[tuple[str, str, bool]] = []
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip():
                    raise _bad_query(f"unexpected token: '{text[pos:].split()[0]}'")
                break
            kind = m.lastgroup or ""
            self.tokens.append((kind, m[kind], kind == "word" and m[kind].upper() in _KEYWORDS))
            pos = m.end()
        self.tokens.append(("end", "<EOF>", False))
        self.i = 0
        self.keyword("SELECT")
        raw = [self.word()]
        while self.accept("punct", ","):
            raw.append(self.word())
        self.keyword("FROM")
        name = self.word()
        if (found := fake._sobject(name)) is None:
            raise _ApiError(400, "INVALID_TYPE", f"sObject type '{name}' is not supported. If you are attempting to "
                            "use a custom object, be sure to append the '__c' after the entity name.")  # fmt: skip
        self.sobject: str = found
        self.fields = [self.path(p) for p in raw]
        if len({p.lower() for p in raw}) != len(raw):
            raise _bad_query(f"duplicate field selected: {raw[-1]}")
        self.where = self.expression() if self.accept("word", "WHERE") else None
        self.order: list[tuple[_Path, bool, bool]] = []  # (path, descending, nulls last)
        if self.accept("word", "ORDER"):
            self.keyword("BY")
            while True:
                path = self.path(self.word())
                desc = self.accept("word", "DESC") or (self.accept("word", "ASC") and False)
                nulls_last = desc  # Salesforce's default: nulls first ascending, last descending
                if self.accept("word", "NULLS") and not (nulls_last := self.accept("word", "LAST")):
                    self.keyword("FIRST")
                self.order.append((path, desc, nulls_last))
                if not self.accept("punct", ","):
                    break
        self.limit: int | None = None
        if self.accept("word", "LIMIT"):
            kind, value, _ = self.next()
            if kind != "num" or not value.isdigit():
                raise _bad_query(f"unexpected token: '{value}'")
            self.limit = int(value)
        if self.tokens[self.i][0] != "end":
            raise _bad_query(f"unexpected token: '{self.tokens[self.i][1]}'")

    def next(self) -> tuple[str, str, bool]:
        token = self.tokens[self.i]
        self.i += 1 if token[0] != "end" else 0
        return token

    def accept(self, kind: str, value: str) -> bool:
        token = self.tokens[self.i]
        if token[0] == kind and token[1].upper() == value:
            self.i += 1
            return True
        return False

    def keyword(self, value: str) -> bool:
        if not self.accept("word", value):
            raise _bad_query(f"unexpected token: '{self.tokens[self.i][1]}'")
        return True

    def word(self) -> str:
        kind, value, reserved = self.next()
        if kind != "word" or reserved:
            raise _bad_query(f"unexpected token: '{value}'")
        return value

    def path(self, raw: str) -> _Path:
        """Resolves `Field` or `Relationship.Field` (any depth) against describe, as Salesforce does."""
        *rels, last = raw.split(".")
        sobject, entity, hops = self.sobject, self.sobject, []
        for rel in rels:
            ref = next((e for e in self.fake.fields[sobject].values() if (e["relationshipName"] or "").lower() ==
                        rel.lower()), None)  # fmt: skip
            if ref is None or entity == "Name":
                raise _ApiError(400, "INVALID_FIELD", f"Didn't understand relationship '{rel}' in field path. If you "
                                "are attempting to use a custom relationship, be sure to append the '__r' after the "
                                "custom relationship name. Please reference your WSDL or the describe call for the "
                                "appropriate names.")  # fmt: skip
            sobject = "User" if ref["polymorphicForeignKey"] else ref["referenceTo"][0]
            entity = "Name" if ref["polymorphicForeignKey"] else sobject  # the attributes type of the nested record
            hops.append((ref["name"], ref["relationshipName"], sobject, entity))
        entry = self.fake._field(sobject, last)
        if entry is None or (entity == "Name" and entry["name"] not in ("Id", "Name", "Email", "IsActive")):
            raise _ApiError(400, "INVALID_FIELD", f"No such column '{last}' on entity '{entity}'. If you are "
                            "attempting to use a custom field, be sure to append the '__c' after the custom field "
                            "name. Please reference your WSDL or the describe call for the appropriate names.")  # fmt: skip
        return _Path(hops, entry)

    # WHERE: Salesforce wants parentheses wherever AND and OR are mixed (SOQL Reference: Logical Operators).
    def expression(self) -> tuple[Any, ...]:
        terms, joiner = [self.term()], ""
        while self.tokens[self.i][0] == "word" and self.tokens[self.i][1].upper() in ("AND", "OR"):
            word = self.next()[1].upper()
            if joiner and word != joiner:
                raise _bad_query(f"unexpected token: '{word}' (mixing AND and OR needs parentheses)")
            joiner = word
            terms.append(self.term())
        return (joiner.lower(), terms) if joiner else terms[0]

    def term(self) -> tuple[Any, ...]:
        if self.accept("punct", "("):
            inner = self.expression()
            if not self.accept("punct", ")"):
                raise _bad_query(f"expecting a right parentheses, found '{self.tokens[self.i][1]}'")
            return inner
        if self.accept("word", "NOT"):
            return ("not", self.term())
        path = self.path(self.word())
        negate = self.accept("word", "NOT")
        if negate or self.accept("word", "IN"):
            if negate:
                self.keyword("IN")
            if not self.accept("punct", "("):
                raise _bad_query(f"unexpected token: '{self.tokens[self.i][1]}'")
            values = [self.literal(path)]
            while self.accept("punct", ","):
                values.append(self.literal(path))
            if not self.accept("punct", ")"):
                raise _bad_query(f"unexpected token: '{self.tokens[self.i][1]}'")
            return ("in", path, negate, values)
        kind, op, _ = self.next()
        if kind != "op":
            raise _bad_query(f"unexpected token: '{op}'")
        return ("cmp", path, "!=" if op == "<>" else op, self.literal(path))

    def literal(self, path: _Path) -> Any:
        """A literal, checked against the field's type as Salesforce checks it (INVALID_FIELD when it doesn't fit)."""
        kind, raw, _ = self.next()
        type_, name = path.entry["type"], path.name
        if kind == "word" and raw.upper() == "NULL":
            return None
        if kind not in ("str", "dt", "date", "num") and not (kind == "word" and raw.upper() in ("TRUE", "FALSE")):
            raise _bad_query(f"unexpected token: '{raw}' (the fake knows no date literals such as TODAY)")
        if kind == "str":
            text = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\0"), raw[1:-1])
            if "\0" in text:
                raise _bad_query(f"Invalid string literal '{raw}'. Illegal character sequence in string literal.")
            if type_ in ("id", "reference"):
                if (ident := _id18(text)) is None:
                    raise _ApiError(400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {text}")
                return ident
            if type_ in _STRINGS:
                return text.casefold()
        elif kind == "dt" and type_ == "datetime":
            if (when := _parse_dt(raw)) is None:
                raise _bad_query(f"line 1: Invalid datetime: {raw}")
            return when
        elif kind == "date" and type_ == "date":
            if (day := _parse_date(raw)) is None:
                raise _bad_query(f"line 1: Invalid date: {raw}")
            return day
        elif kind == "num" and type_ in _NUMBERS:
            return float(raw) if "." in raw else int(raw)
        elif kind == "word" and raw.upper() in ("TRUE", "FALSE") and type_ == "boolean":
            return raw.upper() == "TRUE"
        wanted = {"datetime": "dateTime", "id": "id", "reference": "id"}.get(type_, type_)
        quoting = "be enclosed in quotes" if type_ in _STRINGS | {"id", "reference"} else "not be enclosed in quotes"
        raise _ApiError(400, "INVALID_FIELD", f"value of filter criterion for field '{name}' must be of type {wanted}"
                        f" and should {quoting}")  # fmt: skip


# ----------------------------------------------------------------------------------------------------- the fake
class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeSalesforce, context: ssl.SSLContext) -> None:
        self.fake, self.context = fake, context
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        assert isinstance(request, socket)
        try:  # the TLS handshake runs in the request's own thread, not in the accept loop
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: one TLS handshake per client connection, not per request
    timeout = 30
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, payload, usage = self.server.fake._dispatch(self.command, self.path, headers, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Sforce-Limit-Info", usage)  # REST API: Limit Info Header
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer


_CLIENT_FAULTS = {"MISSING_ARGUMENT", "MALFORMED_ID", "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_EMAIL_ADDRESS",
                  "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "STRING_TOO_LONG", "REQUIRED_FIELD_MISSING",
                  "FIELD_INTEGRITY_EXCEPTION"}  # fmt: skip
_ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "fields": [],
                "message": "Record rolled back because not all records were valid and the request was using AllOrNone header"}  # fmt: skip


class FakeSalesforce:
    """Salesforce's REST API over loopback HTTPS, with an in-memory org: see the module's docstring."""

    def __init__(self, token: str = "00Dfake!token", *, page_size: int = 2000, api_limit: int = 15000,
                 clock: Callable[[], datetime] | None = None, ca: trustme.CA | None = None) -> None:  # fmt: skip
        self.token, self.page_size, self.api_limit = token, page_size, api_limit
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.ca = ca or trustme.CA()
        self.url, self.ca_path = "", ""
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in _SOBJECTS}
        self.fields: dict[str, dict[str, dict[str, Any]]] = {
            name: {f: _entry(name, f, t) for f, t in (_COMMON if name != "User" else _COMMON[:1]) + extra}
            for name, (_, extra) in _SOBJECTS.items()
        }
        self.requests: list[tuple[str, str, int]] = []
        self.problems: list[str] = []
        self.api_usage = 0
        self._lock = threading.RLock()
        self._serial = 0
        self._cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._server: _Server | None = None
        self._dir = ""
        self.api_user_id = self.add("User", Name="Integration User", Email="integration@example.com", IsActive=True)

    # ------------------------------------------------------------------------------------------ lifecycle
    def session(self) -> requests.Session:
        """A requests session that trusts the fake's CA (pass it to Salesforce(session=...)).

        trust_env is off: REQUESTS_CA_BUNDLE would otherwise override ``verify``, and a proxy would see loopback.
        """
        session = requests.Session()
        session.verify, session.trust_env = self.ca_path, False
        return session

    def __enter__(self) -> FakeSalesforce:
        self._dir = tempfile.mkdtemp(prefix="fake-salesforce-")
        self.ca_path = f"{self._dir}/ca.pem"
        self.ca.cert_pem.write_to_path(self.ca_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._server = _Server(self, context)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-salesforce", daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self._dir, ignore_errors=True)

    # ------------------------------------------------------------------- the CRM side (what people do in the UI)
    def add(self, sobject: str, **fields: Any) -> str:
        """Creates a record as a salesperson would; returns its 18-character Id (with the object's key prefix)."""
        with self._lock:
            record = self._new_record(sobject)
            self._touch(sobject, record, created=True)
            record.update({name: self._python_value(sobject, name, value) for name, value in fields.items()})
            self._derive(sobject, record, fields)
            self.records[sobject][record["Id"]] = record
            return str(record["Id"])

    def update(self, sobject: str, record_id: str, **fields: Any) -> None:
        """A salesperson's change (IsDeleted=True puts the record in the recycle bin); moves SystemModstamp."""
        with self._lock:
            record = self.records[sobject][_id18(record_id) or record_id]
            self._touch(sobject, record)
            record.update({name: self._python_value(sobject, name, value) for name, value in fields.items()})
            self._derive(sobject, record, fields)

    def add_field(self, sobject: str, name: str, type: str = "string", label: str | None = None) -> None:
        """A custom field an admin created in Setup: its name ends __c; existing records read null."""
        if not name.endswith("__c"):
            raise ValueError(f"a custom field's API name ends __c: {name}")
        with self._lock:
            self.fields[sobject][name] = _entry(sobject, name, type, custom=True, label=label)
            for record in self.records[sobject].values():
                record.setdefault(name, None)

    def count(self, method: str, path_prefix: str) -> int:
        """Requests answered with this method whose path starts so (full, or relative to /services/data/vNN.N/)."""
        with self._lock:
            return sum(1 for m, path, _ in self.requests if m == method.upper() and (path.startswith(path_prefix)
                       or re.sub(r"^/services/data/v\d+\.\d/", "", path).startswith(path_prefix)))  # fmt: skip

    def _new_record(self, sobject: str) -> dict[str, Any]:
        self._serial += 1
        number, digits = 3_000_000 + self._serial * 7_919, ""
        for _ in range(9):
            number, digit = divmod(number, 62)
            digits = _B62[digit] + digits
        record: dict[str, Any] = dict.fromkeys(self.fields[sobject])
        record.update({n: n == "IsActive" for n, e in self.fields[sobject].items() if e["type"] == "boolean"})
        record["Id"] = _id18(_SOBJECTS[sobject][0] + "8a0" + digits)
        if "OwnerId" in record:  # owned by the API's user, as Salesforce sets it, unless told otherwise
            record["OwnerId"] = getattr(self, "api_user_id", None)
        if sobject == "Lead":
            record["Status"] = _LEAD_STATUSES[0]
        return record

    def _touch(self, sobject: str, record: dict[str, Any], *, created: bool = False) -> None:
        now = _fmt_dt(self.clock())
        stamps = ["LastModifiedDate", "SystemModstamp"] + (["CreatedDate"] if created else [])
        record.update({name: now for name in stamps if name in self.fields[sobject]})

    def _python_value(self, sobject: str, name: str, value: Any) -> Any:
        entry = self.fields[sobject].get(name)
        if entry is None or name == "Id":
            raise ValueError(f"{sobject} has no field {name} the CRM side may set")
        if value is None:
            return None
        if entry["type"] == "datetime":
            when = value if isinstance(value, datetime) else _parse_dt(value)
            if when is None:
                raise ValueError(f"{sobject}.{name}: not a datetime: {value!r}")
            return _fmt_dt(when)
        if entry["type"] == "date" and isinstance(value, date):
            return value.isoformat()
        if entry["type"] in ("id", "reference"):
            return _id18(value) or value
        return value

    @staticmethod
    def _derive(sobject: str, record: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Opportunity.IsClosed and IsWon follow the stage (its OpportunityStage), unless set explicitly."""
        if sobject == "Opportunity" and "StageName" in given:
            if "IsClosed" not in given:
                record["IsClosed"] = record["StageName"] in ("Closed Won", "Closed Lost")
            if "IsWon" not in given:
                record["IsWon"] = record["StageName"] == "Closed Won"

    def _sobject(self, name: str) -> str | None:
        return next((s for s in self.fields if s.lower() == name.lower()), None)

    def _field(self, sobject: str, name: str) -> dict[str, Any] | None:
        return next((e for n, e in self.fields[sobject].items() if n.lower() == name.lower()), None)

    # ------------------------------------------------------------------------------------------------ HTTP
    def _dispatch(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, Any, str]:
        split = urlsplit(target)
        with self._lock:
            try:
                status, payload = 200, self._route(method, split.path, split.query, headers, body)
            except _ApiError as error:
                status, payload = error.status, [{"message": error.message, "errorCode": error.code}]
                if error.problem:
                    self.problems.append(
                        f"{method} {unquote_plus(target)}: {error.status} {error.code}: {error.message}"
                    )
            self.requests.append((method, split.path, status))
            return status, payload, f"api-usage={self.api_usage}/{self.api_limit}"

    def _route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Any:
        # REST API: Status Codes and Error Responses — authentication first, then the org's daily request limit.
        auth = headers.get("authorization")
        if auth not in (f"Bearer {self.token}", f"OAuth {self.token}"):
            raise _ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid", problem=auth is None)
        self.api_usage += 1
        if self.api_usage > self.api_limit:
            raise _ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", problem=False)
        m = re.fullmatch(r"/services/data/v(\d+\.\d)/(.+)", path)
        version, rest = (m[1], m[2]) if m else ("", "")
        params = parse_qs(query, keep_blank_values=True)
        routes: list[tuple[str, tuple[str, ...], float]] = [
            (r"(query|queryAll)/?", ("GET",), 29.0 if rest.startswith("queryAll") else 0),
            (r"(?:query|queryAll)/([^/]+)", ("GET",), 0),
            (r"composite/sobjects/?", ("PATCH", "POST"), 42.0),
            (r"sobjects/([^/]+)/describe/?", ("GET",), 0),
            (r"limits/?", ("GET",), 29.0),
        ]
        for number, (pattern, methods, since) in enumerate(routes):
            if not (match := re.fullmatch(pattern, rest)) or float(version or 0) < since:
                continue
            if method not in methods:
                raise _ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are "
                                f"{','.join((*methods, 'HEAD') if methods == ('GET',) else methods)}")  # fmt: skip
            if number == 0:
                return self._query(version, match[1] == "queryAll", params, headers)
            if number == 1:
                return self._query_more(version, match[1], headers)
            if number == 2:
                return self._collection(method, path, self._json(headers, body))
            if number == 3:
                return self._describe(version, match[1])
            return {"DailyApiRequests": {"Max": self.api_limit, "Remaining": self.api_limit - self.api_usage}}
        raise _ApiError(404, "NOT_FOUND", "The requested resource does not exist")

    @staticmethod
    def _json(headers: Mapping[str, str], body: bytes) -> Any:
        kind = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise _ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type header specified in HTTP request is not "
                            f"supported: {kind or '(none)'}")  # fmt: skip
        try:
            return json.loads(body)
        except ValueError as error:
            raise _ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character in the request body: {error}") from None

    # --------------------------------------------------------------------- Query, QueryAll, Query More Results
    def _query(self, version: str, all_rows: bool, params: dict[str, list[str]], headers: Mapping[str, str]) -> Any:
        if list(params) != ["q"] or len(params["q"]) != 1 or not params["q"][0].strip():
            raise _bad_query("the query resource takes exactly one parameter, q, holding a SOQL query")
        soql = _Soql(params["q"][0], self)
        rows = [r for r in self.records[soql.sobject].values() if all_rows or not r.get("IsDeleted")]
        rows = [r for r in rows if soql.where is None or self._matches(soql.sobject, r, soql.where)]
        for path, desc, nulls_last in reversed(soql.order):  # stable sorts, last key first
            present = [r for r in rows if self._value(soql.sobject, r, path) is not None]
            absent = [r for r in rows if self._value(soql.sobject, r, path) is None]
            present.sort(key=lambda r, p=path: self._value(soql.sobject, r, p), reverse=desc)  # type: ignore[misc]
            rows = present + absent if nulls_last else absent + present
        rows = rows[: soql.limit] if soql.limit is not None else rows
        projected = [self._project(version, soql.sobject, r, soql.fields) for r in rows]
        return self._page(version, projected, 0, self._batch_size(headers), "")

    def _query_more(self, version: str, locator: str, headers: Mapping[str, str]) -> Any:
        m = re.fullmatch(r"([0-9A-Za-z]{15,18})-(\d+)", locator)
        cursor = self._cursors.get(m[1]) if m else None
        if m is None or cursor is None or not 0 < int(m[2]) < len(cursor[0]):
            raise _ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(version, cursor[0], int(m[2]), self._batch_size(headers, cursor[1]), m[1])

    def _page(self, version: str, rows: list[dict[str, Any]], offset: int, batch: int, locator: str) -> Any:
        end = offset + batch
        page: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
        if end < len(rows):
            if not locator:
                self._serial += 1
                locator = _id18(f"01g8a0{self._serial:09d}") or ""
                self._cursors[locator] = (rows, batch)
            page["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"  # query/, even for queryAll
        page["records"] = rows[offset:end]
        return page

    def _batch_size(self, headers: Mapping[str, str], default: int = 2000) -> int:
        """Sforce-Query-Options: batchSize=N, 200 to 2,000 (REST API: Query Options Header); capped by page_size."""
        option = headers.get("sforce-query-options")
        if option is not None:
            m = re.fullmatch(r"\s*batchSize\s*=\s*(\d+)\s*", option)
            if m is None or not 200 <= int(m[1]) <= 2000:
                self.problems.append(f"Sforce-Query-Options {option!r}: batchSize must be 200 to 2,000")
            default = min(max(int(m[1]), 200), 2000) if m else default
        return max(1, min(default, self.page_size))

    def _target(self, record: Mapping[str, Any], hop: tuple[str, str, str, str]) -> dict[str, Any] | None:
        found = self.records[hop[2]].get(record.get(hop[0]) or "")
        return found if found is not None and not found.get("IsDeleted") else None

    def _value(self, sobject: str, record: Mapping[str, Any], path: _Path) -> Any:
        current: Mapping[str, Any] | None = record
        for hop in path.hops:
            current = self._target(current, hop) if current is not None else None
        return _comparable(path.entry, current.get(path.name)) if current is not None else None

    def _matches(self, sobject: str, record: Mapping[str, Any], node: tuple[Any, ...]) -> bool:
        if node[0] in ("and", "or"):
            results = (self._matches(sobject, record, child) for child in node[1])
            return all(results) if node[0] == "and" else any(results)
        if node[0] == "not":
            return not self._matches(sobject, record, node[1])
        value = self._value(sobject, record, node[1])
        if node[0] == "in":
            return bool((value in node[3]) != node[2])
        op, literal = node[2], node[3]
        if op in ("=", "!="):
            return bool((value == literal) == (op == "="))
        if value is None or literal is None:
            return False
        return bool({"<": value < literal, "<=": value <= literal, ">": value > literal, ">=": value >= literal}[op])

    def _project(self, version: str, sobject: str, record: Mapping[str, Any], paths: list[_Path]) -> dict[str, Any]:
        """A query row: the asked fields, relationship fields nested under the relationship name (or null)."""
        row: dict[str, Any] = {"attributes": {"type": sobject, "url": f"/services/data/v{version}/sobjects/"
                                              f"{sobject}/{record['Id']}"}}  # fmt: skip
        for path in paths:
            node: dict[str, Any] | None = row
            current: Mapping[str, Any] | None = record
            for hop in path.hops:
                assert node is not None and current is not None
                current = self._target(current, hop)
                if current is None:
                    node.setdefault(hop[1], None)
                    node = None
                    break
                if node.get(hop[1]) is None:
                    node[hop[1]] = {"attributes": {"type": hop[3], "url": f"/services/data/v{version}/sobjects/"
                                                   f"{hop[2]}/{current['Id']}"}}  # fmt: skip
                node = node[hop[1]]
            if node is not None and current is not None:
                node[path.name] = current.get(path.name)
        return row

    # ----------------------------------------------------------------------------------------------- describe
    def _describe(self, version: str, name: str) -> Any:
        sobject = self._sobject(name)
        if sobject is None:
            raise _ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        base = f"/services/data/v{version}/sobjects/{sobject}"
        return {
            "name": sobject, "label": sobject, "labelPlural": f"{sobject}s".replace("ys", "ies"), "custom": False,
            "keyPrefix": _SOBJECTS[sobject][0], "createable": sobject != "User", "updateable": True,
            "deletable": sobject != "User", "queryable": True, "retrieveable": True, "searchable": True,
            "fields": [dict(entry) for entry in self.fields[sobject].values()],
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
        }  # fmt: skip

    # -------------------------------------------------------- sObject Collections: create (POST), update (PATCH)
    def _collection(self, method: str, path: str, body: Any) -> Any:
        if not isinstance(body, dict) or set(body) - {"allOrNone", "records"}:
            extra = sorted(set(body) - {"allOrNone", "records"}) if isinstance(body, dict) else ["(not an object)"]
            raise _ApiError(400, "JSON_PARSER_ERROR", f"Unrecognized field \"{extra[0]}\": the body is "
                            '{"allOrNone": boolean, "records": [sObject, ...]}')  # fmt: skip
        all_or_none, records = body.get("allOrNone", False), body.get("records")
        if not isinstance(all_or_none, bool) or not isinstance(records, list):
            raise _ApiError(400, "JSON_PARSER_ERROR", "allOrNone must be a boolean and records a list of sObjects")
        if len(records) > 200:
            raise _ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                            "into this call")  # fmt: skip
        if not records:
            self.problems.append(f"{method} {path}: an empty records list (a wasted API request)")
        parsed = [self._deserialize(record) for record in records]  # whole-request errors first, as Salesforce does
        outcomes = [self._save_errors(method, *item) for item in parsed]
        failed = any(errors for _, errors in outcomes)
        results: list[dict[str, Any]] = []
        for number, ((sobject, values, _, sent_id), (record_id, errors)) in enumerate(
            zip(parsed, outcomes, strict=True)
        ):
            for error in errors:
                if error["statusCode"] in _CLIENT_FAULTS:
                    self.problems.append(f"{method} {path}: record {number} ({sobject} {record_id or sent_id or 'without Id'}) "
                                         f"{error['statusCode']}: {error['message']}")  # fmt: skip
            if errors or (all_or_none and failed):
                result = {"success": False, "errors": errors or [dict(_ROLLED_BACK)]}
                results.append({"id": record_id, **result} if record_id and method == "PATCH" else result)
                continue
            if method == "POST":
                record = self._new_record(sobject)
                self.records[sobject][record["Id"]] = record
            else:
                record = self.records[sobject][record_id or ""]
            self._touch(sobject, record, created=method == "POST")
            record.update(values)
            self._derive(sobject, record, values)
            results.append({"id": record["Id"], "success": True, "errors": []})
        return results

    def _deserialize(self, record: Any) -> tuple[str, dict[str, Any], bool, Any]:
        """(sObject, {field: value}, whether an Id was sent, the Id): what fails here fails the whole request."""
        attributes = record.get("attributes") if isinstance(record, dict) else None
        kind = attributes.get("type") if isinstance(attributes, dict) else None
        if not isinstance(record, dict) or not isinstance(kind, str) or not kind:
            raise _ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        sobject = self._sobject(kind)
        if sobject is None:
            raise _ApiError(400, "INVALID_TYPE", f"sObject type '{kind}' is not supported.")
        values: dict[str, Any] = {}
        has_id, record_id = False, None
        for key, value in record.items():
            if key == "attributes":
                continue
            entry = self._field(sobject, key)
            if entry is None:
                raise _ApiError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject}")
            if entry["name"] == "Id":
                has_id, record_id = True, value
                continue
            type_ = entry["type"]
            fits = value is None or {
                "boolean": isinstance(value, bool),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "date": isinstance(value, str) and _parse_date(value) is not None,
                "datetime": isinstance(value, str) and _parse_dt(value) is not None,
            }.get(type_, isinstance(value, int | float) and not isinstance(value, bool) if type_ in _NUMBERS
                  else isinstance(value, str))  # fmt: skip
            if not fits:
                raise _ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {type_} from "
                                f"{json.dumps(value)} for field {sobject}.{entry['name']}")  # fmt: skip
            when = _parse_dt(value) if type_ == "datetime" and value is not None else None
            values[entry["name"]] = _fmt_dt(when) if when is not None else value
        return sobject, values, has_id, record_id

    def _save_errors(self, method: str, sobject: str, values: dict[str, Any], has_id: bool, record_id: Any
                     ) -> tuple[str | None, list[dict[str, Any]]]:  # fmt: skip
        """(the record's 18-character Id, its errors): the SaveResult errors Salesforce answers for one record."""

        def error(code: str, message: str, *fields: str) -> list[dict[str, Any]]:
            return [{"statusCode": code, "message": message, "fields": list(fields)}]

        prefix = _SOBJECTS[sobject][0]
        ident = _id18(record_id)
        if method == "POST":
            if sobject == "User":
                raise _ApiError(400, "INVALID_TYPE", "the fake does not create User records")
            if has_id:
                return None, error("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", "Id")
            missing = [n for n in sorted(_REQUIRED[sobject]) if values.get(n) is None]
            if missing:
                return None, error("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                                   *missing)  # fmt: skip
        else:
            if not has_id:
                return None, error("MISSING_ARGUMENT", "Id not specified in an update call")
            if ident is None or not ident.startswith(prefix):
                return None, error("MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {record_id}", "Id")
            if ident not in self.records[sobject]:
                return ident, error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
            if self.records[sobject][ident].get("IsDeleted"):
                return ident, error("ENTITY_IS_DELETED", "entity is deleted")
        action = "createable" if method == "POST" else "updateable"
        locked = [n for n in values if not self.fields[sobject][n][action]]
        if locked:
            return ident, error("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: "
                                f"{', '.join(locked)}. Please check the security settings of this field and verify "
                                "that it is read/write for your profile or permission set.", *locked)  # fmt: skip
        for name, value in values.items():
            entry = self.fields[sobject][name]
            label, type_ = entry["label"], entry["type"]
            if value is None:
                if not entry["nillable"]:
                    return ident, error("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", name)
                continue
            if type_ in _STRINGS and len(value) > entry["length"]:
                return ident, error("STRING_TOO_LONG", f"{label}: data value too large: {value} (max length="
                                    f"{entry['length']})", name)  # fmt: skip
            if type_ == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
                return ident, error("INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {value}", name)
            if entry["restrictedPicklist"] and value not in _PICKLISTS.get(name, []):
                return ident, error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", f"{label}: bad value for restricted "
                                    f"picklist field: {value}", name)  # fmt: skip
            if type_ == "reference":
                target = _id18(value)
                if target is None:
                    return ident, error("MALFORMED_ID", f"{label}: id value of incorrect type: {value}", name)
                kinds = [s for s in entry["referenceTo"] if s in _SOBJECTS and target.startswith(_SOBJECTS[s][0])]
                if not kinds:
                    return ident, error("FIELD_INTEGRITY_EXCEPTION", f"{label}: id value of incorrect type: {value}",
                                        name)  # fmt: skip
                if target not in self.records[kinds[0]] or self.records[kinds[0]][target].get("IsDeleted"):
                    return ident, error("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", name)
                values[name] = target
        return ident, []
