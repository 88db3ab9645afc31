"""Operator verbs for users, organizations, API keys and system task queues; they work without
the server running.

They connect as the database URL's own role (on PostgreSQL usually the owner), and state the
tenant for every change they make inside an organization.
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import typer
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.bootstrap import AppContext
from turbocat.cli.common import console, fail, run, settings_or_exit
from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.models import ApiKeyRow, MembershipRow, OrganizationRow, UserRow
from turbocat.domain import queues
from turbocat.domain.access import Principal
from turbocat.domain.enums import MemberRole, Plan, SystemRole
from turbocat.domain.errors import NotFound
from turbocat.services import api_keys, audit, auth, organizations, task_queues, users

users_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
orgs_app = typer.Typer(help="Manage organizations and their members.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
queues_app = typer.Typer(
    help="Manage system task queues (shared by every organization).", no_args_is_help=True
)

CLI_META = audit.RequestMeta(user_agent="turbocat-cli")


@asynccontextmanager
async def _context() -> AsyncIterator[AppContext]:
    ctx = AppContext.build(settings_or_exit(), app_role=False)
    try:
        yield ctx
    finally:
        await ctx.db.dispose()


async def _user(session: AsyncSession, email: str) -> UserRow:
    user = await auth.find_user_by_email(session, email)
    if user is None:
        raise NotFound("user with email", email)
    return user


async def _org(session: AsyncSession, ref: str) -> OrganizationRow:
    stmt = select(OrganizationRow).where(
        (OrganizationRow.slug == ref) | (OrganizationRow.name == ref)
    )
    org = (await session.execute(stmt)).scalars().first()
    if org is None:
        raise NotFound("organization", ref)
    await tenancy.enter(session, TenantContext(organization_id=org.id))
    return org


async def _principal(session: AsyncSession, org: OrganizationRow, user: UserRow) -> Principal:
    stmt = select(MembershipRow).where(
        MembershipRow.organization_id == org.id, MembershipRow.user_id == user.id
    )
    membership = (await session.execute(stmt)).scalar_one_or_none()
    if membership is None:
        raise NotFound(f"membership of {user.email} in", org.slug)
    return Principal(user_id=user.id, organization_id=org.id, role=membership.role)


def _password(given: str | None) -> str:
    if given is not None:
        return given
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise fail("the passwords differ")
    return first


# ---- users ----------------------------------------------------------------------------------


@users_app.command("create")
def users_create(
    email: str = typer.Option(..., help="Email address (unique, case-insensitive)"),
    password: str = typer.Option(None, help="Password (prompted when omitted)"),
    full_name: str = typer.Option(None, help="Display name"),
    organization: str = typer.Option(None, help="Create this organization with the user as owner"),
    admin: bool = typer.Option(False, "--admin", help="Make the user a system administrator"),
) -> None:
    """Create a user (optionally with a new organization they own)."""
    secret = _password(password)

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            now = ctx.clock()
            user = await auth.create_user(
                session,
                hasher=ctx.hasher,
                settings=ctx.settings.auth,
                email=email,
                password=secret,
                full_name=full_name,
                now=now,
                system_role=SystemRole.ADMIN if admin else SystemRole.USER,
            )
            org = None
            if organization:
                org = await organizations.create_organization_row(
                    session, name=organization, owner=user, now=now, meta=CLI_META
                )
        console.print(f"created user {user.email} ({user.id})")
        if org is not None:
            console.print(f"created organization {org.name} (slug {org.slug}, {org.id})")

    run(go)


@users_app.command("list")
def users_list(
    deleted: bool = typer.Option(False, "--deleted", help="Include soft-deleted users"),
) -> None:
    """List users."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            rows = await users.list_all(session, include_deleted=deleted, limit=10_000, cursor=None)
        table = Table("id", "email", "name", "role", "active", "deleted")
        for u in rows:
            table.add_row(
                str(u.id),
                u.email,
                u.full_name or "",
                u.role.value,
                str(u.is_active),
                u.deleted_at.isoformat() if u.deleted_at else "",
            )
        console.print(table)

    run(go)


def _user_action(email: str, verb: str) -> None:
    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            user = await _user(session, email)
            now = ctx.clock()
            if verb == "delete":
                await users.soft_delete(
                    session, user.id, actor=audit.SYSTEM, now=now, meta=CLI_META
                )
            elif verb == "restore":
                await users.restore(session, user.id, actor=audit.SYSTEM, now=now, meta=CLI_META)
            else:
                await users.set_active(
                    session, user.id, verb == "activate", actor=audit.SYSTEM, now=now, meta=CLI_META
                )
        console.print(f"{verb}d {email}")

    run(go)


