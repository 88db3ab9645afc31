"""``turbocat serve`` as a real process: first start creates the embedded database, then HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, free_port

pytestmark = pytest.mark.slow

TIMEOUT = httpx.Timeout(60.0, connect=10.0)
"""Per request. On a loaded 2-core machine the first /openapi.json (built once, then cached by
FastAPI: about 1 s of CPU) took 2-8 s and a signup's password hash seconds more: httpx's
default 5 s made this test flaky, not the server."""


def test_serve_creates_database_and_serves_signup_and_keys(
    server: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    base, home = server.base, server.home
    assert (home / "turbocat.db").is_file()
    http = httpx.Client(timeout=TIMEOUT)
    assert http.get(f"{base}/readyz").status_code == 200

    r = http.post(
        f"{base}/api/v1/auth/signup",
        json={
            "email": "first@example.com",
            "password": "a long password",
            "organization_name": "First",
        },
    )
    assert r.status_code == 201, r.text
    token = r.json()["access_token"]
    r = http.post(
        f"{base}/api/v1/api-keys",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "laptop", "scopes": ["*"]},
    )
    assert r.status_code == 201, r.text
    key = r.json()["secret"]
    me = http.get(f"{base}/api/v1/users/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200 and me.json()["email"] == "first@example.com"
    assert http.get(f"{base}/openapi.json").json()["info"]["title"] == "turbocat"
    http.close()


def test_serve_prints_url_and_next_steps(server: Server) -> None:
    out = server.log.read_text()
    base = server.base
    assert base in out and "/docs" in out and "signup" in out


def test_serve_on_postgresql_migrates_with_flag_and_serves(
    empty_pg_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURBOCAT_")}
    env |= {"TURBOCAT_HOME": str(tmp_path), "TURBOCAT_DATABASE_URL": empty_pg_url}
    port = free_port()
    refused = subprocess.run(
        [sys.executable, "-m", "turbocat", "serve", "--port", str(port)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "turbocat db upgrade" in refused.stderr + refused.stdout

    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "turbocat", "serve", "--port", str(port), "--migrate"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        r = httpx.post(
            f"{base}/api/v1/auth/signup",
            timeout=TIMEOUT,
            json={
                "email": "pg@example.com",
                "password": "a long password",
                "organization_name": "PG",
            },
        )
        assert r.status_code == 201, r.text
    finally:
        proc.terminate()
        proc.wait(timeout=15)
