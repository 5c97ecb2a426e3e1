"""Who may do what: the roles of API keys (and later of dashboard users) and their permissions."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    INGEST = "events:write"
    READ_LEADS = "leads:read"
    WRITE_LEADS = "leads:write"
    STAGE_ACTIONS = "stages:write"
    READ_MODELS = "models:read"
    WRITE_MODELS = "models:write"
    MANAGE_KEYS = "keys:manage"
    MANAGE_WEBHOOKS = "webhooks:manage"
    READ_AUDIT = "audit:read"
    ERASE = "leads:erase"
    AUTOMATION = "automation:write"  # segments, workflows, email templates
    READ_METRICS = "metrics:read"  # GET /metrics: counts and queues, no one's data


class Role(StrEnum):
    ADMIN = "admin"
    MARKETING = "marketing"
    SALES = "sales"
    INGEST = "ingest"
    MONITOR = "monitor"  # a Prometheus scraper: metrics, nothing else


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MARKETING: frozenset(
        {
            Permission.INGEST,
            Permission.READ_LEADS,
            Permission.WRITE_LEADS,
            Permission.READ_MODELS,
            Permission.AUTOMATION,
        }
    ),
    Role.SALES: frozenset({Permission.READ_LEADS, Permission.STAGE_ACTIONS}),
    Role.INGEST: frozenset({Permission.INGEST}),
    Role.MONITOR: frozenset({Permission.READ_METRICS}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def roles_with(permission: Permission) -> list[Role]:
    return [role for role in Role if allows(role, permission)]
