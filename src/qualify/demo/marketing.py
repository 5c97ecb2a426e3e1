"""The demo company's marketing: its site, its content, its email calendar, webinars and trade shows.

Everything here is shared by every lead of the world: the same newsletter goes to everyone
subscribed, the same webinar happens on the same afternoon for all who registered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# fmt: off
# (content_id, title, buying stage it serves: awareness, consideration or decision)
CONTENT: tuple[tuple[str, str, str], ...] = (
    ("state-of-revops-2026", "State of RevOps 2026", "awareness"),
    ("intent-data-101", "Intent data 101", "awareness"),
    ("b2b-conversion-benchmarks", "Benchmark report: B2B conversion rates", "awareness"),
    ("lead-scoring-playbook", "Lead scoring playbook", "consideration"),
    ("mql-sql-handoff-checklist", "MQL to SQL handoff checklist", "consideration"),
    ("buyers-guide-lead-qualification", "Buyer's guide to lead qualification", "consideration"),
    ("predictive-scoring-explained", "Predictive scoring explained", "consideration"),
    ("customer-story-northwind", "Customer story: Northwind Health", "consideration"),
    ("pricing-guide", "Pricing guide", "decision"),
    ("roi-calculator", "ROI calculator", "decision"),
    ("security-whitepaper", "Security & compliance whitepaper", "decision"),
    ("implementation-guide", "Implementation guide", "decision"),
)
BLOG_POSTS = (
    "what-is-an-mql", "lead-scoring-mistakes", "sales-marketing-sla", "engagement-decay-explained",
    "icp-worksheet", "funnel-metrics-that-matter", "revops-tech-stack", "why-leads-go-cold",
    "account-based-scoring", "fit-vs-intent", "routing-leads-fast", "reason-codes-for-rejection",
)
FEATURES = ("scoring", "routing", "analytics", "integrations", "predictive")
CUSTOMER_STORIES = ("northwind-health", "bluepeak-software", "ironbridge-capital", "summit-retail")
DOCS = ("getting-started", "scoring-model", "api", "webhooks", "postgresql")
WEBINAR_TITLES = (
    "Scoring leads sales actually trusts", "From MQL to pipeline in 30 days", "Predictive scoring without the hype",
    "Building your ICP from closed-won data", "The RevOps funnel review", "Routing and SLAs that stick",
    "Engagement decay: why old clicks lie", "Ask us anything: lead qualification",
)
CONFERENCES = ("RevOps Summit", "B2B Marketing Expo", "SaaS Growth Forum", "Demand Gen Live", "Pipeline Week")
# (campaign theme, landing page, content promoted on it)
THEMES: tuple[tuple[str, str, str | None], ...] = (
    ("Report: State of RevOps 2026", "/resources/state-of-revops-2026", "state-of-revops-2026"),
    ("Playbook: Lead scoring", "/resources/lead-scoring-playbook", "lead-scoring-playbook"),
    ("Customer story: Northwind Health", "/customers/northwind-health", "customer-story-northwind"),
    ("Product update: routing and SLAs", "/product/whats-new", None),
    ("Pricing guide promo", "/pricing", "pricing-guide"),
    ("Checklist: MQL to SQL handoff", "/resources/mql-sql-handoff-checklist", "mql-sql-handoff-checklist"),
    ("Benchmarks: B2B conversion rates", "/resources/b2b-conversion-benchmarks", "b2b-conversion-benchmarks"),
    ("Product update: predictive scoring", "/features/predictive", None),
)
# fmt: on

TITLES = {content_id: title for content_id, title, _ in CONTENT}


@dataclass(frozen=True, slots=True)
class EmailSend:
    """One campaign email sent to every subscribed lead at `at`."""

    at: datetime
    campaign: str
    campaign_id: str
    url: str
    content_id: str | None = None
    webinar: Webinar | None = None


@dataclass(frozen=True, slots=True)
class Webinar:
    at: datetime
    webinar_id: str
    title: str


@dataclass(frozen=True, slots=True)
class Conference:
    start: datetime
    name: str


@dataclass(frozen=True, slots=True)
class Calendar:
    """The marketing calendar of the whole period."""

    sends: tuple[EmailSend, ...]
    webinars: tuple[Webinar, ...]
    conferences: tuple[Conference, ...]

    def next_webinar(self, after: datetime) -> Webinar | None:
        return next((w for w in self.webinars if w.at > after), None)


def marketing_calendar(rng: random.Random, start: datetime, end: datetime) -> Calendar:
    """Newsletters every other Tuesday, a themed campaign most Thursdays, a webinar every three
    weeks (invited a week before), and a trade show every six weeks or so."""
    webinars = _webinars(start, end)
    sends: list[EmailSend] = []
    monday = (start - timedelta(days=start.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    week = 0
    while monday < end:
        if week % 2 == 0:
            post = BLOG_POSTS[(week // 2) % len(BLOG_POSTS)]
            at = monday + timedelta(days=1, hours=14)
            sends.append(EmailSend(at, f"Newsletter {at:%b %d, %Y}", f"newsletter-{at:%Y-%m-%d}", f"/blog/{post}"))
        if rng.random() < 0.8:
            theme, url, content_id = THEMES[week % len(THEMES)]
            at = monday + timedelta(days=3, hours=15)
            sends.append(EmailSend(at, theme, f"{_slug(theme)}-{at:%Y%m%d}", url, content_id))
        monday += timedelta(days=7)
        week += 1
    for webinar in webinars:
        at = webinar.at - timedelta(days=8, hours=1)
        sends.append(
            EmailSend(
                at, f"Webinar invite: {webinar.title}", f"invite-{webinar.webinar_id}", "/webinars", None, webinar
            )
        )
    sends = [s for s in sends if start <= s.at < end]
    sends.sort(key=lambda s: s.at)
    return Calendar(tuple(sends), tuple(webinars), _conferences(start, end))


def _webinars(start: datetime, end: datetime) -> list[Webinar]:
    out: list[Webinar] = []
    day = start + timedelta(days=(3 - start.weekday()) % 7 + 7)  # a Thursday, a week in
    index = 0
    while day < end:
        title = WEBINAR_TITLES[index % len(WEBINAR_TITLES)]
        at = day.replace(hour=16, minute=0, second=0, microsecond=0)
        out.append(Webinar(at, f"webinar-{at:%Y-%m-%d}", title))
        day += timedelta(days=21)
        index += 1
    return out


def _conferences(start: datetime, end: datetime) -> tuple[Conference, ...]:
    out: list[Conference] = []
    day = start + timedelta(days=(1 - start.weekday()) % 7 + 10)  # a Tuesday
    index = 0
    while day < end:
        name = f"{CONFERENCES[index % len(CONFERENCES)]} {day:%Y}"
        out.append(Conference(day.replace(hour=9, minute=0, second=0, microsecond=0), name))
        day += timedelta(days=42)
        index += 1
    return tuple(out)


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())
