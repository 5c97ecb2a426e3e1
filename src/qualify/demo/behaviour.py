"""One lead's life in the demo world: what they do, day by day, and what sales decides about them.

Behaviour follows a latent *intent*: a lead with good fit is more often in market; while in
market (a buying window of a few weeks) they visit more, read pricing and decision content,
ask for a demo, and the closer to their decision the more intense it gets. Outside windows
there is a low background of newsletter opens and blog reads, with bursts and long quiet
spells. The lead's stage is kept by the project's own online evaluator, exactly as the
service will compute it, so that sales decisions are taken on the stage the lead is really
in: an MQL nobody looked at for weeks may have decayed out, a rejected lead may come back.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qualify.demo import marketing, sales
from qualify.demo.groups import GroupWindow, role_in_group, roles_needed
from qualify.demo.marketing import Calendar, EmailSend, Webinar
from qualify.demo.names import CHANNELS
from qualify.demo.population import DemoLead
from qualify.domain.evaluator import AppliedMove, LeadState, OnlineEvaluator
from qualify.domain.fit import disqualifying_rule, profile_values, score_fit
from qualify.domain.lifecycle import Stage
from qualify.domain.records import FREE_MAIL_DOMAINS, Event, email_domain

DAY = 86_400
MINUTE = 60
OPEN_STAGES = (Stage.LEAD, Stage.NURTURE, Stage.MQL)
MEMBER_PEAK = 0.6  # a buying group's members research; its contact is the one who asks for the demo
DEAL_AFTER_WINDOW = 45 * DAY  # a group's deal is still decided by it this long after its window


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's stage action on the lead, as `apply_stage_action` takes it."""

    at: datetime
    action: str
    by: str
    reason: str | None = None
    note: str | None = None


@dataclass(slots=True)
class LeadTimeline:
    """Everything that happens to one lead, in the order it happens."""

    person: DemoLead
    items: list[Event | Decision] = field(default_factory=list)


def simulate_lead(
    person: DemoLead,
    *,
    evaluator: OnlineEvaluator,
    calendar: Calendar,
    seed: int,
    now: datetime,
    groups: Sequence[GroupWindow] = (),
) -> LeadTimeline:
    """Play one lead's life from its creation up to `now`; `groups` are the windows in which their
    company was in market and they took part (`qualify.demo.groups`)."""
    life = _Life(person, evaluator, calendar, seed, int(now.timestamp()), groups)
    life.run()
    return LeadTimeline(person, life.items)


