"""Predictive models in the store: save what `qualify train` learnt, list, activate; and the
active model's probability for leads, kept on each lead row as of its newest activity.

A model's version is a content hash (`p` and 11 hex digits of the SHA-256 of its document), so
training twice on the same data gives the same version. At most one model is active. A lead's
probability is computed at the instant of its newest event (or its creation): after every batch
of events, for the leads it touched, and for every lead when a model is activated or the leads
are rescored. With no active model, leads keep no probability.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, bindparam, func, select, update

from qualify.adapters import schema
from qualify.adapters.repository import chunks
from qualify.domain.content import content_item
from qualify.domain.engagement import DayTotals, EngagementState, apply_event
from qualify.domain.errors import NotFound
from qualify.domain.scoring_model import ScoringModel
from qualify.predictive.recipe import (
    ACCOUNT_CATEGORIES,
    ACCOUNT_NUMBERS,
    LEAD_CATEGORIES,
    LEAD_FLAGS,
    RECENT_DAYS,
    Behaviour,
    Recipe,
    Subject,
)
from qualify.service.audit import record_audit
from qualify.service.pipeline import Run, of
from qualify.service.predictions import behaviour
from qualify.service.predictions.context import deals_of, number_pairs, rollups_of
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow

if TYPE_CHECKING:  # the models' libraries load only when a model is used
    from qualify.predictive.models import Trained
    from qualify.predictive.online import Predictor

CHUNK = 500


@dataclass(frozen=True, slots=True)
class PredictiveVersion:
    version: str
    kind: str
    target: str
    within_days: int
    cutoff: str
    scoring_model: str | None
    data_from: datetime | None
    data_to: datetime | None
    metrics: dict[str, Any]
    created_at: datetime
    activated_at: datetime | None
    active: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "target": self.target,
            "within_days": self.within_days,
            "cutoff": self.cutoff,
            "scoring_model": self.scoring_model,
            "data_from": self.data_from.isoformat() if self.data_from else None,
            "data_to": self.data_to.isoformat() if self.data_to else None,
            "metrics": self.metrics,
            "created_at": self.created_at.isoformat(),
            "activated_at": self.activated_at.isoformat() if self.activated_at else None,
            "active": self.active,
        }


def artefact(trained: Trained, recipe: Recipe, report: dict[str, Any]) -> dict[str, Any]:
    """What is stored (and written by `qualify train --out`): model, calibration, recipe, report."""
    return trained.to_dict() | {"recipe": recipe.to_dict(), "report": report}


def version_of(document: dict[str, Any]) -> str:
    learnt = {key: document[key] for key in ("model", "calibrator", "recipe")}
    digest = hashlib.sha256(json.dumps(learnt, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"p{digest[:11]}"


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures a list shows: the chosen model's and the rule score's on the newest leads."""
    test = report.get("test", {})
    keep = ("roc_auc", "pr_auc", "brier", "ece")
    summary = {key: test.get("model", {}).get(key) for key in keep}
    summary["rows"] = report.get("rows")
    summary["positives"] = report.get("positives")
    if "rule_score" in test:
        summary["rule_score_roc_auc"] = test["rule_score"].get("roc_auc")
    return summary


def store_model(uow: UnitOfWork, document: dict[str, Any], *, by: str = "cli") -> tuple[str, bool]:
    """Store a trained model's document as a version; returns it and whether it was new."""
    version = version_of(document)
    table = schema.predictive_models
    conn = uow.connection
    if conn.execute(select(table.c.version).where(table.c.version == version)).scalar() is not None:
        return version, False
    report = document.get("report", {})
    training = report.get("training_set", {})
    periods = [moment for part in report.get("periods", {}).values() for moment in (part or []) if moment]
    instants = sorted(datetime.fromisoformat(str(moment).replace("Z", "+00:00")) for moment in periods)
    conn.execute(
        table.insert().values(
            version=version,
            kind=document["model"]["kind"],
            target=training.get("target", "?"),
            within_days=int(training.get("within_days", 0)),
            cutoff=training.get("cutoff", "?"),
            scoring_model=report.get("scoring_model"),
            data_from=instants[0] if instants else None,
            data_to=instants[-1] if instants else None,
            metrics=_summary(report),
            document=json.dumps(document, separators=(",", ":"), default=str),
            created_at=utcnow(),
            active=False,
        )
    )
    record_audit(uow, actor=by, action="predictive.store", target=version, details={"kind": document["model"]["kind"]})
    return version, True


