"""HubSpot through its official client (`hubspot-api-client`): the CRM v3 objects, search,
batch and properties APIs and the v4 associations API.

- **Pull**: `POST /crm/v3/objects/{type}/search`, filtered on the object's modification date
  (`lastmodifieddate` for contacts, `hs_lastmodifieddate` otherwise) from the cursor on, sorted by it,
  a page of 100 at a time. Search stops at 10,000 results: past that the search starts again
  from the newest modification seen. A field `contacts.email` or `companies.domain` asked of a deal
  (or of a contact) is read from its first associated record (v4 associations batch read, then a
  batch read of those records).
- **Push**: `batch/update` by record id (100 a request); with `create`, `batch/upsert` by email,
  which creates the contacts HubSpot lacks. A request HubSpot refuses as invalid is sent again
  record by record, so one bad record fails alone.
- **Rate limits**: a 429 is waited out (the interval HubSpot names, or Retry-After) and tried
  again, five times at most; when an answer says no request is left in the window
  (`X-HubSpot-RateLimit-Remaining: 0`), the next waits for the window to pass.

Every value is sent as text, as HubSpot's API takes it; times as ISO-8601 UTC.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qualify.adapters.crm import Account, CrmError, FieldSpec, Page, PushItem, PushResult, behind

if TYPE_CHECKING:
    from qualify.settings import Settings

SEARCH_PAGE = 100
SEARCH_CAP = 10_000  # HubSpot's search returns no result past this offset
BATCH = 100  # records a batch read, update or upsert takes
ASSOCIATION_BATCH = 1000
RATE_LIMIT_TRIES = 5
OVERLAP = 120.0  # seconds a saved cursor stays behind the newest change pulled (search indexing lags)
TIMEOUT = 30.0
MODIFIED = {"contacts": "lastmodifieddate"}  # the other objects: hs_lastmodifieddate
GROUPS = {"contacts": "contactinformation", "companies": "companyinformation", "deals": "dealinformation"}
_TYPES = {"number": ("number", "number"), "text": ("string", "text"), "datetime": ("datetime", "date")}


def modified_property(obj: str) -> str:
    return MODIFIED.get(obj, "hs_lastmodifieddate")


class HubSpotClient:
    """The `CrmClient` of HubSpot (qualify.adapters.crm); `sleep` is a seam for tests."""

    name = "hubspot"
    people = "contacts"
    id_field = "id"
    push_limit = BATCH

    def __init__(self, token: str, host: str | None = None, *, sleep: Callable[[float], None] = time.sleep) -> None:
        from hubspot import HubSpot  # type: ignore[import-untyped]  # a large package: imported when used

        options: dict[str, Any] = {"access_token": token}
        if host:
            options["host"] = host.rstrip("/")
        self._hubspot = HubSpot(**options)
        self._apis: dict[str, Any] = {}
        self._sleep = sleep
        self._wait_until = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> HubSpotClient:
        if settings.hubspot_token is None:
            raise CrmError("set QUALIFY_HUBSPOT_TOKEN to a private app's access token (docs/integrations.md)")
        return cls(settings.hubspot_token.get_secret_value(), settings.hubspot_url, **options)

    # --- the port --------------------------------------------------------------------------------
    def check(self) -> Account:
        properties = self._call("properties", "core_api", "get_all", "contacts")
        count = len(properties.get("results", []))
        return Account(
            f"HubSpot at {self._hubspot.config.get('host') or 'api.hubapi.com'}", [f"{count} contact properties"]
        )

    def pull(self, obj: str, fields: Sequence[str], since: str | None, dated: Sequence[str] = ()) -> Iterator[Page]:
        """Keyset paging: each page is a new search from the newest modification seen (records
        modified while the pull runs move to its end instead of shifting an offset past others);
        `after` pages only within one instant. The cursor given is `OVERLAP` behind, so a record
        HubSpot's search index had not caught up with is pulled by the next sync."""
        modified = modified_property(obj)
        own = sorted({f for f in fields if "." not in f} | {modified, "hs_object_id"})
        related = _related(fields)
        low, offset, seen = since, 0, set[str]()
        while True:
            if offset + SEARCH_PAGE > SEARCH_CAP:
                raise CrmError(
                    f"more than {SEARCH_CAP:,} {obj} changed in one millisecond: HubSpot's search cannot page past them"
                )
            body = self._call("objects", "search_api", "do_search", obj, _search(modified, low, own, offset))
            found = [r for r in body.get("results", []) if str(r["id"]) not in seen]
            records = [{"id": str(r["id"]), **(r.get("properties") or {})} for r in found]
            if records and related:
                self._add_related(obj, records, related)
            if records and dated:
                self._add_dates(obj, records, dated)
            newest = records[-1].get(modified) if records else None
            yield Page(records, behind(newest, OVERLAP, floor=since) if newest else since)
            if not (body.get("paging") or {}).get("next", {}).get("after"):
                return
            if newest is None or newest == low:  # a whole page in one instant: page within it
                offset += len(body.get("results", []))
            else:
                low, offset = newest, 0
            seen = {str(r["id"]) for r in records if r.get(modified) == low} | (seen if offset else set())

    def ensure_fields(self, obj: str, fields: Sequence[FieldSpec], *, create: bool) -> list[str]:
        body = self._call("properties", "core_api", "get_all", obj)
        known = {p["name"] for p in body.get("results", [])}
        missing = [spec for spec in fields if spec.name not in known]
        if missing and not create:
            names = ", ".join(spec.name for spec in missing)
            raise CrmError(
                f"HubSpot {obj} lack the properties {names}: create them, or allow Qualify to (push.create_fields: true)"
            )
        for spec in missing:
            self._create_property(obj, spec)
        return [spec.name for spec in missing]

    def push(self, obj: str, items: Sequence[PushItem]) -> list[PushResult]:
        results: list[PushResult] = []
        by_id = [item for item in items if item.record_id]
        by_email = [item for item in items if not item.record_id and item.email]
        results += [
            PushResult(i.lead_id, error="no HubSpot id and no email to find the record by")
            for i in items
            if not (i.record_id or i.email)
        ]
        for part in _chunks(by_id, BATCH):
            results += self._isolating(obj, part, self._update)
        for part in _chunks(by_email, BATCH):
            results += self._isolating(obj, part, self._upsert)
        return results

    def close(self) -> None:
        for api in self._apis.values():
            api.api_client.close()
        self._apis.clear()

    # --- pushing ---------------------------------------------------------------------------------
    def _isolating(
        self, obj: str, items: Sequence[PushItem], send: Callable[[str, Sequence[PushItem]], list[PushResult]]
    ) -> list[PushResult]:
        """Send a batch; a batch HubSpot refuses as invalid again record by record, so that one bad
        record fails alone (HubSpot validates a batch whole)."""
        try:
            return send(obj, items)
        except CrmError as error:
            if error.auth or error.retry_after is not None:
                raise  # not these records' fault: the pass stops, and spends no attempt
            if error.retryable:
                return [PushResult(i.lead_id, i.record_id, error.message, retryable=True) for i in items]
            if len(items) == 1:
                return [PushResult(items[0].lead_id, items[0].record_id, error.message)]
            return [result for item in items for result in self._isolating(obj, [item], send)]

    def _update(self, obj: str, items: Sequence[PushItem]) -> list[PushResult]:
        from hubspot.crm.objects import BatchInputSimplePublicObjectBatchInput, SimplePublicObjectBatchInput  # type: ignore[import-untyped]

        batch = BatchInputSimplePublicObjectBatchInput(
            inputs=[SimplePublicObjectBatchInput(id=i.record_id, properties=_texts(i.values)) for i in items]
        )
        body = self._call("objects", "batch_api", "update", obj, batch)
        written = {str(r["id"]) for r in body.get("results", [])}
        missing = {str(i) for e in body.get("errors", []) for i in (e.get("context") or {}).get("ids", [])}
        return [
            PushResult(i.lead_id, i.record_id)
            if i.record_id in written
            else PushResult(
                i.lead_id,
                i.record_id,
                "HubSpot has no such record (deleted or merged)"
                if i.record_id in missing
                else "HubSpot did not write it",
            )
            for i in items
        ]

    def _upsert(self, obj: str, items: Sequence[PushItem]) -> list[PushResult]:
        from hubspot.crm.objects import BatchInputSimplePublicObjectBatchInputUpsert, SimplePublicObjectBatchInputUpsert

        batch = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                SimplePublicObjectBatchInputUpsert(
                    id_property="email", id=i.email, properties={**_texts(i.values), "email": i.email or ""}
                )
                for i in items
            ]
        )
        body = self._call("objects", "batch_api", "upsert", obj, batch)
        ids = {str((r.get("properties") or {}).get("email", "")).lower(): str(r["id"]) for r in body.get("results", [])}
        return [
            PushResult(i.lead_id, ids[key])
            if (key := (i.email or "").lower()) in ids
            else PushResult(i.lead_id, None, "HubSpot did not write it")
            for i in items
        ]

    def _create_property(self, obj: str, spec: FieldSpec) -> None:
        from hubspot.crm.properties import PropertyCreate  # type: ignore[import-untyped]

        kind, field_type = _TYPES[spec.type]
        create = PropertyCreate(
            name=spec.name,
            label=spec.label,
            type=kind,
            field_type=field_type,
            group_name=GROUPS.get(obj, "contactinformation"),
            description="Written by Qualify's CRM sync.",
        )
        try:
            self._call("properties", "core_api", "create", obj, create)
        except CrmError as error:
            if "already exists" not in error.message:  # created meanwhile by someone else: what was wanted
                raise

    # --- reading related records -----------------------------------------------------------------
    def _add_related(self, obj: str, records: list[dict[str, Any]], related: dict[str, list[str]]) -> None:
        from hubspot.crm.associations.v4 import (  # type: ignore[import-untyped]
            BatchInputPublicFetchAssociationsBatchRequest,
            PublicFetchAssociationsBatchRequest,
        )
        from hubspot.crm.objects import BatchReadInputSimplePublicObjectId, SimplePublicObjectId

        ids = [str(r["id"]) for r in records]
        for other, properties in related.items():
            first: dict[str, str] = {}
            for part in _chunks(ids, ASSOCIATION_BATCH):
                request = BatchInputPublicFetchAssociationsBatchRequest(
                    inputs=[PublicFetchAssociationsBatchRequest(id=i) for i in part]
                )
                body = self._call("associations", "batch_api", "get_page", obj, other, request)
                for result in body.get("results", []):
                    targets = sorted(str(t["toObjectId"]) for t in result.get("to", []))
                    if targets:
                        first[str(result["from"]["id"])] = targets[0]
            values: dict[str, dict[str, Any]] = {}
            for part in _chunks(sorted(set(first.values())), BATCH):
                read = BatchReadInputSimplePublicObjectId(
                    inputs=[SimplePublicObjectId(id=i) for i in part], properties=properties, properties_with_history=[]
                )
                body = self._call("objects", "batch_api", "read", other, read)
                values.update({str(r["id"]): r.get("properties", {}) for r in body.get("results", [])})
            for record in records:
                found = values.get(first.get(str(record["id"]), ""), {})
                record.update({f"{other}.{p}": found.get(p) for p in properties})

    def _add_dates(self, obj: str, records: list[dict[str, Any]], dated: Sequence[str]) -> None:
        """`<field>@at`: when each record's field took its current value, from its history."""
        from hubspot.crm.objects import BatchReadInputSimplePublicObjectId, SimplePublicObjectId

        for part in _chunks(records, BATCH):
            read = BatchReadInputSimplePublicObjectId(
                inputs=[SimplePublicObjectId(id=r["id"]) for r in part],
                properties=[],
                properties_with_history=list(dated),
            )
            body = self._call("objects", "batch_api", "read", obj, read)
            history = {str(r["id"]): r.get("propertiesWithHistory") or {} for r in body.get("results", [])}
            for record in part:
                for name in dated:
                    entries = history.get(record["id"], {}).get(name) or []
                    newest = max(entries, key=lambda e: str(e.get("timestamp", "")), default=None)
                    if newest is not None and newest.get("value") == record.get(name):
                        record[f"{name}@at"] = newest.get("timestamp")

    # --- calls -----------------------------------------------------------------------------------
    def _api(self, which: str, api: str) -> Any:
        """One API object of the client, made once: each access of the client's discovery makes a
        new one, with its own connection pool."""
        key = f"{which}.{api}"
        if key not in self._apis:
            crm = self._hubspot.crm
            group = {"objects": crm.objects, "properties": crm.properties, "associations": crm.associations.v4}
            self._apis[key] = getattr(group[which], api)
        return self._apis[key]

    def _call(self, which: str, api: str, method: str, *args: Any) -> dict[str, Any]:
        """One request through the client (`which` API's `api.method(*args)`), 429s waited out;
        its JSON body, or `CrmError`."""
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            pause = self._wait_until - time.monotonic()
            if pause > 0:
                self._sleep(pause)
            try:
                response = getattr(self._api(which, api), method)(*args, **_RAW)
            except Exception as error:  # the client's ApiException (one class per API package) or urllib3's
                status = getattr(error, "status", None)
                headers = dict(getattr(error, "headers", None) or {})
                body = _json(getattr(error, "body", None))
                if status == 429 and attempt < RATE_LIMIT_TRIES:
                    self._sleep(_retry_after(headers))
                    continue
                raise _error(status, body, headers, error) from None
            headers = dict(response.headers)
            if headers.get("X-HubSpot-RateLimit-Remaining") == "0":
                self._wait_until = time.monotonic() + min(_interval(headers), 60.0)
            return _json(response.data)
        raise AssertionError("unreachable")