def _poisson(rng: random.Random, mean: float) -> int:
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class _Life:
    def __init__(
        self,
        person: DemoLead,
        evaluator: OnlineEvaluator,
        calendar: Calendar,
        seed: int,
        now: int,
        groups: Sequence[GroupWindow],
    ) -> None:
        self.person, self.evaluator, self.calendar, self.now, self.groups = person, evaluator, calendar, now, groups
        self.rng = random.Random(seed * 1_000_003 + person.index)
        self.key = person.lead.email or ""
        self.event_prefix = f"demo-{seed}-{person.index:06d}-"
        self.created = int((person.lead.created_at or datetime.now(UTC)).timestamp())
        self.items: list[Event | Decision] = []
        self.queue: list[tuple[int, int, str, Any]] = []
        self.sequence = 0
        self.free_mail = email_domain(self.key) in FREE_MAIL_DOMAINS
        self.subscribed, self.bounced = True, False
        self.downloaded: set[str] = set()
        self.registered: set[str] = set()
        self.last_demo_request = -(10**12)
        self.sends = 0
        self.meetings = 0
        self.in_market_at_open = False
        self.group_at_open = 1.0
        self.quiet_until = 0  # after a rejection or a lost deal, people go quiet for a while
        self.last_setback = -(10**12)
        self.state = self._initial_state()
        self.affinity = self._affinity()
        self.windows = self._buying_windows()
        self.bursts = self._bursts()
        self.left_at = self.created + self.rng.uniform(20, 400) * DAY if self.rng.random() < 0.15 else None

    # --- who they are ---------------------------------------------------------------------------------------
    def _initial_state(self) -> LeadState:
        model = self.evaluator.model
        values = profile_values(self.person.lead, self.person.account)
        fit = score_fit(model, values)
        state = LeadState(stage=Stage.LEAD, stage_entered=float(self.created), fit=fit.score, grade=fit.grade)
        state.persona = fit.persona
        self.evaluator.sweep(state, float(self.created), disqualifying_rule(model, values))
        return state

    def _affinity(self) -> float:
        """How much this lead cares about what we sell: mostly fit, partly channel, partly chance."""
        channel_bias = marketing_channel_bias(self.person.lead.channel)
        logit = 3.0 * (self.state.fit / 100 - 0.45) + channel_bias + self.rng.gauss(0, 0.8)
        return 1 / (1 + math.exp(-logit))

    def _buying_windows(self) -> list[tuple[int, int, float]]:
        """(start, end, peak intent): a company's people are in market with their buying group
        (`qualify.demo.groups`); someone on a personal address, on their own."""
        rng, a = self.rng, self.affinity
        if self.person.kind == "prospect" and self.person.company is not None:
            windows = []
            for group in self.groups:
                span = group.end - group.start
                if group.contact == self.person.index:  # asks for the demo once the group has done its reading
                    windows.append((int(group.start + rng.uniform(0.15, 0.4) * span), group.end, 1.0))
                else:  # members research first, each from their own day
                    start = max(group.start, self.created) + rng.uniform(0, 0.25) * span
                    windows.append((int(start), group.end, MEMBER_PEAK))
            return windows
        if self.person.kind != "prospect" or rng.random() > 0.06 + 0.5 * a:
            return []
        inbound = marketing_channel_bias(self.person.lead.channel) > 0
        if inbound and rng.random() < 0.5:
            start = self.created - rng.uniform(0, 10) * DAY  # they found us because they are looking
        else:
            start = self.created + rng.uniform(0, 200) * DAY
        windows = [(int(start), int(start + rng.uniform(21, 75) * DAY), 1.0)]
        if rng.random() < 0.15 + 0.2 * a:
            later = windows[0][1] + rng.uniform(40, 120) * DAY
            windows.append((int(later), int(later + rng.uniform(21, 60) * DAY), 1.0))
        return windows

    def group(self, ts: int) -> float:
        """How complete the buying group behind this person is at `ts` (0-1): the roles in market with
        them over the roles their company's purchase needs. Someone on a personal address buys alone."""
        account = self.person.account
        if account is None:
            return 1.0
        own = role_in_group(self.person.lead.seniority, self.person.lead.department)
        roles = {own} - {None}
        best = min(1.0, len(roles) / roles_needed(account.employees))
        for window in self.groups:
            if window.start <= ts < window.end + DEAL_AFTER_WINDOW:
                best = max(best, min(1.0, len(window.roles | roles) / window.needed))
        return best

    def _bursts(self) -> list[tuple[int, int, float]]:
        out, moment = [], float(self.created)
        rate = (0.3 + 0.8 * self.affinity) / 30  # episodes a day
        while moment < self.now:
            moment += self.rng.expovariate(rate) * DAY
            out.append((int(moment), int(moment + self.rng.uniform(1, 4) * DAY), self.rng.uniform(0.1, 0.35)))
        return out

    # --- intent ----------------------------------------------------------------------------------------------
    def in_market(self, ts: int) -> bool:
        return any(start <= ts < end for start, end, _ in self.windows)

    def intent(self, ts: int) -> float:
        level = 0.0
        for start, end, peak in self.windows:
            if start <= ts < end:
                level = max(level, peak * (0.35 + 0.65 * ((ts - start) / (end - start)) ** 1.3))
        for start, end, burst in self.bursts:
            if start <= ts < end:
                level = max(level, burst)
        if ts < self.quiet_until:
            return 0.0
        stage = self.state.stage
        if stage is Stage.OPPORTUNITY:  # deals happen in meetings more than on the website
            level = max(level, 0.35)
        elif stage is Stage.SQL:
            level = max(level, 0.25)
        elif stage in (Stage.CUSTOMER, Stage.EVANGELIST):
            level = 0.1
        return level

    # --- the clock -------------------------------------------------------------------------------------------
    def run(self) -> None:
        self._first_touch()
        sends = [s for s in self.calendar.sends if s.at.timestamp() >= self.created]
        day = self.created - self.created % DAY
        while day < self.now:
            end = day + DAY
            while sends and sends[0].at.timestamp() < end:
                send = sends.pop(0)
                self._push(int(send.at.timestamp()), "send", send)
            self._plan_sessions(day)
            self._drain(min(end, self.now + 1))
            day = end

    def _push(self, ts: int, kind: str, payload: Any = None) -> None:
        if ts <= self.now:
            self.sequence += 1
            heapq.heappush(self.queue, (ts, self.sequence, kind, payload))

    def _drain(self, until: int) -> None:
        while self.queue and self.queue[0][0] < until:
            ts, _, kind, payload = heapq.heappop(self.queue)
            if ts < self.created:
                continue
            getattr(self, f"_on_{kind}")(ts, payload)

    def _plan_sessions(self, day: int) -> None:
        if self.left_at is not None and day >= self.left_at:
            return
        rng = self.rng
        noon = day + DAY // 2
        rate = 0.025 + 0.08 * self.affinity + 1.3 * self.intent(noon)
        if day < self.quiet_until:
            return
        if self.person.kind == "competitor":
            rate = 0.25
        weekday = (day // DAY + 3) % 7
        if weekday >= 5:
            rate *= 0.3
        for _ in range(_poisson(rng, rate)):
            local_hour = min(max(rng.gauss(13, 3), 6), 23)
            self._push(int(day + (local_hour - self.person.utc_offset) * 3600 + rng.randint(0, 3599)), "session")

    # --- what the lead does ----------------------------------------------------------------------------------
    def _emit(self, ts: int, event_type: str, properties: dict[str, Any]) -> None:
        """Queue an event: events are recorded strictly in time order, as a live stream would bring them."""
        self._push(ts, "event", (event_type, properties))

    def _on_event(self, ts: int, payload: tuple[str, dict[str, Any]]) -> None:
        """Record an event and let the evaluator move the lead, as the service will."""
        event_type, properties = payload
        event_id = f"{self.event_prefix}{len(self.items):04d}"
        occurred = datetime.fromtimestamp(ts, UTC)
        self.items.append(Event(event_id, event_type, occurred, email=self.key, properties=properties))
        step = self.evaluator.apply(self.state, event_type, properties, float(ts))
        self._follow(step.moves)

    def _follow(self, moves: list[AppliedMove]) -> None:
        for move in moves:
            if move.to_stage is Stage.MQL and self.rng.random() > 0.12:  # the rest nobody looks at: an SLA miss
                when = sales.office_hours(self.rng, move.at + sales.reply_delay(self.rng), self.person.utc_offset)
                self._push(when, "review")
            elif move.to_stage is Stage.SQL:  # fast-tracked: straight to an account executive
                self._plan_discovery(int(move.at))

    def _first_touch(self) -> None:
        """The conversion that made this person a lead, by acquisition channel."""
        ts, rng, channel = self.created, self.rng, self.person.lead.channel
        content = self._pick_content(self.intent(ts))
        if channel == "outbound":
            for step, days in enumerate((0, 3, 7, 14)):
                campaign = f"Outbound sequence: {self.person.sdr} step {step + 1}"
                at = sales.office_hours(rng, ts + days * DAY, self.person.utc_offset)
                self._push(at, "send", EmailSend(datetime.fromtimestamp(at, UTC), campaign, "outbound-sequence", "/"))
        elif channel == "events":
            show = next((c.name for c in reversed(self.calendar.conferences) if c.start.timestamp() <= ts + DAY), "")
            self._emit(ts, "form_submit", {"form": "badge-scan", "event": show or "Trade show"})
        elif channel == "webinar":
            webinar = self.calendar.next_webinar(datetime.fromtimestamp(ts, UTC))
            if webinar is not None:
                self._register(ts, webinar)
            else:  # no live webinar left in the period: they watch a recording
                title = marketing.WEBINAR_TITLES[self.person.index % len(marketing.WEBINAR_TITLES)]
                self._emit(ts, "webinar_attended", {"webinar_id": "on-demand", "title": title, "minutes": 25})
        elif channel == "referral":
            self._emit(ts, "form_submit", {"form": "contact-sales", "url": "/contact"})
            if self.intent(ts) > 0.3 and rng.random() < 0.5:
                self._demo_request(ts + 30)
        elif channel == "content syndication":
            self._emit(ts, "content_download", {"content_id": content, "title": marketing.TITLES[content],
                                                "via": "syndication"})  # fmt: skip
            self.downloaded.add(content)
        else:  # organic and paid: a gated download on a landing page
            landing = "/lp/lead-scoring" if channel and channel.startswith("paid") else f"/resources/{content}"
            self._emit(ts, "page_view", {"url": landing})
            self._download(ts + 40, content)

    def _on_session(self, ts: int, landing: str | None) -> None:
        rng, level = self.rng, self.intent(ts)
        pages = 1 + min(_poisson(rng, 0.8 + 2.5 * level), 9)
        for number in range(pages):
            url = landing if number == 0 and landing else self._pick_page(level)
            self._emit(ts, "page_view", {"url": url})
            ts += rng.randint(20, 240)
        self._convert(ts, level)

    def _convert(self, ts: int, level: float) -> None:
        rng, stage = self.rng, self.state.stage
        if self.person.kind != "prospect":
            return
        if rng.random() < 0.03 + 0.2 * level:
            self._download(ts, self._pick_content(level))
        elif stage in OPEN_STAGES and level >= 0.5 and ts - self.last_demo_request > 45 * DAY:
            if rng.random() < 0.3 * (level - 0.5) / 0.5:
                self._demo_request(ts)
        elif stage in OPEN_STAGES and level >= 0.8 and rng.random() < 0.04:
            self._emit(ts, "quote_request", self._quote())
        elif rng.random() < 0.02 + 0.08 * level:
            self._register(ts, self.calendar.next_webinar(datetime.fromtimestamp(ts, UTC)))

    def _download(self, ts: int, content_id: str) -> None:
        if content_id in self.downloaded:
            return
        if not self.downloaded:  # the first download is gated by a form; later ones the site remembers
            self._emit(ts, "form_submit", {"form": "content-gate", "content_id": content_id})
        self.downloaded.add(content_id)
        self._emit(ts + 5, "content_download", {"content_id": content_id, "title": marketing.TITLES[content_id]})

    def _demo_request(self, ts: int) -> None:
        self.last_demo_request = ts
        self._emit(ts, "page_view", {"url": "/demo"})
        self._emit(ts + 60, "demo_request", {"form": "demo-request", "url": "/demo"})

    def _quote(self) -> dict[str, Any]:
        employees = (self.person.account.employees if self.person.account else None) or 20
        seats = max(3, min(500, round(employees * self.rng.uniform(0.01, 0.05))))
        return {"plan": "enterprise" if seats > 100 else "business", "seats": seats, "url": "/pricing"}

    def _register(self, ts: int, webinar: Webinar | None) -> None:
        if webinar is None or webinar.webinar_id in self.registered:
            return
        self.registered.add(webinar.webinar_id)
        self._emit(ts, "form_submit", {"form": "webinar-registration", "webinar_id": webinar.webinar_id})
        self._push(int(webinar.at.timestamp()), "attend", webinar)

    def _on_attend(self, ts: int, webinar: Webinar) -> None:
        if self.rng.random() < 0.4 + 0.25 * self.affinity:
            minutes = self.rng.randint(8, 60)
            self._emit(ts + self.rng.randint(0, 300), "webinar_attended",
                       {"webinar_id": webinar.webinar_id, "title": webinar.title, "minutes": minutes})  # fmt: skip

    def _on_send(self, ts: int, send: EmailSend) -> None:
        rng = self.rng
        if not self.subscribed or self.bounced:
            return
        left = self.left_at is not None and ts >= self.left_at
        self.sends += 1
        if left or (self.sends == 1 and rng.random() < 0.012):  # left the company, or a mistyped address
            self.bounced = True
            self._emit(ts + rng.randint(5, 90), "bounce", {"campaign": send.campaign, "kind": "hard"})
            return
        level = self.intent(ts)
        chance = min(0.85, 0.08 + 0.25 * self.affinity + 0.35 * level) * (0.1 if ts < self.quiet_until else 1.0)
        if rng.random() > chance:
            return
        opened = ts + int(math.exp(rng.gauss(math.log(2.5), 1.2)) * 3600)
        self._push(opened, "event", ("email_open", {"campaign": send.campaign, "campaign_id": send.campaign_id}))
        if rng.random() < 0.004 + 0.015 * (1 - self.affinity):
            self.subscribed = False
            self._push(opened + 30, "event", ("unsubscribe", {"campaign": send.campaign}))
        elif rng.random() < min(0.7, 0.04 + 0.15 * self.affinity + 0.35 * level):
            self._push(opened + rng.randint(10, 300), "click", send)

    def _on_click(self, ts: int, send: EmailSend) -> None:
        self._emit(ts, "email_click", {"campaign": send.campaign, "campaign_id": send.campaign_id, "url": send.url})
        self._on_session(ts + 5, send.url)
        if send.content_id and self.rng.random() < 0.4:
            self._download(ts + 200, send.content_id)
        if send.webinar is not None and self.rng.random() < 0.3 + 0.4 * self.intent(ts):
            self._register(ts + 120, send.webinar)

    def _pick_page(self, level: float) -> str:
        rng, stage, kind = self.rng, self.state.stage, self.person.kind
        customer = stage in (Stage.CUSTOMER, Stage.EVANGELIST)
        weights = {
            "/": 6.0,
            "blog": 20 * (1 - level) + 4,
            "/product": 5 + 8 * level,
            "features": 4 + 8 * level,
            "/integrations": 2 + 4 * level,
            "customers": 2 + 5 * level,
            "/pricing": 0.5 + 20 * level + (15 if kind == "competitor" else 0),
            "/security": 0.3 + 4 * level,
            "/about": 1.5,
            "/careers": 20.0 if kind == "student" else 0.6,
            "docs": 25.0 if customer else 0.5 + 2 * level,
        }
        page = rng.choices(list(weights), weights=list(weights.values()))[0]
        if page == "blog":
            return f"/blog/{rng.choice(marketing.BLOG_POSTS)}"
        if page == "features":
            return f"/features/{rng.choice(marketing.FEATURES)}"
        if page == "customers":
            return f"/customers/{rng.choice(marketing.CUSTOMER_STORIES)}"
        if page == "docs":
            return f"/docs/{rng.choice(marketing.DOCS)}"
        return page

    def _pick_content(self, level: float) -> str:
        weight = {"awareness": 1.2 - level, "consideration": 0.8, "decision": 0.1 + 1.6 * level}
        items = [c for c in marketing.CONTENT if c[0] not in self.downloaded] or list(marketing.CONTENT)
        return self.rng.choices([c[0] for c in items], weights=[weight[c[2]] for c in items])[0]

    # --- what sales does -------------------------------------------------------------------------------------
    def _decide(self, ts: int, verdict: sales.Verdict, by: str, target: Stage) -> None:
        self.items.append(Decision(datetime.fromtimestamp(ts, UTC), verdict.action, by, verdict.reason, verdict.note))
        self.state.stage, self.state.stage_entered = target, float(ts)
        if target is Stage.NURTURE:
            self.last_setback = ts
            quiet_days = self.rng.uniform(20, 60) if verdict.action == "reject" else self.rng.uniform(60, 150)
            self.quiet_until = max(self.quiet_until, ts + int(quiet_days * DAY))
            self.bursts = [(s, min(e, ts), level) for s, e, level in self.bursts]

    def _sighting(self, ts: int) -> sales.Sighting:
        account = self.person.account
        return sales.Sighting(
            fit=self.state.fit,
            engagement=self.state.engagement_at(float(ts)),
            in_market=self.in_market(ts),
            free_mail=self.free_mail,
            seniority=self.person.lead.seniority,
            employees=account.employees if account else None,
            setback_days=(ts - self.last_setback) / DAY,
            group=self.group(ts),
        )

    def _observe(self, ts: int) -> Stage:
        """The stage a rep sees at `ts`: timers (decay-out) run first, as `apply_stage_action` does."""
        self.evaluator.run_timers(self.state, float(ts))
        return self.state.stage

    def _on_review(self, ts: int, _: None) -> None:
        if self._observe(ts) is not Stage.MQL:
            return
        verdict = sales.review_mql(self.rng, self._sighting(ts))
        target = {"accept": Stage.SQL, "reject": Stage.NURTURE, "disqualify": Stage.DISQUALIFIED}[verdict.action]
        self._decide(ts, verdict, self.person.sdr, target)
        if target is Stage.SQL:
            self._plan_discovery(ts)
        elif verdict.reason in ("bad_timing", "not_ready") and self.rng.random() < 0.35:
            later = ts + self.rng.uniform(30, 100) * DAY  # "call me next quarter"
            self.windows.append((int(later), int(later + self.rng.uniform(21, 50) * DAY), 1.0))

    def _plan_discovery(self, ts: int) -> None:
        rng, offset = self.rng, self.person.utc_offset
        meeting = sales.office_hours(rng, ts + rng.uniform(1, 6) * DAY, offset)
        if self.in_market(ts) or rng.random() < 0.5:  # the others never show up
            self._push(meeting, "discovery")
        self._push(sales.office_hours(rng, meeting + rng.uniform(1, 8) * DAY, offset), "qualify")

    def _on_discovery(self, ts: int, _: None) -> None:
        if self.state.stage is Stage.SQL:
            self._emit(ts, "meeting", {"kind": "discovery", "with": self.person.ae})

    def _on_qualify(self, ts: int, _: None) -> None:
        if self._observe(ts) is not Stage.SQL:
            return
        verdict = sales.open_opportunity(self.rng, self._sighting(ts))
        if verdict is None:
            return
        if verdict.action == "lose":
            self._decide(ts, verdict, self.person.ae, Stage.NURTURE)
            return
        self._decide(ts, verdict, self.person.ae, Stage.OPPORTUNITY)
        self.in_market_at_open = self.in_market(ts)
        self.group_at_open = self.group(ts)
        account = self.person.account
        close = ts + int(sales.sales_cycle_days(self.rng, account.employees if account else None) * DAY)
        self._plan_deal(ts, close)

    def _plan_deal(self, start: int, close: int) -> None:
        rng, offset, moment = self.rng, self.person.utc_offset, start
        kinds = ("demo", "technical deep-dive", "security review", "business case", "negotiation")
        step = 0
        while True:
            moment = sales.office_hours(rng, moment + rng.uniform(5, 12) * DAY, offset)
            if moment >= close:
                break
            self._push(moment, "meeting", kinds[min(step, len(kinds) - 1)])
            step += 1
        if rng.random() < 0.7:
            self._push(sales.office_hours(rng, close - rng.uniform(3, 10) * DAY, offset), "deal_quote")
        self._push(sales.office_hours(rng, close, offset), "close")

    def _on_deal_quote(self, ts: int, _: None) -> None:
        if self.state.stage is Stage.OPPORTUNITY:
            self._emit(ts, "quote_request", self._quote())

    def _on_meeting(self, ts: int, kind: str) -> None:
        if self.state.stage is Stage.OPPORTUNITY:
            self.meetings += 1
            self._emit(ts, "meeting", {"kind": kind, "with": self.person.ae})

    def _on_close(self, ts: int, _: None) -> None:
        if self._observe(ts) is not Stage.OPPORTUNITY:
            return
        seen = self._sighting(ts)
        seen = dataclasses.replace(seen, in_market=self.in_market_at_open, group=self.group_at_open)
        verdict = sales.close_deal(self.rng, seen, self.meetings)
        won = verdict.action == "win"
        self._decide(ts, verdict, self.person.ae, Stage.CUSTOMER if won else Stage.NURTURE)
        if won or verdict.reason != "bad_timing":  # they bought, here or elsewhere: out of market
            self.windows = [(s, min(e, ts), peak) for s, e, peak in self.windows]
        if won and self.rng.random() < 0.5:
            when = ts + self.rng.uniform(20, 90) * DAY
            self._push(sales.office_hours(self.rng, when, self.person.utc_offset), "advocate")

    def _on_advocate(self, ts: int, _: None) -> None:
        if self._observe(ts) is Stage.CUSTOMER:
            note = self.rng.choice(("case study published", "G2 review", "reference call", "spoke at our webinar"))
            self._decide(ts, sales.Verdict("advocate", None, note), self.person.ae, Stage.EVANGELIST)


def marketing_channel_bias(channel: str | None) -> float:
    """How much buying intent an acquisition channel brings (referrals most, outbound least)."""
    return CHANNELS[channel][2] if channel in CHANNELS else 0.0