def list_models(uow: UnitOfWork) -> list[PredictiveVersion]:
    table = schema.predictive_models
    columns = [table.c[name] for name in PredictiveVersion.__dataclass_fields__]
    rows = uow.connection.execute(select(*columns).order_by(table.c.created_at, table.c.version))
    return [PredictiveVersion(*row) for row in rows]


def model_document(uow: UnitOfWork, version: str) -> dict[str, Any]:
    table = schema.predictive_models
    text = uow.connection.execute(select(table.c.document).where(table.c.version == version)).scalar()
    if text is None:
        raise NotFound(f"no predictive model {version!r} (qualify models lists them)")
    document: dict[str, Any] = json.loads(text)
    return document


def activate(uow: UnitOfWork, version: str | None, *, by: str = "cli") -> tuple[str | None, bool]:
    """Make `version` the active predictive model (None: none active). Returns the previous
    active version and whether anything changed. Probabilities are refreshed by `refresh_all`."""
    table = schema.predictive_models
    conn = uow.connection
    current = conn.execute(select(table.c.version).where(table.c.active).with_for_update()).scalar()
    if version is not None:
        model_document(uow, version)  # NotFound when unknown
    if current == version:
        return current, False
    conn.execute(update(table).where(table.c.active).values(active=False))
    behaviour.drop(conn)  # kept for the model that was active: another recipe, built again
    if version is not None:
        conn.execute(update(table).where(table.c.version == version).values(active=True, activated_at=utcnow()))
    record_audit(
        uow, actor=by, action="predictive.activate" if version else "predictive.deactivate",
        target=version or current, details={"previous": current},
    )  # fmt: skip
    return current, True


def active_predictor(uow: UnitOfWork) -> Predictor | None:
    """The active predictive model, loaded once per workspace; None when none is active."""
    table = schema.predictive_models
    version = uow.connection.execute(select(table.c.version).where(table.c.active)).scalar()
    if version is None:
        return None
    return predictor(uow, version)


def predictor(uow: UnitOfWork, version: str) -> Predictor:
    from qualify.predictive.models import Trained
    from qualify.predictive.online import Predictor

    cache = uow.workspace._predictors
    if version not in cache:
        document = model_document(uow, version)
        cache[version] = Predictor(version, Trained.from_dict(document), Recipe.from_dict(document["recipe"]))
    found: Predictor = cache[version]
    return found


# --- leads -----------------------------------------------------------------------------------------


def engagement_at(model: ScoringModel, events: list[tuple[str, datetime, Any]], at: datetime) -> float:
    """A lead's engagement at `at` from its events (type, occurred_at, properties), in the order
    they were applied: the events that occurred by then, replayed as the online evaluator applied
    them (caps in that order), decayed to `at`. What the stored state said at that instant."""
    state, totals = EngagementState(), DayTotals()
    for kind, occurred, properties in events:
        if occurred > at:
            continue
        ts = occurred.timestamp()
        totals.add(apply_event(model, state, kind, properties or {}, ts, totals), ts)
    return state.value_at(at.timestamp())