@users_app.command("delete")
def users_delete(email: str) -> None:
    """Soft-delete a user (hidden, sessions ended; restorable)."""
    _user_action(email, "delete")


@users_app.command("restore")
def users_restore(email: str) -> None:
    """Restore a soft-deleted user."""
    _user_action(email, "restore")


@users_app.command("deactivate")
def users_deactivate(email: str) -> None:
    """Stop a user from logging in or using their keys."""
    _user_action(email, "deactivate")


@users_app.command("activate")
def users_activate(email: str) -> None:
    """Allow a deactivated user again."""
    _user_action(email, "activate")


@users_app.command("set-password")
def users_set_password(
    email: str, password: str = typer.Option(None, help="New password (prompted when omitted)")
) -> None:
    """Set a user's password (ends their sessions)."""
    secret = _password(password)

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            user = await _user(session, email)
            auth.check_password(secret, ctx.settings.auth)
            user.password_hash = await ctx.hasher.hash(secret)
            await users.end_sessions(session, user.id, ctx.clock())
        console.print(f"password set for {email}")

    run(go)


# ---- organizations --------------------------------------------------------------------------


@orgs_app.command("list")
def orgs_list() -> None:
    """List organizations."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            rows = (
                (await session.execute(select(OrganizationRow).order_by(OrganizationRow.id)))
                .scalars()
                .all()
            )
        table = Table("id", "name", "slug", "plan", "created")
        for o in rows:
            table.add_row(str(o.id), o.name, o.slug, o.plan.value, o.created_at.isoformat())
        console.print(table)

    run(go)


@orgs_app.command("create")
def orgs_create(
    name: str, owner: str = typer.Option(..., help="Email of the owner (an existing user)")
) -> None:
    """Create an organization owned by an existing user."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            user = await _user(session, owner)
            org = await organizations.create_organization_row(
                session, name=name, owner=user, now=ctx.clock(), meta=CLI_META
            )
        console.print(f"created organization {org.name} (slug {org.slug}, {org.id})")

    run(go)


@orgs_app.command("add-member")
def orgs_add_member(
    organization: str = typer.Argument(..., help="Organization slug or name"),
    email: str = typer.Argument(..., help="Email of an existing user"),
    role: MemberRole = typer.Option(MemberRole.MEMBER, help="Role in the organization"),
) -> None:
    """Add a user to an organization."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            org = await _org(session, organization)
            await organizations.insert_membership(
                session,
                organization_id=org.id,
                user=await _user(session, email),
                role=role,
                actor=audit.SYSTEM,
                now=ctx.clock(),
                meta=CLI_META,
            )
        console.print(f"added {email} to {organization} as {role.value}")

    run(go)


@orgs_app.command("set-plan")
def orgs_set_plan(
    organization: str = typer.Argument(..., help="Organization slug or name"),
    plan: Plan = typer.Argument(..., help="starter, professional or enterprise"),
) -> None:
    """Change an organization's plan."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            org = await _org(session, organization)
            before = audit.snapshot(org, ("plan",))
            org.plan = plan
            org.updated_at = ctx.clock()
            audit.record(
                session,
                organization_id=org.id,
                actor=audit.SYSTEM,
                action="organization.set_plan",
                resource_type="organization",
                resource_id=org.id,
                now=ctx.clock(),
                meta=CLI_META,
                before=before,
                after={"plan": plan.value},
            )
        console.print(f"{organization} is now on the {plan.value} plan")

    run(go)


