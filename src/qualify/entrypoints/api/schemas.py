"""Request and response bodies of the HTTP API (a schema family per thing, as the OpenAPI shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from qualify.domain.errors import InvalidInput
from qualify.domain.records import MAX_DOCUMENT_CHARS, MAX_DOCUMENT_DEPTH, check_document, check_storable

MAX_BATCH = 10_000  # events, leads, accounts, stage changes or deals in one request (docs/api.md, Limits)
_DOCUMENT = f"at most {MAX_DOCUMENT_DEPTH} levels deep and {MAX_DOCUMENT_CHARS:,} characters as JSON"


def _storable_text(text: str | None) -> str | None:
    """A text the store can keep (no NUL, no half surrogate); lengths are the fields' own max_length."""
    try:
        return check_storable(text, "text")
    except InvalidInput as error:
        raise ValueError(error.message) from None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None


EVENT_EXAMPLE: dict[str, Any] = {
    "event_id": "web-7f3a9c",
    "type": "content_download",
    "occurred_at": "2026-11-20T14:27:00Z",
    "email": "jane.doe@acme.com",
    "properties": {"content_id": "pricing-guide", "title": "Pricing guide"},
}


class EventIn(BaseModel):
    """One event, in the shape `qualify import events` reads too (docs/events.md). The lead is named
    by `email` or `external_id`. `event_id` makes it idempotent: without one, an id is derived from
    the content, so a retry is a duplicate. `occurred_at` without a zone is UTC; without it, the
    event happened when it was received. Other top-level keys (`url`, `campaign`, …) are
    properties, as in a file."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [EVENT_EXAMPLE, {"type": "page_view", "email": "jane.doe@acme.com", "url": "/pricing"}]
        },
    )

    event_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="your id for it; absent: derived from the content"
    )
    type: str = Field(min_length=1, max_length=64, description="lower_snake_case, e.g. page_view, demo_request")
    occurred_at: datetime | None = Field(
        default=None, description="ISO 8601; without a zone: UTC; absent: when Qualify received it"
    )
    email: str | None = Field(default=None, max_length=254)
    external_id: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] = Field(
        default_factory=dict, description=f"url, content_id, title, campaign, channel, …; {_DOCUMENT}"
    )

    def all_properties(self) -> dict[str, Any]:
        """`properties` with the other top-level keys (which win over a property of their name)."""
        return {**self.properties, **(self.model_extra or {})}


class EventResult(BaseModel):
    index: int = Field(description="position of the event in the request")
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None
    field: str | None = None
    lead: str | None = Field(
        default=None, description="the lead it went to (its email or external id); only for a key that may read leads"
    )


class IngestResponse(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    results: list[EventResult]


class StageChangeIn(BaseModel):
    """A stage change a person made in the past (a CRM's history): the lead, the stage entered or
    the action taken, when, who and why (docs/import.md, Stage changes)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"email": "jane.doe@acme.com", "action": "accept", "at": "2025-03-04T10:00:00Z", "by": "sam"},
                {"external_id": "L-61", "stage": "nurture", "at": "2025-05-01T00:00:00Z", "reason": "bad_timing"},
            ]
        },
    )

    email: str | None = Field(default=None, max_length=254)
    external_id: str | None = Field(default=None, max_length=200)
    stage: str | None = Field(default=None, max_length=20, description="the stage entered")
    action: str | None = Field(default=None, max_length=30, description="or the action taken: accept, win, ...")
    at: AwareDatetime = Field(description="when; ISO 8601 with a time zone")
    by: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=300)
    note: str | None = Field(default=None, max_length=2000)

    @field_validator("reason", "note", "by")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        return _storable_text(text)


