"""Who is in the demo world: companies with firmographics and the people who become leads."""

from __future__ import annotations

import math
import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from qualify.demo import names
from qualify.demo.marketing import Calendar
from qualify.domain.records import Account, Lead

FREE_MAIL_SHARE = 0.12
STUDENT_SHARE = 0.02
COMPETITOR_SHARE = 0.006
EMBARGOED_SHARE = 0.03  # of personal addresses
GROWTH = 1.0  # lead creation grows linearly: twice as many new leads a day at the end as at the start


@dataclass(frozen=True, slots=True)
class DemoCompany:
    account: Account
    region: str
    utc_offset: int
    sdr: str  # who works this account's MQLs
    ae: str  # who works its deals


@dataclass(frozen=True, slots=True)
class DemoLead:
    """A lead of the demo world with what the simulation needs beyond the lead itself."""

    index: int
    lead: Lead
    company: DemoCompany | None
    kind: str  # prospect | student | competitor
    region: str
    utc_offset: int
    sdr: str
    ae: str

    @property
    def account(self) -> Account | None:
        return self.company.account if self.company else None


def generate_population(
    rng: random.Random, size: int, start: datetime, end: datetime, calendar: Calendar
) -> list[DemoLead]:
    """`size` leads created over [start, end), more of them towards the end, ordered by creation."""
    domains: set[str] = set()
    used_names: set[str] = set()
    companies = [_company(rng, domains, used_names) for _ in range(max(3, round(size * 0.42)))]
    weights = list(_cumulative([(c.account.employees or 1) ** 0.4 * rng.paretovariate(1.6) for c in companies]))
    universities = [_university(rng, domain, name) for domain, name in names.UNIVERSITIES]
    competitor = DemoCompany(
        Account(names.COMPETITOR_DOMAIN, "RivalScore", "software", 140, 21e6, "US"), "na", -5, "sam.rivera", "dana.kim"
    )
    emails: set[str] = set()
    leads: list[DemoLead] = []
    for index in range(size):
        draw = rng.random()
        if draw < COMPETITOR_SHARE:
            person = _person(rng, index, competitor, "competitor", emails)
        elif draw < COMPETITOR_SHARE + STUDENT_SHARE:
            company = rng.choice(universities) if rng.random() < 0.5 else _pick(rng, companies, weights)
            person = _person(rng, index, company, "student", emails)
        elif draw < COMPETITOR_SHARE + STUDENT_SHARE + FREE_MAIL_SHARE:
            person = _person(rng, index, None, "prospect", emails)
        else:
            person = _person(rng, index, _pick(rng, companies, weights), "prospect", emails)
        person.lead.created_at = _created_at(rng, start, end, calendar, person)
        leads.append(person)
    leads.sort(key=lambda p: (p.lead.created_at or start, p.index))
    return [_renumber(p, i) for i, p in enumerate(leads)]


def _renumber(person: DemoLead, index: int) -> DemoLead:
    return DemoLead(index, person.lead, person.company, person.kind, person.region, person.utc_offset, person.sdr,
                    person.ae)  # fmt: skip