# ---- API keys -------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    email: str = typer.Option(..., "--user", help="Email of the key's user"),
    organization: str = typer.Option(..., "--org", help="Organization slug or name"),
    name: str = typer.Option(..., help="A name to recognise the key by"),
    scopes: list[str] = typer.Option(["*"], "--scope", help="Scope (repeatable); default all"),
    expires_in_days: int = typer.Option(None, help="Expire after this many days"),
) -> None:
    """Create an API key and print its secret (shown once)."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            now = ctx.clock()
            org = await _org(session, organization)
            principal = await _principal(session, org, await _user(session, email))
            row, secret = await api_keys.create(
                session,
                principal,
                name=name,
                scopes=list(scopes),
                expires_at=now + dt.timedelta(days=expires_in_days) if expires_in_days else None,
                rate_limit_per_minute=None,
                default_rate_limit=ctx.settings.auth.api_key_default_rate_limit,
                now=now,
                meta=CLI_META,
            )
        console.print(f"created API key {row.name} ({row.id})")
        console.print(f"secret (shown once): [bold]{secret}[/bold]")

    run(go)


@keys_app.command("list")
def keys_list(
    organization: str = typer.Option(..., "--org", help="Organization slug or name"),
) -> None:
    """List an organization's API keys."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            org = await _org(session, organization)
            stmt = (
                select(ApiKeyRow).where(ApiKeyRow.organization_id == org.id).order_by(ApiKeyRow.id)
            )
            rows = (await session.execute(stmt)).scalars().all()
        table = Table("id", "name", "prefix", "scopes", "active", "expires", "uses")
        for k in rows:
            table.add_row(
                str(k.id),
                k.name,
                k.key_prefix,
                " ".join(k.scopes),
                str(k.is_active),
                k.expires_at.isoformat() if k.expires_at else "",
                str(k.usage_count),
            )
        console.print(table)

    run(go)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id")) -> None:
    """Revoke an API key at once."""
    import uuid

    try:
        ident = uuid.UUID(key_id)
    except ValueError as exc:
        raise fail(f"{key_id!r} is not a key id (a UUID)") from exc

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            key = await session.get(ApiKeyRow, ident)
            if key is None or key.deleted_at is not None:
                raise NotFound("API key", key_id)
            await tenancy.enter(session, TenantContext(organization_id=key.organization_id))
            owner = Principal(
                user_id=key.user_id, organization_id=key.organization_id, role=MemberRole.OWNER
            )
            await api_keys.revoke(session, owner, ident, now=ctx.clock(), meta=CLI_META)
        console.print(f"revoked {key_id}")

    run(go)


# ---- system task queues ---------------------------------------------------------------------

_WORKFLOWS_HELP = "Executions live at once on the queue"
_ACTIVITIES_HELP = "Steps running at once on the queue, across all workers"


@queues_app.command("list")
def queues_list() -> None:
    """List the system task queues."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            rows = await task_queues.list_system(session)
        table = Table("name", "display name", "max workflows", "max activities", "id")
        for q in rows:
            table.add_row(
                q.name,
                q.display_name or "",
                str(q.max_concurrent_workflows),
                str(q.max_concurrent_activities),
                str(q.id),
            )
        console.print(table)

    run(go)


@queues_app.command("create")
def queues_create(
    name: str,
    display_name: str = typer.Option(None, help="A label for people"),
    description: str = typer.Option(None, help="What the queue is for"),
    max_workflows: int = typer.Option(
        queues.DEFAULT_MAX_CONCURRENT_WORKFLOWS, help=_WORKFLOWS_HELP
    ),
    max_activities: int = typer.Option(
        queues.DEFAULT_MAX_CONCURRENT_ACTIVITIES, help=_ACTIVITIES_HELP
    ),
) -> None:
    """Create a system task queue (an organization's own queue of the same name overrides it)."""
    values = task_queues.QueueValues(
        name, display_name, description, max_concurrent_workflows=max_workflows,
        max_concurrent_activities=max_activities,
    )  # fmt: skip

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            row = await task_queues.create_system(session, values, now=ctx.clock())
        console.print(f"created system task queue {row.name} ({row.id})")

    run(go)


@queues_app.command("update")
def queues_update(
    name: str,
    display_name: str = typer.Option(None, help="A label for people"),
    description: str = typer.Option(None, help="What the queue is for"),
    max_workflows: int = typer.Option(None, help=_WORKFLOWS_HELP),
    max_activities: int = typer.Option(None, help=_ACTIVITIES_HELP),
) -> None:
    """Change a system task queue's labels or limits (options left out stay as they are)."""
    given = {
        "display_name": display_name, "description": description,
        "max_concurrent_workflows": max_workflows, "max_concurrent_activities": max_activities,
    }  # fmt: skip
    changes: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    if not changes:
        raise fail("nothing to change: pass at least one option")

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            await task_queues.update_system(session, name, changes=changes, now=ctx.clock())
        console.print(f"updated system task queue {name}")

    run(go)


@queues_app.command("delete")
def queues_delete(name: str) -> None:
    """Delete a system task queue (work on it is no longer limited by it)."""

    async def go() -> None:
        async with _context() as ctx, ctx.db.transaction() as session:
            await task_queues.delete_system(session, name)
        console.print(f"deleted system task queue {name}")

    run(go)
