"""Salesforce through `simple-salesforce`: the REST API's SOQL query and sObject Collections.

- **Pull**: `SELECT <fields> FROM <object> WHERE SystemModstamp >= <cursor> ORDER BY SystemModstamp`,
  paged by the query locator (`nextRecordsUrl`). Related fields (`Contact.Email` on an Opportunity)
  come nested and are flattened to their dotted names. Field and object names come from a
  mapping someone wrote, so each is checked to be an API name before it goes into the query.
- **Push**: `PATCH /composite/sobjects` with `allOrNone: false`, 200 records a request, so one
  record Salesforce refuses fails alone. Records are updated by id only: custom fields are made by
  an admin (Setup, or the Metadata API), never by Qualify, and leads Salesforce does not hold are
  not created.
- **Limits**: every answer carries `Sforce-Limit-Info: api-usage=used/limit`; once the org has
  used `USAGE_CEILING` of its daily requests the sync stops and says so, leaving the rest to the
  org's own integrations. `REQUEST_LIMIT_EXCEEDED` is retried later, never at once.

An access token (`QUALIFY_SALESFORCE_TOKEN`) and the instance URL (`QUALIFY_SALESFORCE_URL`) are
what the client needs; how to get them is in docs/integrations.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qualify.adapters.crm import Account, CrmError, FieldSpec, Page, PushItem, PushResult, behind, flatten

if TYPE_CHECKING:
    from qualify.settings import Settings

API_VERSION = "59.0"
BATCH = 200  # records one sObject Collections request takes
USAGE_CEILING = 0.9  # of the org's daily API requests, past which the sync waits for the next day
TIMEOUT = 30.0
MODIFIED = "SystemModstamp"
OVERLAP = 60.0  # seconds a saved cursor stays behind the newest change (a transaction commits after its stamp)
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}(\.[A-Za-z][A-Za-z0-9_]{0,79})?$")
_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")


def api_name(name: str, what: str = "field") -> str:
    """`name` when it is a Salesforce API name (`Email`, `Score__c`, `Account.Website`), else `CrmError`."""
    if not _API_NAME.match(name):
        raise CrmError(f"{name!r} is not a Salesforce {what} name (letters, digits and _, one . for a related field)")
    return name


class SalesforceClient:
    """The `CrmClient` of Salesforce (qualify.adapters.crm). `people` is the Lead object."""

    name = "salesforce"
    people = "Lead"
    id_field = "Id"
    push_limit = BATCH

    def __init__(self, instance_url: str, token: str, *, session: Any = None) -> None:
        from simple_salesforce.api import Salesforce

        self._sf = Salesforce(instance_url=instance_url, session_id=token, version=API_VERSION, session=session)
        self.instance_url = instance_url

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> SalesforceClient:
        if settings.salesforce_url is None or settings.salesforce_token is None:
            raise CrmError(
                "set QUALIFY_SALESFORCE_URL (your instance, https://...my.salesforce.com) and QUALIFY_SALESFORCE_TOKEN "
                "(an access token; docs/integrations.md)"
            )
        return cls(settings.salesforce_url, settings.salesforce_token.get_secret_value(), **options)

    # --- the port --------------------------------------------------------------------------------
    def check(self) -> Account:
        described = self._call(lambda: self._sf.restful(f"sobjects/{self.people}/describe/", timeout=TIMEOUT))
        notes = [f"{len(described.get('fields', []))} {self.people} fields"]
        return Account(f"Salesforce at {self.instance_url}", notes + self._usage())

    def pull(self, obj: str, fields: Sequence[str], since: str | None, dated: Sequence[str] = ()) -> Iterator[Page]:
        """`dated` is not read here: when a field changed is in Salesforce's field history
        (`LeadHistory`), which an org keeps only where an admin switched it on."""
        api_name(obj, "object")
        names = list(dict.fromkeys([api_name(f) for f in ("Id", *fields, MODIFIED)]))
        where = f" WHERE {MODIFIED} >= {_literal(since)}" if since else ""
        soql = f"SELECT {', '.join(names)} FROM {obj}{where} ORDER BY {MODIFIED} ASC"
        body = self._call(lambda: self._sf.query(soql, timeout=TIMEOUT))
        while True:
            records = [flatten(r) for r in body.get("records", [])]
            newest = records[-1].get(MODIFIED) if records else None
            yield Page(records, behind(newest, OVERLAP, floor=since) if newest else since)
            following = body.get("nextRecordsUrl")
            if body.get("done", True) or not following:
                return
            body = self._call(lambda url=following: self._sf.query_more(url, identifier_is_url=True, timeout=TIMEOUT))

    def ensure_fields(self, obj: str, fields: Sequence[FieldSpec], *, create: bool) -> list[str]:
        described = self._call(
            lambda: self._sf.restful(f"sobjects/{api_name(obj, 'object')}/describe/", timeout=TIMEOUT)
        )
        known = {f["name"]: f for f in described.get("fields", [])}
        missing = [spec.name for spec in fields if spec.name not in known]
        locked = [spec.name for spec in fields if spec.name in known and not known[spec.name].get("updateable", True)]
        if missing or locked:
            parts = []
            if missing:
                parts.append(f"{obj} has no fields {', '.join(missing)}")
            if locked:
                parts.append(f"{', '.join(locked)} cannot be written")
            raise CrmError(
                "; ".join(parts) + ": an admin creates them in Setup > Object Manager (Qualify does not create "
                "Salesforce fields; docs/integrations.md lists them)"
            )
        return []

    def push(self, obj: str, items: Sequence[PushItem]) -> list[PushResult]:
        results: list[PushResult] = []
        ready = [i for i in items if i.record_id and _ID.match(i.record_id)]
        results += [
            PushResult(i.lead_id, i.record_id, f"no Salesforce id to write to ({i.record_id or 'none'})")
            for i in items
            if not (i.record_id and _ID.match(i.record_id))
        ]
        for start in range(0, len(ready), BATCH):
            part = ready[start : start + BATCH]
            records = [{"attributes": {"type": obj}, "Id": i.record_id, **_values(i.values)} for i in part]
            try:
                answers = self._call(
                    lambda batch=records: self._sf.restful(
                        "composite/sobjects",
                        method="PATCH",
                        json={"allOrNone": False, "records": batch},
                        timeout=TIMEOUT,
                    )
                )
            except CrmError as error:
                if error.auth or error.retry_after is not None:
                    raise  # not these records' fault: the pass stops, and spends no attempt
                results += [PushResult(i.lead_id, i.record_id, error.message, error.retryable) for i in part]
                continue
            listed = answers.get("results", [])
            for item, answer in zip(part, listed, strict=False):
                if answer.get("success"):
                    results.append(PushResult(item.lead_id, item.record_id))
                else:
                    errors = answer.get("errors") or [{}]
                    text = "; ".join(f"{e.get('statusCode', 'error')}: {e.get('message', '')}" for e in errors)
                    busy = any(e.get("statusCode") in ("UNABLE_TO_LOCK_ROW", "REQUEST_LIMIT_EXCEEDED") for e in errors)
                    results.append(PushResult(item.lead_id, item.record_id, text, retryable=busy))
            results += [
                PushResult(i.lead_id, i.record_id, "Salesforce gave no answer for it", True)
                for i in part[len(listed) :]
            ]
        return results

    def close(self) -> None:
        self._sf.session.close()

    # --- calls -----------------------------------------------------------------------------------
    def _usage(self) -> list[str]:
        usage = self._sf.api_usage.get("api-usage")
        if usage is None:
            return []
        return [f"API requests today: {usage.used:,} of {usage.total:,}"]

    def _call(self, call: Any) -> dict[str, Any]:
        from requests import RequestException
        from simple_salesforce.exceptions import SalesforceError

        usage = self._sf.api_usage.get("api-usage")
        if usage is not None and usage.total and usage.used >= USAGE_CEILING * usage.total:
            raise CrmError(
                f"the org has used {usage.used:,} of its {usage.total:,} API requests today; the sync waits below "
                f"{USAGE_CEILING:.0%}",
                retryable=True,
                retry_after=3600,
            )
        try:
            body = call()
        except SalesforceError as error:
            raise _error(error) from None
        except RequestException as error:
            raise CrmError(f"Salesforce could not be reached: {error}", retryable=True) from None
        if isinstance(body, list):
            return {"results": body}
        return dict(body or {})


def _literal(value: str) -> str:
    """A datetime literal of SOQL (unquoted, UTC) from a cursor as Salesforce wrote it."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _values(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        api_name(name)
        out[name] = value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
    return out


def _error(error: Any) -> CrmError:
    status = getattr(error, "status", None)
    content = getattr(error, "content", None)
    first = content[0] if isinstance(content, list) and content and isinstance(content[0], dict) else {}
    code = str(first.get("errorCode", ""))
    message = f"{code}: {first.get('message', '')}" if code else str(content)[:200]
    if status == 401:
        return CrmError(f"Salesforce refused the token (401, {message}); get a new one", auth=True)
    if code == "REQUEST_LIMIT_EXCEEDED":
        return CrmError(f"the org's API limit is spent ({message})", retryable=True, retry_after=3600)
    if status == 403:
        return CrmError(f"Salesforce refused the request (403, {message})", auth=True)
    return CrmError(f"Salesforce answered {status} ({message})", retryable=isinstance(status, int) and status >= 500)