def _cumulative(values: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for value in values:
        total += value
        out.append(total)
    return out


def _pick(rng: random.Random, companies: list[DemoCompany], cum_weights: list[float]) -> DemoCompany:
    return rng.choices(companies, cum_weights=cum_weights)[0]


def _weighted(rng: random.Random, pairs: Sequence[tuple[str, float]]) -> str:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


# --- companies ---------------------------------------------------------------------------------------------


def _company(rng: random.Random, domains: set[str], used_names: set[str]) -> DemoCompany:
    country = _weighted(rng, [(c, spec[0]) for c, spec in names.COUNTRIES.items()])
    _, _, tlds, offset, region = names.COUNTRIES[country]
    industry = _weighted(rng, [(i, spec[0]) for i, spec in names.INDUSTRIES.items()])
    _, revenue_per_head, endings = names.INDUSTRIES[industry]
    name, domain = _name_and_domain(rng, endings, tlds, domains, used_names)
    # Company sizes are roughly log-normal: many small firms, a long tail of large ones.
    employees = max(2, min(250_000, round(math.exp(rng.gauss(math.log(180), 1.4)))))
    if employees > 100:
        employees = round(employees, -1)
    revenue = _round_significant(employees * revenue_per_head * math.exp(rng.gauss(0, 0.35)), 3)
    display = name + names.LEGAL_SUFFIX.get(country, "") if rng.random() < 0.5 else name
    account = Account(domain, display, industry, employees, revenue, country)
    return DemoCompany(
        account, region, offset, rng.choice(names.SDRS[region]), rng.choice(names.ACCOUNT_EXECUTIVES[region])
    )


def _name_and_domain(
    rng: random.Random, endings: tuple[str, ...], tlds: tuple[str, ...], domains: set[str], used: set[str]
) -> tuple[str, str]:
    for attempt in range(50):
        stem = rng.choice(names.NAME_STEMS)
        if attempt >= 5:  # the simple names are taken: a two-word stem, then a number
            stem += " " + rng.choice(names.NAME_STEMS)
        if attempt >= 20:
            stem += f" {rng.randint(2, 999)}"
        name = f"{stem} {rng.choice(endings)}"
        slug = _ascii(name.lower() if rng.random() < 0.6 else stem.lower())
        domain = f"{slug}{rng.choice(tlds)}"
        if name not in used and domain not in domains:
            used.add(name)
            domains.add(domain)
            return name, domain
    raise RuntimeError("could not find a free company name")  # pragma: no cover - 50 tries with numbers


def _university(rng: random.Random, domain: str, name: str) -> DemoCompany:
    country = "GB" if domain.endswith(".uk") else "DE" if domain.endswith(".de") else "US"
    _, _, _, offset, region = names.COUNTRIES[country]
    account = Account(domain, name, "education", rng.randint(2_000, 12_000), None, country)
    return DemoCompany(account, region, offset, names.SDRS[region][0], names.ACCOUNT_EXECUTIVES[region][0])


def _round_significant(value: float, digits: int) -> float:
    if value <= 0:
        return 0.0
    return float(round(value, digits - 1 - math.floor(math.log10(value))))


# --- people ------------------------------------------------------------------------------------------------


def _person(rng: random.Random, index: int, company: DemoCompany | None, kind: str, emails: set[str]) -> DemoLead:
    country = _free_mail_country(rng) if company is None else company.account.country or "US"
    pool = names.COUNTRIES.get(country, (0, "en"))[1] if rng.random() < 0.75 else "en"
    first, last = rng.choice(names.FIRST_NAMES[pool]), rng.choice(names.LAST_NAMES[pool])
    seniority, department, title = _role(rng, kind, company)
    if company is None:
        email = _unique(f"{_ascii(first)}.{_ascii(last)}", _weighted(rng, names.FREE_MAIL), emails, rng, digits=True)
    else:
        email = _unique(_local_part(rng, first, last), company.account.domain, emails, rng, digits=False)
    channel = _weighted(rng, [(c, spec[0]) for c, spec in names.CHANNELS.items()])
    attributes: dict[str, object] = {}
    if rng.random() < 0.3:  # a budget asked on a form: answered by some, in bands
        attributes["budget"] = _budget(rng, company.account.employees if company else None)
    lead = Lead(
        email=email,
        first_name=first,
        last_name=last,
        title=title,
        seniority=seniority,
        department=department,
        country=country,
        source=rng.choice(names.CHANNELS[channel][1]),
        channel=channel,
        attributes=attributes,
    )
    spec = names.COUNTRIES.get(country)
    region, offset = (spec[4], spec[3]) if spec else ("emea", 3)
    sdr = company.sdr if company else rng.choice(names.SDRS[region])
    ae = company.ae if company else rng.choice(names.ACCOUNT_EXECUTIVES[region])
    return DemoLead(index, lead, company, kind, region, offset, sdr, ae)


def _free_mail_country(rng: random.Random) -> str:
    if rng.random() < EMBARGOED_SHARE:
        return rng.choice(names.EMBARGOED_COUNTRIES)
    return _weighted(rng, [(c, spec[0]) for c, spec in names.COUNTRIES.items()])


def _role(rng: random.Random, kind: str, company: DemoCompany | None) -> tuple[str, str, str]:
    if kind == "student":
        return "individual", _weighted(rng, names.DEPARTMENTS[:3]), rng.choice(names.STUDENT_TITLES)
    employees = (company.account.employees or 0) if company else 0
    if company is not None and employees < 40 and rng.random() < 0.3:
        return "c_level", "executive", rng.choice(names.FOUNDER_TITLES)
    seniority = _weighted(rng, names.SENIORITIES)
    department = _weighted(rng, names.DEPARTMENTS)
    return seniority, department, rng.choice(names.TITLES[(seniority, department)])


def _budget(rng: random.Random, employees: int | None) -> int:
    size = employees or 10
    if size < 50:
        return rng.choice((2_000, 5_000, 10_000))
    if size < 1_000:
        return rng.choice((5_000, 10_000, 25_000, 50_000))
    return rng.choice((25_000, 50_000, 100_000, 250_000))


def _local_part(rng: random.Random, first: str, last: str) -> str:
    f, surname = _ascii(first), _ascii(last)
    forms = (f"{f}.{surname}", f"{f[0]}{surname}", f, f"{f}_{surname}", f"{f}{surname[0]}")
    return rng.choices(forms, weights=(55, 20, 10, 5, 10))[0]


def _unique(local: str, domain: str, taken: set[str], rng: random.Random, *, digits: bool) -> str:
    candidate = f"{local}{rng.randint(1, 99) if digits and rng.random() < 0.5 else ''}@{domain}"
    while candidate in taken:
        candidate = f"{local}{rng.randint(2, 9999)}@{domain}"
    taken.add(candidate)
    return candidate


def _ascii(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalnum())


# --- when ----------------------------------------------------------------------------------------------------


def _created_at(rng: random.Random, start: datetime, end: datetime, calendar: Calendar, person: DemoLead) -> datetime:
    """More leads each week than the last, few at weekends, in office hours; trade-show leads on show days."""
    span = (end - start).total_seconds()
    share = rng.random()
    # Inverse of the CDF of a density growing linearly from 1 to 1 + GROWTH.
    u = (-1 + math.sqrt(1 + 2 * GROWTH * share * (1 + GROWTH / 2))) / GROWTH
    moment = start + timedelta(seconds=u * span)
    shows = [c.start for c in calendar.conferences if c.start <= moment]
    if person.lead.channel == "events" and shows:
        moment = shows[-1] + timedelta(days=rng.choice((0, 0, 1, 1, 2)))
    elif moment.weekday() >= 5 and rng.random() < 0.7:
        moment -= timedelta(days=moment.weekday() - 4)
    local_hour = rng.choice((8, 9, 10, 11, 13, 14, 15, 16, 17, 19, 21))
    moment = moment.replace(hour=local_hour, minute=rng.randint(0, 59), second=rng.randint(0, 59), microsecond=0)
    moment -= timedelta(hours=person.utc_offset)
    return min(max(moment, start), end - timedelta(seconds=1))