class DealIn(BaseModel):
    """A CRM's deal with a lead: opened, closed won or lost (docs/import.md, Deals)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "deal_id": "D-1001",
                    "email": "jane.doe@acme.com",
                    "opened_at": "2025-03-10T00:00:00Z",
                    "closed_at": "2025-04-22T00:00:00Z",
                    "outcome": "won",
                    "amount": 24000,
                }
            ]
        },
    )

    deal_id: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    external_id: str | None = Field(default=None, max_length=200)
    account_domain: str | None = Field(
        default=None,
        max_length=253,
        description="the account, for a deal with no contact: it goes to the account's lead most recently "
        "active by the deal's first date",
    )
    opened_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None
    outcome: Literal["open", "won", "lost"] | None = None
    amount: float | None = Field(default=None, allow_inf_nan=False)
    reason: str | None = Field(default=None, max_length=300)
    by: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict, description=_DOCUMENT)

    @field_validator("reason", "by")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        return _storable_text(text)


class HistoryResponse(BaseModel):
    """What a batch of history did: a status per item, and how many leads were rebuilt in time order."""

    created: int
    updated: int
    unchanged: int
    rejected: int
    leads_rebuilt: int
    results: list[UpsertResult]


class AccountIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"domain": "acme.com", "name": "Acme", "industry": "software", "employees": 800, "country": "US"}
            ]
        },
    )

    domain: str = Field(max_length=253)
    name: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=120)
    employees: int | None = Field(default=None, ge=0)
    revenue: float | None = Field(default=None, ge=0)
    country: str | None = Field(default=None, max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, description=_DOCUMENT)

    @field_validator("attributes")
    @classmethod
    def _bounded(cls, attributes: dict[str, Any]) -> dict[str, Any]:
        try:
            return check_document(attributes, "attributes")
        except InvalidInput as error:
            raise ValueError(str(error)) from None

    @field_validator("domain", "name", "industry", "country")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        return _storable_text(text)


class LeadIn(BaseModel):
    """A lead to create or update; empty fields keep what is stored, attributes merge key by key."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "jane.doe@acme.com",
                    "first_name": "Jane",
                    "title": "VP Marketing",
                    "seniority": "vp",
                    "account": {"domain": "acme.com", "name": "Acme", "industry": "software", "employees": 800},
                }
            ]
        },
    )

    email: str | None = Field(default=None, max_length=254)
    external_id: str | None = Field(default=None, max_length=200)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=300)
    seniority: str | None = Field(default=None, max_length=60)
    department: str | None = Field(default=None, max_length=120)
    country: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, max_length=200)
    channel: str | None = Field(default=None, max_length=200)
    created_at: AwareDatetime | None = None
    do_not_email: bool | None = None
    do_not_call: bool | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, description=_DOCUMENT)
    account: AccountIn | None = Field(default=None, description="the company, upserted by domain first")


class UpsertResult(BaseModel):
    index: int
    status: Literal["created", "updated", "unchanged", "rejected"]
    reason: str | None = None
    field: str | None = None


class UpsertResponse(BaseModel):
    created: int
    updated: int
    unchanged: int
    rejected: int
    results: list[UpsertResult]


class Contribution(BaseModel):
    rule: str
    points: float
    text: str


class LeadSummary(BaseModel):
    id: int
    email: str | None
    external_id: str | None
    first_name: str | None
    last_name: str | None
    title: str | None
    account: str | None
    stage: str
    stage_entered_at: datetime
    owner: str | None
    fit_score: float
    fit_grade: str
    persona: str | None
    engagement_score: float
    score: float
    scored_at: datetime | None
    probability: float | None = Field(
        None, description="the active predictive model's probability, as of `probability_at`; null without one"
    )
    probability_at: datetime | None = None
    predictive_version: str | None = None
    created_at: datetime
    updated_at: datetime


class LeadPage(BaseModel):
    items: list[LeadSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class PredictionPart(BaseModel):
    feature: str
    value: Any
    words: str = Field(description="the feature and its value in words, e.g. 'page view 3× in the last 7 days'")
    log_odds: float = Field(description="additive contribution to the model's log-odds")
    effect: float = Field(description="probability with this contribution minus without it")


class Prediction(BaseModel):
    model_version: str
    at: datetime = Field(description="the instant the probability is for: the lead's newest activity")
    probability: float
    base_probability: float = Field(description="the probability with every contribution at zero")
    top_positive: list[PredictionPart]
    top_negative: list[PredictionPart]


class LeadProfileOut(BaseModel):
    lead: dict[str, Any]
    account: dict[str, Any] | None
    stage: str
    stage_entered_at: datetime
    owner: str | None = None
    scores: dict[str, Any]
    fit_explanation: list[Contribution]
    engagement_explanation: list[Contribution]
    timeline: list[dict[str, Any]]
    events_total: int
    history: list[dict[str, Any]]
    owner_rule: str | None = Field(default=None, description="the routing rule that chose the owner, or why none")
    owner_assigned_at: datetime | None = None
    sla_due_at: datetime | None = Field(default=None, description="accept or reject the MQL by then")
    prediction: Prediction | None = Field(
        default=None, description="the active predictive model's probability and why; null without one"
    )
    journeys: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the person's other leads (an earlier inquiry, a returning buyer), oldest first",
    )


class RoleCoverageOut(BaseModel):
    role: str
    covered: bool = Field(description="an engaged person fills it")
    people: list[str] = Field(description="the engaged people who fill it")
    not_engaged: list[str] = Field(description="who fills it but is not engaged enough, or not lately")


class AccountScoreSummary(BaseModel):
    fit: float = Field(description="0-100, from the model's accounts.fit rules on the account's fields")
    grade: str
    fit_explanation: list[Contribution]
    engagement: float = Field(
        description="its people's engagement summed, each held at accounts.engagement.per_person_cap"
    )
    engagement_explanation: list[Contribution] = Field(description="each engaged person's share")
    coverage: str = Field(description="e.g. '3 of 5 roles: economic buyer, champion, IT'")
    roles: list[RoleCoverageOut]


class AccountScoresOut(AccountScoreSummary):
    as_of: datetime