_RAW: dict[str, Any] = {"_preload_content": False, "_request_timeout": TIMEOUT}


def _search(modified: str, since: str | None, properties: list[str], after: int) -> Any:
    """A search of the records modified at or after `since`, oldest change first."""
    from hubspot.crm.objects import Filter, FilterGroup, PublicObjectSearchRequest

    groups = (
        [FilterGroup(filters=[Filter(property_name=modified, operator="GTE", value=_millis(since))])] if since else []
    )
    return PublicObjectSearchRequest(
        filter_groups=groups,
        sorts=[{"propertyName": modified, "direction": "ASCENDING"}],
        properties=properties,
        limit=SEARCH_PAGE,
        after=str(after) if after else None,
    )


def _related(fields: Sequence[str]) -> dict[str, list[str]]:
    """`companies.domain` -> {"companies": ["domain"]}: properties of associated records."""
    related: dict[str, set[str]] = {}
    for name in fields:
        other, dot, prop = name.partition(".")
        if dot:
            related.setdefault(other, set()).add(prop)
    return {other: sorted(props) for other, props in related.items()}


def _millis(value: str | None) -> str | None:
    """An ISO time as HubSpot's search filters take it: epoch milliseconds, as text."""
    if value is None:
        return None
    if value.isdigit():
        return value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(int(moment.timestamp() * 1000))


