"""The HTTP API fuzzed from its own OpenAPI document (schemathesis), for every route and every role.

For each operation, requests generated from the schema are sent with an admin, marketing, sales
and ingest key and with no key. Every answer must be no server error, a documented status code,
the documented content type, and a body and headers that match the response schema. Whether a
schema-valid request is accepted is not checked: business rules (a lead that does not exist, a
model that does not validate) answer some of them with a documented 404 or 422.

Bounded in time: a fixed number of examples per operation for the admin, who reaches every
handler's own code, and a quarter of them (at least two) for each other role and for no key, whose
requests mostly end at the access check; derandomised so that CI sees the same requests every run.
More with QUALIFY_FUZZ_EXAMPLES=N.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from qualify.domain.access import Role
from qualify.entrypoints.api.app import create_app
from qualify.service.unit_of_work import Workspace
from tests.conftest import key_for
from tests.dashboard_world import world

EXAMPLES = int(os.environ.get("QUALIFY_FUZZ_EXAMPLES", "10"))
OTHER_ROLES_EXAMPLES = max(2, EXAMPLES // 4)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture
def keys(workspace: Workspace) -> dict[str, dict[str, str]]:
    world(workspace, leads=6)  # leads, events, users: something for the reads to find
    with workspace.unit_of_work() as uow:
        made = {role.value: key_for(uow, role.value, f"fuzz-{role.value}") for role in Role}
    return {role: {"Authorization": f"Bearer {token}"} for role, token in made.items()} | {"nobody": {}}


@pytest.mark.slow
def test_every_route_with_every_role_answers_as_documented(workspace: Workspace, keys: dict[str, Any]) -> None:
    app = create_app(workspace=workspace)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    started, failures = time.monotonic(), []
    sent = [0]
    for operation in operations:
        for role, headers in keys.items():
            try:
                _fuzz(operation, headers, sent, EXAMPLES if role == Role.ADMIN.value else OTHER_ROLES_EXAMPLES)()
            except BaseException as error:  # schemathesis reports a group of failures
                if isinstance(error, (KeyboardInterrupt, SystemExit)):
                    raise
                failures.append(f"{operation.label} as {role}: {str(error)[:600]}")
    print(f"{len(operations)} operations × {len(keys)} roles, {sent[0]} requests, {time.monotonic() - started:.0f} s")
    assert not failures, "\n\n".join(failures)


def _fuzz(operation: Any, headers: dict[str, str], sent: list[int], examples: int) -> Any:
    @settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        sent[0] += 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    return check