class AccountSummary(BaseModel):
    id: int
    domain: str
    name: str | None
    industry: str | None
    employees: int | None
    country: str | None
    leads: int = Field(description="its live people")
    engaged: float = Field(description="the sum of its people's engagement, as last scored")
    mqls: int
    pipeline: int = Field(description="its people in SQL or opportunity")
    customers: int
    last_activity: datetime | None
    stage: str = Field(description="target, engaged, mqa, opportunity or customer")
    owner: str | None = Field(description="the account's own owner (routed when it became MQA, or who accepted it)")
    scores: AccountScoreSummary | None = Field(
        default=None, description="as of now, explained; null where the active model has no accounts section"
    )


class AccountPage(BaseModel):
    items: list[AccountSummary]
    total: int = Field(description="how many accounts match in all")


class AccountLastScored(BaseModel):
    at: datetime
    fit: float
    grade: str
    engagement: float
    covered_roles: int


class AccountStageOut(BaseModel):
    stage: str = Field(description="target, engaged, mqa, opportunity or customer")
    since: datetime | None
    sla_due_at: datetime | None = Field(description="an MQA must be accepted or rejected by then")
    requalify_at: datetime | None = Field(description="an account sent back is not MQA again before then")
    pending_since: datetime | None = Field(
        default=None,
        description="its people changed through the API, a stream or the tracker since then; the worker's next"
        " pass keeps it (scores, stage); null: up to date",
    )
    last_scored: AccountLastScored | None = Field(
        description="its scores as the ingestion pipeline last kept them (the policy's view); null: never scored"
    )
    history: list[dict[str, Any]] = Field(description="its stage changes, newest first")


class AccountOut(BaseModel):
    account: dict[str, Any]
    owner: str | None = Field(
        default=None, description="its own owner, else the owner of its most recently assigned lead"
    )
    stage: AccountStageOut
    stages: dict[str, int] = Field(description="its people by stage")
    scores: AccountScoresOut | None = Field(
        default=None, description="null where the active scoring model has no accounts section"
    )
    leads: list[dict[str, Any]] = Field(description="its people, best first (500 at most)")
    open_deals: list[dict[str, Any]]
    weekly_engagement: list[dict[str, Any]] = Field(description="points its people earned each of the last 12 weeks")


class StageActionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "bad_timing", "note": "call in Q3"}]}
    )

    reason: str | None = Field(default=None, description="reason code; required by reject, disqualify and lose")
    note: str | None = Field(default=None, max_length=2000)
    by: str | None = Field(
        default=None,
        max_length=200,
        description="who acts; default: the key's user, else its name. A key bound to a user may name only that user",
    )
    at: AwareDatetime | None = Field(default=None, description="when it happened; default: now")

    @field_validator("reason", "note", "by")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        return _storable_text(text)


class AccountStageChangeOut(BaseModel):
    account: str = Field(description="its domain")
    action: str
    from_stage: str = Field(alias="from")
    to_stage: str = Field(alias="to")
    at: datetime
    by: str
    reason: str | None
    note: str | None

    model_config = ConfigDict(populate_by_name=True)


class StageChangeOut(BaseModel):
    lead: str
    action: str
    from_stage: str = Field(alias="from")
    to_stage: str = Field(alias="to")
    at: datetime
    timer_moves: list[dict[str, str]]

    model_config = ConfigDict(populate_by_name=True)


class ModelIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"document": "name: my-model\nfit:\n  personas: …  # the whole YAML, as text\n"}]
        },
    )

    document: str = Field(description="the scoring model as YAML text", max_length=1_000_000)


class ModelOut(BaseModel):
    name: str
    version: str
    document: str | None = None
    changed: bool | None = None


class KeyOut(BaseModel):
    key_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    user: str | None = Field(default=None, description="the dashboard user the key acts for (every sales key has one)")


# --- webhooks ----------------------------------------------------------------------------------------


class WebhookIn(BaseModel):
    """A subscription: where to POST which kinds of announcement (docs/webhooks.md)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://crm.example.com/hooks/qualify",
                    "kinds": ["lead.mql", "sla.breached", "score.crossed:80"],
                    "description": "CRM sync",
                }
            ]
        },
    )

    url: str = Field(max_length=2000, description="http:// or https:// URL the deliveries are POSTed to")
    kinds: list[str] = Field(
        min_length=1,
        max_length=50,
        description="stage.changed, lead.mql, sla.breached, score.crossed:<N>, workflow.notify, account.stage.changed, account.mqa, account.sla.breached",
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="signs deliveries; default: a random one, returned once",
    )
    description: str | None = Field(default=None, max_length=300)


class WebhookOut(BaseModel):
    id: int
    url: str
    kinds: list[str]
    description: str | None
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret: shown this once, keep it with the receiver")


class DeliveryOut(BaseModel):
    id: int
    subscription_id: int
    url: str
    kind: str
    payload: dict[str, Any] = Field(description="the `data` of the delivered document")
    created_at: datetime
    status: Literal["pending", "delivered", "dead"]
    attempts: int = Field(description="attempts made since it was (re)queued")
    next_attempt_at: datetime
    last_status: int | None = Field(description="HTTP status of the last attempt; null without an answer")
    last_error: str | None
    delivered_at: datetime | None
