"""Sign-up, login, logout and turning a bearer secret into an identity."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.config import AuthSettings
from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.models import (
    ApiKeyRow,
    LoginFailureRow,
    MembershipRow,
    OrganizationRow,
    UserRow,
    UserSessionRow,
)
from turbocat.domain import credentials
from turbocat.domain.enums import SystemRole
from turbocat.domain.errors import (
    AuthenticationFailed,
    Conflict,
    FeatureDisabled,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)
from turbocat.security.passwords import PasswordHasher
from turbocat.services import audit
from turbocat.services.organizations import create_organization_row

MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: a user through a login session or through an API key."""

    user: UserRow
    session_id: uuid.UUID | None = None
    api_key: ApiKeyRow | None = None


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: dt.datetime
    session: UserSessionRow


@dataclass(frozen=True)
class SignupResult:
    user: UserRow
    organization: OrganizationRow
    token: IssuedToken


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_password(password: str, settings: AuthSettings) -> None:
    if len(password) < settings.password_min_length:
        raise ValidationFailed.field(
            ("body", "password"),
            f"password must be at least {settings.password_min_length} characters",
            "too_short",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed.field(
            ("body", "password"), f"password must be at most {MAX_PASSWORD_LENGTH} characters"
        )


async def find_user_by_email(session: AsyncSession, email: str) -> UserRow | None:
    stmt = select(UserRow).where(func.lower(UserRow.email) == normalize_email(email))
    return (
        await session.execute(stmt.execution_options(include_deleted=True))
    ).scalar_one_or_none()


async def create_user(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    settings: AuthSettings,
    email: str,
    password: str | None,
    full_name: str | None,
    now: dt.datetime,
    system_role: SystemRole = SystemRole.USER,
) -> UserRow:
    if password is not None:
        check_password(password, settings)
    if await find_user_by_email(session, email) is not None:
        raise Conflict(f"an account with the email {email.strip()!r} already exists")
    user = UserRow(
        email=email.strip(),
        password_hash=await hasher.hash(password) if password is not None else None,
        full_name=full_name,
        role=system_role,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError as exc:  # a concurrent sign-up with the same email
        raise Conflict(f"an account with the email {email.strip()!r} already exists") from exc
    return user


async def issue_session(
    session: AsyncSession,
    user: UserRow,
    settings: AuthSettings,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> IssuedToken:
    token = credentials.make_session_token(secrets.token_bytes(32))
    expires_at = now + dt.timedelta(seconds=settings.session_ttl_seconds)
    row = UserSessionRow(
        user_id=user.id,
        token_hash=credentials.secret_hash(token),
        expires_at=expires_at,
        ip_address=meta.ip_address,
        user_agent=meta.user_agent,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return IssuedToken(token, expires_at, row)


async def signup(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    settings: AuthSettings,
    email: str,
    password: str,
    organization_name: str,
    full_name: str | None,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> SignupResult:
    """Create a user, their organization (starter plan) and owner membership, and log in."""
    if not settings.signup_enabled:
        raise FeatureDisabled("sign-up is disabled on this server; ask an administrator")
    user = await create_user(
        session,
        hasher=hasher,
        settings=settings,
        email=email,
        password=password,
        full_name=full_name,
        now=now,
    )
    organization = await create_organization_row(
        session, name=organization_name, owner=user, now=now, meta=meta
    )
    token = await issue_session(session, user, settings, now, meta)
    user.last_login_at = now
    audit.record(
        session,
        organization_id=organization.id,
        actor=audit.Actor(user.id),
        action="user.signup",
        resource_type="user",
        resource_id=user.id,
        now=now,
        meta=meta,
        after={"email": user.email, "full_name": user.full_name},
    )
    return SignupResult(user, organization, token)


async def recent_failures(
    session: AsyncSession, email: str, settings: AuthSettings, now: dt.datetime
) -> list[dt.datetime]:
    since = now - dt.timedelta(seconds=settings.login_failure_window_seconds)
    stmt = (
        select(LoginFailureRow.created_at)
        .where(LoginFailureRow.email == normalize_email(email), LoginFailureRow.created_at > since)
        .order_by(LoginFailureRow.created_at)
    )
    return list((await session.execute(stmt)).scalars())


@dataclass(frozen=True)
class LoginOutcome:
    """Either a token or the reason it was refused; failures must still be committed."""

    token: IssuedToken | None = None
    user: UserRow | None = None
    refusal: str | None = None


async def login(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    settings: AuthSettings,
    email: str,
    password: str,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> LoginOutcome:
    failures = await recent_failures(session, email, settings, now)
    if len(failures) >= settings.login_max_failures:
        window = dt.timedelta(seconds=settings.login_failure_window_seconds)
        retry = failures[-settings.login_max_failures] + window - now
        raise RateLimited(
            "too many failed logins for this account; try again later",
            int(retry.total_seconds()) + 1,
        )
    user = await find_user_by_email(session, email)
    # Verify even for unknown users so that timing does not reveal which emails exist.
    valid = await hasher.verify(
        user.password_hash if user else None, password[:MAX_PASSWORD_LENGTH]
    )
    if user is None or not valid or not user.is_active or user.deleted_at is not None:
        session.add(
            LoginFailureRow(
                email=normalize_email(email), ip_address=meta.ip_address, created_at=now
            )
        )
        return LoginOutcome(refusal="wrong email or password, or the account is disabled")
    if user.password_hash and hasher.needs_rehash(user.password_hash):
        user.password_hash = await hasher.hash(password)
    await session.execute(
        delete(LoginFailureRow).where(LoginFailureRow.email == normalize_email(email))
    )
    user.last_login_at = now
    return LoginOutcome(token=await issue_session(session, user, settings, now, meta), user=user)


async def logout(session: AsyncSession, session_id: uuid.UUID, now: dt.datetime) -> None:
    row = await session.get(UserSessionRow, session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now


async def authenticate(session: AsyncSession, secret: str, now: dt.datetime) -> Identity:
    """Resolve a bearer secret (login token or API key) to an identity, or refuse."""
    if credentials.is_well_formed_api_key(secret):
        return await _authenticate_api_key(session, secret, now)
    if credentials.is_well_formed_session_token(secret):
        return await _authenticate_session(session, secret, now)
    raise AuthenticationFailed("the bearer token is not a turbocat token or API key")


def _check_user(user: UserRow | None) -> UserRow:
    if user is None or not user.is_active or user.deleted_at is not None:
        raise AuthenticationFailed("the account behind this token is disabled")
    return user


async def _authenticate_session(session: AsyncSession, token: str, now: dt.datetime) -> Identity:
    digest = credentials.secret_hash(token)
    stmt = select(UserSessionRow).where(UserSessionRow.token_hash == digest)
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None or not secrets.compare_digest(row.token_hash, digest):
        raise AuthenticationFailed("the token is unknown")
    if row.revoked_at is not None:
        raise AuthenticationFailed("the token was revoked (logged out)")
    if row.expires_at <= now:
        raise AuthenticationFailed("the token has expired; log in again")
    user = _check_user(await session.get(UserRow, row.user_id))
    await tenancy.enter(session, TenantContext(user_id=user.id))
    return Identity(user=user, session_id=row.id)


async def _authenticate_api_key(session: AsyncSession, key: str, now: dt.datetime) -> Identity:
    digest = credentials.secret_hash(key)
    await tenancy.enter(session, TenantContext(api_key_hash=digest))
    found = (await session.execute(_KEY_AND_USER, {"digest": digest})).one_or_none()
    row: ApiKeyRow | None = None if found is None else found[0]
    owner: UserRow | None = None if found is None else found[1]
    if row is None or not secrets.compare_digest(row.key_hash, digest):
        raise AuthenticationFailed("the API key is unknown")
    if not row.is_active or row.deleted_at is not None:
        raise AuthenticationFailed("the API key was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationFailed("the API key has expired")
    user = _check_user(owner)
    await tenancy.enter(
        session, TenantContext(organization_id=row.organization_id, user_id=user.id)
    )
    return Identity(user=user, api_key=row)


async def membership_for(
    session: AsyncSession, user_id: uuid.UUID, organization_id: uuid.UUID | None
) -> MembershipRow:
    """The caller's membership in the requested organization, or in their oldest one."""
    if organization_id is None:
        found = await session.execute(_OLDEST_MEMBERSHIP, {"user_id": user_id})
    else:
        params = {"user_id": user_id, "organization_id": organization_id}
        found = await session.execute(_MEMBERSHIP_IN, params)
    row = found.scalar_one_or_none()
    if row is None:
        if organization_id is not None:
            raise PermissionDenied("you are not a member of that organization")
        raise PermissionDenied(
            "you are not a member of any organization; create one with POST /api/v1/organizations"
        )
    return row


# Built once: every authenticated request runs them (building cost more than running).
_KEY_AND_USER = (  # the key and its user in one round trip
    select(ApiKeyRow, UserRow)
    .outerjoin(UserRow, UserRow.id == ApiKeyRow.user_id)
    .where(ApiKeyRow.key_hash == bindparam("digest"))
    .execution_options(include_deleted=True)
)
_OLDEST_MEMBERSHIP = (
    select(MembershipRow)
    .where(MembershipRow.user_id == bindparam("user_id"))
    .order_by(MembershipRow.created_at, MembershipRow.id)
    .limit(1)
)
_MEMBERSHIP_IN = _OLDEST_MEMBERSHIP.where(
    MembershipRow.organization_id == bindparam("organization_id")
)