def subjects(
    uow: UnitOfWork,
    lead_ids: Iterable[int],
    at: dict[int, datetime] | None = None,
    recipe: Recipe | None = None,
    *,
    kept_as: str | None = None,
) -> list[Subject]:
    """Leads as the features need them, each at `at[id]` (default its newest event, or creation);
    their deals and their account's other leads only where `recipe` reads them (no recipe: always).

    Nothing after that instant is read but the profile and the fit (as they are now): where the
    lead has events after it, its engagement is replayed from the events up to it (the stored
    state holds all of them) with the active scoring model, so a probability as of a past instant
    is the one the lead had then (`qualify rescore --as-of` computes the same in batch).

    With `kept_as` (a model version; only at the leads' newest activity, by callers that hold the
    leads' rows), the behaviour features come from each lead's kept behaviour under that model
    (`behaviour.py`) with only the events written since folded in, and are kept again; a lead
    without one has it built from all its events."""
    leads, accounts, events = schema.leads, schema.accounts, schema.events
    conn = uow.connection
    keeping = kept_as is not None and at is None and recipe is not None
    out: list[Subject] = []
    model: ScoringModel | None = None
    for part in chunks(sorted(set(lead_ids)), CHUNK):
        query = (
            select(
                leads.c.id,
                leads.c.created_at,
                leads.c.last_event_at,
                leads.c.fit_score,
                leads.c.fit_grade,
                leads.c.persona,
                leads.c.engagement_state,
                *(leads.c[name] for name in (*LEAD_CATEGORIES, *LEAD_FLAGS)),
                leads.c.attributes,
                *(accounts.c[name].label(f"account_{name}") for name in (*ACCOUNT_CATEGORIES, *ACCOUNT_NUMBERS)),
            )
            .select_from(leads.outerjoin(accounts, leads.c.account_id == accounts.c.id))
            .where(leads.c.id.in_(part), leads.c.erased_at.is_(None))
            .order_by(leads.c.id)
        )
        rows = list(conn.execute(query))
        instants = {}
        for row in rows:
            newest = max(row.last_event_at or row.created_at, row.created_at)  # events may predate the lead
            instants[row.id] = (at or {}).get(row.id) or newest
        changes: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
        h = schema.stage_history
        for lead_id, at_, to_stage in conn.execute(
            select(h.c.lead_id, h.c.at, h.c.to_stage).where(h.c.lead_id.in_(part)).order_by(h.c.at, h.c.id)
        ):
            changes[lead_id].append((at_, to_stage))
        states: dict[int, tuple[int, Behaviour]] = {}
        if keeping:
            assert kept_as is not None
            states = {
                lead: state
                for lead, state in behaviour.kept(conn, list(instants), kept_as).items()
                if state[1].serves(instants[lead])
            }
        if states:
            assert recipe is not None
            since = number_pairs(
                conn, [(lead, through) for lead, (through, _) in sorted(states.items())], ("kept_lead", "kept_through")
            )
            for lead_id, event_id, kind, occurred, properties in conn.execute(
                select(events.c.lead_id, events.c.id, events.c.type, events.c.occurred_at, events.c.properties)
                .select_from(
                    since.join(events, (events.c.lead_id == since.c.kept_lead) & (events.c.id > since.c.kept_through))
                )
                .order_by(events.c.id)
            ):
                kept_behaviour = states[lead_id][1]
                kept_behaviour.add(recipe, kind, occurred, content_item(kind, properties or {}), properties)
                states[lead_id] = (event_id, kept_behaviour)
            # A new event dated after the lead's newest activity (an import's late event stored unscored):
            # the features leave it out, so this lead's are built from its events and not kept.
            odd = [lead for lead, (_, kept_behaviour) in states.items() if not kept_behaviour.serves(instants[lead])]
            for lead in odd:
                del states[lead]
            behaviour.drop(conn, odd)
        happened: dict[int, list[tuple[str, datetime, str | None, Mapping[str, Any] | None]]] = defaultdict(list)
        applied: dict[int, list[tuple[str, datetime, Any]]] = defaultdict(list)  # in application order
        throughs: dict[int, int] = {}
        every = [lead for lead in instants if lead not in states]
        if every:
            for lead_id, event_id, kind, occurred, properties in conn.execute(
                select(events.c.lead_id, events.c.id, events.c.type, events.c.occurred_at, events.c.properties)
                .where(events.c.lead_id.in_(every))
                .order_by(events.c.id)
            ):
                happened[lead_id].append((kind, occurred, content_item(kind, properties or {}), properties))
                applied[lead_id].append((kind, occurred, properties))
                throughs[lead_id] = event_id
        deals = deals_of(conn, part) if recipe is None or recipe.deals else {}
        for row in rows:
            m = row._mapping
            when = instants[m["id"]]
            mine = applied.get(m["id"], [])
            if any(occurred > when for _, occurred, _ in mine):  # a past instant: what was known then
                model = model or uow.active_model()
                engagement = engagement_at(model, mine, when)
            else:
                engagement = EngagementState.from_json(m["engagement_state"]).value_at(when.timestamp())
            # The stage at `when`: the last change at or before it (the history is in time order).
            reached = [change for change in changes.get(m["id"], []) if change[0] <= when]
            entered, stage = reached[-1] if reached else (None, None)
            subject = Subject(
                lead_id=m["id"],
                at=when,
                created_at=m["created_at"],
                profile={
                    **{name: m[name] for name in (*LEAD_CATEGORIES, *LEAD_FLAGS)},
                    "attributes": m["attributes"] or {},
                    **{f"account_{n}": m[f"account_{n}"] for n in (*ACCOUNT_CATEGORIES, *ACCOUNT_NUMBERS)},
                },
                fit_score=m["fit_score"],
                fit_grade=m["fit_grade"],
                persona=m["persona"],
                engagement_score=engagement,
                events=happened.get(m["id"], []),
                stage=stage,
                stage_entered=entered,
                deals=deals.get(m["id"], []),
            )
            if keeping and recipe is not None:
                if m["id"] not in states and not any(occurred > when for _, occurred, _ in mine):
                    built = Behaviour()  # from every event of the lead (none after `when`)
                    for kind, occurred, item, properties in subject.events:
                        built.add(recipe, kind, occurred, item, properties)
                    states[m["id"]] = (throughs.get(m["id"], 0), built)
                if m["id"] in states:
                    subject.behaviour = states[m["id"]][1]
                    subject.behaviour.prune(recipe, when)
            out.append(subject)
        if keeping:
            assert kept_as is not None
            behaviour.keep(conn, kept_as, states)
    if recipe is None or recipe.account:
        # After every lead's behaviour is kept: a colleague touched by the same change counts its new events.
        for part in chunks(out, CHUNK):
            found = rollups_of(
                conn, {s.lead_id: s.at for s in part}, recipe.recent_days if recipe else RECENT_DAYS,
                kept_as=kept_as if keeping else None,
            )  # fmt: skip
            for subject in part:
                subject.rollups = found.get(subject.lead_id)
    return out


