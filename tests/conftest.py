"""Shared fixtures: real SQLite files and a real PostgreSQL server, one fresh database per test.

Each xdist worker migrates one template database per backend once; every test then gets its own
copy (``CREATE DATABASE ... TEMPLATE`` on PostgreSQL, a file copy on SQLite), so tests are isolated
and cheap. PostgreSQL comes from ``TURBOCAT_TEST_PG_URL`` (default: the local server as
``postgres``). Without a reachable server the PostgreSQL variants skip with a message, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import inspect
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from turbocat.config import Settings
from turbocat.db import migrate

PG_ADMIN_URL = os.environ.get(
    "TURBOCAT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    # Every coroutine test runs on asyncio through anyio's plugin; the mark must be there
    # before parametrization, so it is added at collection rather than afterwards.
    if collector.funcnamefilter(name) and inspect.iscoroutinefunction(obj):  # type: ignore[attr-defined]
        pytest.mark.anyio(obj)


def _pg_admin_execute(*statements: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg", "postgresql"))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def pg_available() -> bool:
    try:
        _pg_admin_execute("SELECT 1")
    except Exception as exc:  # any connection failure means "no server here"
        if IN_CI:
            pytest.fail(f"CI=true but PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}")
        return False
    return True


def _worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0")


@pytest.fixture(scope="session")
def _run_token() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def pg_template(pg_available: bool, _run_token: str) -> Iterator[str | None]:
    """Name of a migrated template database for this worker (None when PostgreSQL is absent)."""
    if not pg_available:
        yield None
        return
    name = f"tc_tpl_{_worker_id()}_{_run_token}"
    _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    url = str(make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    migrate.upgrade(Settings(database_url=url), "head")
    yield name
    _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(Settings(database_url=f"sqlite:///{path}"), "head")
    return path


def pg_database(template: str | None) -> Iterator[str]:
    if template is None:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} (set TURBOCAT_TEST_PG_URL)")
    name = f"tc_test_{uuid.uuid4().hex[:12]}"
    _pg_admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield str(make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """A migrated, empty database of each kind; tests using it run once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "turbocat.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
    else:
        yield from pg_database(request.getfixturevalue("pg_template"))


@pytest.fixture
def pg_url(pg_template: str | None) -> Iterator[str]:
    """A migrated, empty PostgreSQL database, for PostgreSQL-only features."""
    yield from pg_database(pg_template)


@pytest.fixture
def empty_pg_url(pg_available: bool) -> Iterator[str]:
    """An empty PostgreSQL database with no migrations applied."""
    if not pg_available:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} (set TURBOCAT_TEST_PG_URL)")
    name = f"tc_empty_{uuid.uuid4().hex[:12]}"
    _pg_admin_execute(f'CREATE DATABASE "{name}"')
    yield str(make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url)