def _texts(values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        if value is None:
            out[name] = ""
        elif isinstance(value, datetime):
            out[name] = value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        elif isinstance(value, float):
            out[name] = repr(value)
        else:
            out[name] = str(value)
    return out


def _json(data: Any) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except (ValueError, TypeError):
        return {"message": str(data)[:300]}
    return value if isinstance(value, dict) else {"results": value}


def _interval(headers: dict[str, str]) -> float:
    try:
        return max(0.0, float(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "1000")) / 1000)
    except ValueError:
        return 1.0


def _retry_after(headers: dict[str, str]) -> float:
    try:
        return min(60.0, max(0.1, float(headers["Retry-After"])))
    except (KeyError, ValueError):
        return min(60.0, max(0.1, _interval(headers)))


def _error(status: int | None, body: dict[str, Any], headers: dict[str, str], error: Exception) -> CrmError:
    message = str(body.get("message") or error.__class__.__name__)
    if status is None:
        return CrmError(f"HubSpot could not be reached: {error}", retryable=True)
    if status == 401:
        return CrmError(f"HubSpot refused the token (401): {message}", auth=True)
    if status == 403:
        return CrmError(f"the token lacks a scope HubSpot requires (403): {message}", auth=True)
    if status == 429:
        return CrmError(f"HubSpot's rate limit (429): {message}", retryable=True, retry_after=_retry_after(headers))
    return CrmError(f"HubSpot answered {status}: {message}", retryable=status >= 500)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
