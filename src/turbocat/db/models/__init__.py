"""All table models. Importing this package registers every table on ``Base.metadata``."""

from turbocat.db.models.identity import (
    ApiKeyRow,
    AuditLogRow,
    LoginFailureRow,
    MembershipRow,
    OrganizationRow,
    UserRow,
    UserSessionRow,
)

__all__ = [
    "ApiKeyRow",
    "AuditLogRow",
    "LoginFailureRow",
    "MembershipRow",
    "OrganizationRow",
    "UserRow",
    "UserSessionRow",
]