def refresh(
    uow: UnitOfWork, lead_ids: Iterable[int], found: Predictor | None = None, *, keep: bool = False
) -> dict[int, tuple[float, datetime]]:
    """Compute and store the active model's probability of the leads; returns it per lead. With
    `keep` (a caller that holds the leads' rows: a batch's reaction), from and into their kept
    behaviour (`subjects`)."""
    found = found or active_predictor(uow)
    if found is None:
        return {}
    table = schema.leads
    out: dict[int, tuple[float, datetime]] = {}
    for part in chunks(sorted(set(lead_ids)), CHUNK):
        people = subjects(uow, part, recipe=found.recipe, kept_as=found.version if keep else None)
        values = found.probabilities(people)
        rows: list[dict[str, Any]] = [
            {"b_id": s.lead_id, "probability": float(p), "probability_at": s.at, "predictive_version": found.version}
            for s, p in zip(people, values, strict=True)
        ]
        if rows:
            uow.connection.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(
                    probability=bindparam("probability"),
                    probability_at=bindparam("probability_at"),
                    predictive_version=bindparam("predictive_version"),
                ),
                rows,
            )
        out.update({row["b_id"]: (row["probability"], row["probability_at"]) for row in rows})
    return out


def refresh_all(workspace: Workspace, *, chunk: int = 2000, progress: Callable[[int, int], None] | None = None) -> int:
    """Every lead's probability under the active model (none active: every probability cleared)."""
    pipeline = of(workspace)  # refused before anything is written when the workspace has none
    table = schema.leads
    with workspace.unit_of_work() as uow:
        if active_predictor(uow) is None:
            uow.connection.execute(update(table).values(probability=None, probability_at=None, predictive_version=None))
            ids = []
        else:
            ids = list(
                uow.connection.execute(
                    select(table.c.id).where(table.c.erased_at.is_(None)).order_by(table.c.id)
                ).scalars()
            )
    done = 0
    for part in chunks(ids, chunk):
        with workspace.unit_of_work() as uow:
            # Their rows held (as a batch holds them), each lead's behaviour is kept for the batches to come.
            uow.connection.execute(
                select(table.c.id).where(table.c.id.in_(part)).order_by(table.c.id).with_for_update()
            )
            refresh(uow, part, keep=True)
        done += len(part)
        if progress:
            progress(done, len(ids))
    pipeline.field_refreshed(workspace, "probability")  # what tests the probability, tested again
    return done


