"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from turbocat.api.deps import ContextDep
from turbocat.db import migrate

router = APIRouter(tags=["health"])


@router.get("/healthz", name="health-live", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", name="health-ready", summary="Readiness: database reachable and migrated")
async def readyz(ctx: ContextDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    ok = True
    try:
        async with ctx.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            revision = await conn.run_sync(migrate.current_on_connection)
        checks["database"] = "ok"
        expected = migrate.heads()
        checks["migrations"] = {"current": revision, "expected": expected}
        if revision not in expected:
            ok = False
            checks["migrations"]["status"] = "run 'turbocat db upgrade'"
    except Exception as exc:  # readiness reports any failure, it never raises
        ok = False
        checks["database"] = f"unreachable: {type(exc).__name__}"
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )
