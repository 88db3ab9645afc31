"""Who may do what: membership roles, API key scopes, and the principal a request acts as."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import assert_never

from turbocat.domain.enums import MemberRole, SystemRole
from turbocat.domain.errors import MissingScope, PermissionDenied

_RANK = {MemberRole.VIEWER: 1, MemberRole.MEMBER: 2, MemberRole.ADMIN: 3, MemberRole.OWNER: 4}

RESOURCES = (
    "organizations",
    "members",
    "api_keys",
    "audit_logs",
    "users",
    "projects",
    "agents",
    "workflows",
    "executions",
    "components",
    "prompts",
    "integrations",
    "templates",
    "task_queues",
    "schedules",
    "webhooks",
    "deployments",
    "usage",
    "events",
)
"""Each resource has a ``:read`` and a ``:write`` scope; ``*`` grants every scope."""

ALL_SCOPES = frozenset(f"{r}:{a}" for r in RESOURCES for a in ("read", "write")) | {"*"}


def rank(role: MemberRole) -> int:
    return _RANK[role]


def role_at_least(role: MemberRole, minimum: MemberRole) -> bool:
    return _RANK[role] >= _RANK[minimum]


def invalid_scopes(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s not in ALL_SCOPES]


def scope_grants(granted: frozenset[str], needed: str) -> bool:
    if "*" in granted or needed in granted:
        return True
    # write implies read on the same resource
    resource, _, action = needed.partition(":")
    return action == "read" and f"{resource}:write" in granted


@dataclass(frozen=True)
class Principal:
    """The user (directly, or through one of their API keys) a request acts for, in one org."""

    user_id: uuid.UUID
    organization_id: uuid.UUID
    role: MemberRole
    system_role: SystemRole = SystemRole.USER
    api_key_id: uuid.UUID | None = None
    scopes: frozenset[str] | None = None
    """None for a login session (all scopes); the key's scopes for an API key."""
    session_id: uuid.UUID | None = None

    @property
    def is_api_key(self) -> bool:
        return self.api_key_id is not None

    def require(self, scope: str, minimum: MemberRole) -> None:
        """Refuse unless the key has ``scope`` and the member's role is at least ``minimum``."""
        if self.scopes is not None and not scope_grants(self.scopes, scope):
            raise MissingScope(scope)
        if not role_at_least(self.role, minimum):
            raise PermissionDenied(
                f"this action needs the {minimum.value} role or higher; you are {self.role.value}"
            )

    def require_access(self, resource: str, *, write: bool = False) -> None:
        """The usual rule for content: viewers read ``resource``, members and up write it."""
        if write:
            self.require(f"{resource}:write", MemberRole.MEMBER)
        else:
            self.require(f"{resource}:read", MemberRole.VIEWER)

    def can_grant_scopes(self, scopes: list[str]) -> list[str]:
        """Scopes among ``scopes`` that this principal may not hand to a new key."""
        if self.scopes is None:
            return []
        return [s for s in scopes if not scope_grants(self.scopes, s)]


def permission_for(action: str) -> MemberRole:
    """Least role for an action on content: viewers read, members write."""
    match action:
        case "read":
            return MemberRole.VIEWER
        case "write":
            return MemberRole.MEMBER
        case _:
            raise ValueError(action)


def assignable_roles(actor: MemberRole) -> set[MemberRole]:
    """Roles an actor may give to others: owners any, admins up to admin, others none."""
    match actor:
        case MemberRole.OWNER:
            return set(MemberRole)
        case MemberRole.ADMIN:
            return {MemberRole.ADMIN, MemberRole.MEMBER, MemberRole.VIEWER}
        case MemberRole.MEMBER | MemberRole.VIEWER:
            return set()
        case _ as unreachable:
            assert_never(unreachable)
