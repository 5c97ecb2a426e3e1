"""Dependencies of the routes: the workspace, and the caller's identity checked against a permission."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from qualify.domain.access import Permission, allows, roles_with
from qualify.domain.errors import InvalidInput
from qualify.entrypoints.problems import Forbidden
from qualify.service.admin.api_keys import AuthenticationFailed, Identity, authenticate, touch_key
from qualify.service.unit_of_work import Workspace

_bearer = HTTPBearer(auto_error=False, description="An API key made with `qualify keys create`: `Bearer qk_…`")


def get_workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


def require(permission: Permission) -> Callable[..., Identity]:
    """A dependency that admits a key whose role has `permission` (401 without a key, 403 without the right)."""

    def check(
        workspace: WorkspaceDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        x_api_key: Annotated[str | None, Header(description="The API key, if not given as a bearer token.")] = None,
    ) -> Identity:
        token = credentials.credentials if credentials is not None else x_api_key
        if not token:
            raise AuthenticationFailed("send an API key: Authorization: Bearer qk_…")
        return authorise(workspace, token, permission)

    return check


def authorise(workspace: Workspace, token: str, permission: Permission) -> Identity:
    """The key `token` if its role has `permission` (`AuthenticationFailed`, else `Forbidden`)."""
    with workspace.unit_of_work(read_only=True) as uow:
        identity = authenticate(uow, token)
    if identity.stale:
        with workspace.unit_of_work() as uow:
            touch_key(uow, identity.key_id)
    if not allows(identity.role, permission):
        allowed = ", ".join(r.value for r in roles_with(permission))
        raise Forbidden(f"role {identity.role.value} may not {permission.value}; this needs one of: {allowed}")
    return identity


def acting(caller: Identity, claimed: str | None) -> str:
    """Who an action is recorded as: a key bound to a user acts as that user (naming anyone
    else is refused); another key acts as the `by` it sends, else as its own name."""
    claimed = claimed.strip() if claimed else None
    if caller.user is not None and claimed and claimed != caller.user:
        raise Forbidden(f"this key acts as {caller.user}; it cannot record an action by {claimed!r}")
    return caller.user or claimed or caller.name


def permission_doc(permission: Permission) -> dict[str, Any]:
    """OpenAPI extension naming the permission a route needs (and the roles that have it)."""
    return {"x-permission": permission.value, "x-roles": [r.value for r in roles_with(permission)]}


# The caller, admitted for one permission: one alias per permission, used as the type of a parameter.
Ingester = Annotated[Identity, Depends(require(Permission.INGEST))]
LeadReader = Annotated[Identity, Depends(require(Permission.READ_LEADS))]
LeadWriter = Annotated[Identity, Depends(require(Permission.WRITE_LEADS))]
StageActor = Annotated[Identity, Depends(require(Permission.STAGE_ACTIONS))]
ModelReader = Annotated[Identity, Depends(require(Permission.READ_MODELS))]
ModelWriter = Annotated[Identity, Depends(require(Permission.WRITE_MODELS))]
KeyManager = Annotated[Identity, Depends(require(Permission.MANAGE_KEYS))]
AuditReader = Annotated[Identity, Depends(require(Permission.READ_AUDIT))]
Eraser = Annotated[Identity, Depends(require(Permission.ERASE))]
WebhookManager = Annotated[Identity, Depends(require(Permission.MANAGE_WEBHOOKS))]
MetricsReader = Annotated[Identity, Depends(require(Permission.READ_METRICS))]
Automator = Annotated[Identity, Depends(require(Permission.AUTOMATION))]


# Routes anyone may call (tracking pixel, click redirect, unsubscribe, web tracking): documented as such.
PUBLIC_DOC: dict[str, Any] = {"x-public": True}


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (422, naming it and the ones it takes):
    a misspelt filter (`?stgae=mql`) would otherwise be ignored and answer every lead."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if route is None or getattr(route, "dependant", None) is None:
        return
    taken = _query_names(route)
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        expected = f"; it takes: {', '.join(sorted(taken))}" if taken else "; it takes none"
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}{expected}", field=unknown[0])


def _query_names(route: Any) -> frozenset[str]:
    """The query parameters a route takes, its own and its dependencies' (read once per route and
    kept on it: routes compare by path and methods, so they cannot key a cache)."""
    found: frozenset[str] | None = getattr(route, "_qualify_query_names", None)
    if found is None:
        taken: set[str] = set()
        waiting = [route.dependant]
        while waiting:
            one = waiting.pop()
            taken.update(param.alias for param in getattr(one, "query_params", ()))
            waiting.extend(getattr(one, "dependencies", ()))
        found = route._qualify_query_names = frozenset(taken)
    return found