def react(run: Run) -> None:
    """Reaction `probability`: after a change is written (events, profiles, a rescore, a stage
    move), the touched leads' probability at their newest activity and, when the stage policy has
    probability thresholds, the policy judged again with it: at that instant, or at the change's
    `judge_at` (a rescore's `now`); not at all when the change says `judge=False` (a person's or a
    timer's decision)."""
    uow, changed = run.uow, run.changed
    touched = {id(r): r for r in changed.records if r.id is not None}
    # Every lead an event was written for, scored or not (an import stores late events unscored):
    # its kept behaviour takes them in this transaction, as its colleagues' roll-ups count on.
    written = {row["lead_id"] for row in changed.events} - {r.id for r in touched.values()}
    if not touched and not written:
        return
    version = run.configured.predictive
    if version is None:
        return
    found = predictor(uow, version)
    ids = [r.id for r in touched.values() if r.id is not None] + sorted(written)
    computed = refresh(uow, ids, found, keep=True)
    batch = run.batch
    judge = changed.judge and batch is not None and bool(batch.model.policy.mql_probability)
    moved = False
    for record in touched.values():
        if record.id not in computed:  # erased
            continue
        probability, at = computed[record.id]
        record.state.probability = probability
        if judge and batch is not None:
            moves = batch.evaluator.sweep(
                record.state, at.timestamp() if changed.judge_at is None else changed.judge_at
            )
            if moves:
                batch.record_moves(record, moves)
                moved = True
    if moved:
        run.write_again()


def explain_lead(uow: UnitOfWork, lead_id: int, row: Row[Any] | None = None) -> dict[str, Any] | None:
    """The lead's stored probability with its strongest contributions either way, recomputed at
    the instant it was computed for (so they explain that very number); None without a model.
    `row`: the lead's row where the caller has read it."""
    stored: Any = row
    if stored is None:
        stored = uow.connection.execute(
            select(schema.leads.c.probability, schema.leads.c.probability_at, schema.leads.c.predictive_version).where(
                schema.leads.c.id == lead_id
            )
        ).first()
    if stored is None or stored.predictive_version is None or stored.probability is None:
        return None
    found = predictor(uow, stored.predictive_version)
    [explanation] = found.explain(subjects(uow, [lead_id], {lead_id: stored.probability_at}, found.recipe))
    return {"model_version": found.version, "at": stored.probability_at.isoformat(), **explanation.as_dict()}


def count_scored(uow: UnitOfWork) -> int:
    table = schema.leads
    return int(uow.connection.execute(select(func.count()).where(table.c.probability.is_not(None))).scalar() or 0)


def feature_importance(uow: UnitOfWork, version: str, *, sample: int = 300, top: int = 15) -> list[dict[str, Any]]:
    """What a model's probabilities rest on: each feature's mean absolute contribution (log-odds)
    over the `sample` most recently active leads as of now, strongest first, with its share of the
    total. Model-agnostic: the same contributions the lead page explains."""
    leads = schema.leads
    ids = list(
        uow.connection.execute(
            select(leads.c.id)
            .where(leads.c.erased_at.is_(None))
            .order_by(leads.c.last_event_at.desc().nulls_last(), leads.c.id.desc())
            .limit(sample)
        ).scalars()
    )
    if not ids:
        return []
    found = predictor(uow, version)
    now = utcnow()
    people = subjects(uow, ids, dict.fromkeys(ids, now), found.recipe)
    weights: dict[str, float] = {}
    for explanation in found.explain(people):
        for part in explanation.contributions:
            weights[part.feature] = weights.get(part.feature, 0.0) + abs(part.log_odds)
    total = sum(weights.values()) or 1.0
    ranked = sorted(weights.items(), key=lambda item: -item[1])[:top]
    return [
        {"feature": name, "mean_abs_log_odds": round(weight / len(people), 4), "share": round(weight / total, 4)}
        for name, weight in ranked
    ]
