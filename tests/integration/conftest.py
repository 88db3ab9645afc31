"""HTTP-level fixtures: the real ASGI app over a real database, driven through httpx."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from turbocat.api.app import create_app
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.security import crypto
from turbocat.security.crypto import Keyring

PASSWORD = "correct horse battery"


class Clock:
    """A settable clock; starts at the real time so tokens look ordinary."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += dt.timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app_context(settings: Settings, clock: Clock) -> AppContext:
    """The app's context with a settable clock; the client fixture's lifespan closes it."""
    ctx = AppContext.build(settings)
    ctx.clock = clock
    return ctx


@pytest.fixture
def key_file(settings: Settings) -> Keyring:
    """Credential keys in the key file, as an operator provides them (on PostgreSQL turbocat
    never generates them): for modules that store credentials (``usefixtures("key_file")``)."""
    ring = Keyring.generate()
    crypto.write_key_file(crypto.key_file_path(settings), ring)
    return ring


@pytest.fixture
async def operator_db(settings: Settings) -> AsyncIterator[Database]:
    """The database as its owner sees it (no RLS): for checking what the API really wrote."""
    db = Database.from_settings(settings, app_role=False)
    yield db
    await db.dispose()


async def count_rows(db: Database, model: type) -> int:
    async with db.transaction() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.fixture
async def client(settings: Settings, app_context: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, app_context)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


@dataclass
class Account:
    """A signed-up user with their organization and login token."""

    email: str
    token: str
    user_id: str
    org_id: str
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def signup(
    client: httpx.AsyncClient, email: str, organization: str = "Acme", password: str = PASSWORD
) -> Account:
    r = await client.post(
        "/api/v1/auth/signup",
        json={"email": email, "password": password, "organization_name": organization},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return Account(
        email, body["access_token"], body["user"]["id"], body["organization"]["id"], body
    )


def bearer(secret: str, org_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {secret}"}
    if org_id:
        headers["X-Organization-Id"] = org_id
    return headers


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body
