"""What a process tells its operator: Prometheus metrics, a request id on every request, and
logs as JSON lines when asked (`QUALIFY_LOG_FORMAT=json`). docs/operations.md lists them all.

The counters and histograms live in this process's `REGISTRY`; the queues are read from the
store when `/metrics` is scraped (`StoreCollector`). With several server processes, point
`PROMETHEUS_MULTIPROC_DIR` at an empty folder shared by them so that a scrape adds them up.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qualify.service.reading.operations import backlog
from qualify.service.unit_of_work import Workspace, utcnow

REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
EVENTS = Counter(
    "qualify_events", "Events sent to POST /v1/events, by what became of them", ["status"], registry=REGISTRY
)
INGEST_SECONDS = Histogram(
    "qualify_ingest_seconds",
    "Time to answer POST /v1/events, from the request to the committed answer",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
WORKER_PASS_SECONDS = Histogram(
    "qualify_worker_pass_seconds",
    "Time of one worker pass (history rebuilds, decay, SLA, segments, workflows, email, webhooks)",
    buckets=(*LATENCY_BUCKETS, 30.0, 60.0, 300.0),
    registry=REGISTRY,
)
WORKER_PASSES = Counter("qualify_worker_passes", "Worker passes, by outcome", ["outcome"], registry=REGISTRY)


class StoreCollector(Collector):
    """The queues, dead letters and overdue MQLs, read from the store at each scrape."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.workspace.unit_of_work(read_only=True) as uow:
            now = backlog(uow, utcnow())
        gauges = (
            ("qualify_webhook_outbox", "Webhook deliveries waiting to be sent", now.webhook_outbox),
            ("qualify_webhook_dead_letters", "Webhook deliveries that ran out of tries", now.webhook_dead),
            ("qualify_email_queue", "Emails waiting to be sent", now.email_queue),
            ("qualify_email_failed", "Emails that could not be sent", now.email_failed),
            ("qualify_sla_overdue_mqls", "MQLs still waiting for sales past their SLA due time", now.sla_overdue),
            ("qualify_accounts_pending", "Accounts left to the worker, not kept yet", now.accounts_pending),
            (
                "qualify_accounts_pending_oldest_seconds",
                "How long the oldest account left to the worker has waited",
                now.accounts_pending_seconds,
            ),
        )
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        stages = GaugeMetricFamily("qualify_leads", "Leads by stage now", labels=["stage"])
        for stage, count in now.leads_by_stage.items():
            stages.add_metric([stage], count)
        yield stages


def exposition(workspace: Workspace) -> bytes:
    """Every metric in Prometheus' text format: this process's (or, with PROMETHEUS_MULTIPROC_DIR,
    every server process's) counters and histograms, and the store's queues now."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Own())
    registry.register(StoreCollector(workspace))
    return generate_latest(registry)


class _Own(Collector):
    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


def serve_metrics(port: int) -> None:
    """This process's metrics over HTTP on 127.0.0.1:`port`, from a thread of its own (the worker's)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr="127.0.0.1", registry=REGISTRY)


# --- request ids and JSON logs --------------------------------------------------------------------

REQUEST_ID: ContextVar[str | None] = ContextVar("qualify_request_id", default=None)
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("qualify.access")
error_log = logging.getLogger("qualify.errors")


class RequestIds:
    """Every request gets an id: the caller's `X-Request-ID` when it is a plain token (at most 128
    letters, digits, `.`, `_`, `:`, `-`), else a new one. It is sent back in `X-Request-ID`, set on
    every log line written while the request runs, and the request is logged once it is answered
    (method, path, status, milliseconds)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _GIVEN_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 0  # none sent yet

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if status:  # the answer had begun (a download failing midway): the connection is cut
                error_log.error(
                    "%s %s failed mid-answer", scope.get("method", ""), _escaped_path(scope), exc_info=error
                )
                raise
            # A bug (500) or a store that cannot write (503): answered here, with the id, rather than
            # by the server's last resort outside this middleware, and logged with the id.
            from qualify.entrypoints.problems import unexpected

            error_log.error("%s %s failed", scope.get("method", ""), _escaped_path(scope), exc_info=error)
            await unexpected(error)(scope, receive, send_with_id)
        finally:
            path = _escaped_path(scope)
            method = str(scope.get("method", ""))
            access_log.info(
                "%s %s %d",
                method,
                path,
                status,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            REQUEST_ID.reset(token)


def _escaped_path(scope: Scope) -> str:
    """The path as sent, its control characters escaped: a %0A in it cannot start a line of its own."""
    return str(scope.get("path", "")).encode("unicode_escape").decode("ascii")


# Fields of a log record that are Python's own; any other set with `extra=` goes into the line
# (uvicorn's `color_message`, the message with terminal colours, is left out).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


class JsonLines(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the request id when a
    request is being answered, the fields given with `extra=`, and the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        # The line's own fields first: the standard ones are written over them, never the other way.
        line: dict[str, Any] = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        line.update(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )
        line.pop("request_id", None)
        if (request_id := REQUEST_ID.get()) is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def log_config(log_format: str, level: str) -> dict[str, Any]:
    """uvicorn's `log_config`: Qualify's and uvicorn's loggers as JSON lines on standard error, or
    as text; uvicorn's own access log is off (RequestIds logs each request, with its id)."""
    formatter = (
        {"()": JsonLines} if log_format == "json" else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    loud = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "qualify": {"handlers": ["default"], "level": loud, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": loud, "propagate": False},
            "uvicorn.error": {"level": loud},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
