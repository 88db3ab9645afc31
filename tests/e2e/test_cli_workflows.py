"""``turbocat workflows export|import`` against a running server, as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import Server, clean_env

pytestmark = pytest.mark.slow

DEFINITION = {
    "steps": [
        {
            "key": "fetch",
            "type": "agent",
            "component": {"kind": "api", "config": {"url": "https://x.example/a"}},
        },
        {
            "key": "shape",
            "type": "agent",
            "depends_on": ["fetch"],
            "component": {"kind": "data", "config": {"query": "a"}},
        },
    ]
}


def account(base: str, email: str, org: str) -> str:
    """Sign up and return an API key."""
    r = httpx.post(
        f"{base}/api/v1/auth/signup",
        json={"email": email, "password": "a long password", "organization_name": org},
    )
    token = r.json()["access_token"]
    r = httpx.post(
        f"{base}/api/v1/api-keys",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "cli", "scopes": ["workflows:write"]},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def turbocat(*args: str, key: str, base: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(TURBOCAT_URL=base, TURBOCAT_API_KEY=key)
    return subprocess.run(
        [sys.executable, "-m", "turbocat", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_export_then_import_into_another_organization(server: Server, tmp_path: Path) -> None:
    key_a = account(server.base, "a@example.com", "A")
    key_b = account(server.base, "b@example.com", "B")
    r = httpx.post(
        f"{server.base}/api/v1/workflows",
        headers={"Authorization": f"Bearer {key_a}"},
        json={"name": "Nightly sync", "definition": DEFINITION, "tags": ["sync"]},
    )
    assert r.status_code == 201, r.text

    file = tmp_path / "nightly.yaml"
    done = turbocat(
        "workflows", "export", "nightly-sync", "-o", str(file), key=key_a, base=server.base
    )
    assert done.returncode == 0, done.stderr + done.stdout
    exported = yaml.safe_load(file.read_text())
    assert (
        exported["format"] == "turbocat/workflow@1"
        and exported["definition"]["steps"][0]["key"] == "fetch"
    )

    done = turbocat("workflows", "import", str(file), key=key_b, base=server.base)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "imported nightly-sync version 1" in done.stdout
    listed = turbocat("workflows", "list", key=key_b, base=server.base)
    assert "nightly-sync" in listed.stdout

    again = turbocat("workflows", "import", str(file), key=key_b, base=server.base)
    assert again.returncode == 1 and "already exists" in again.stderr
    missing = turbocat("workflows", "export", "no-such-flow", key=key_b, base=server.base)
    assert missing.returncode == 1 and "not found" in missing.stderr
    no_key = subprocess.run(
        [sys.executable, "-m", "turbocat", "workflows", "list"],
        env=clean_env(TURBOCAT_URL=server.base), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert no_key.returncode == 1 and "API key" in no_key.stderr


def test_api_verb_reaches_any_resource(server: Server, tmp_path: Path) -> None:
    key = account(server.base, "api@example.com", "Api")
    body = tmp_path / "wf.yaml"
    body.write_text(yaml.safe_dump({"name": "From a file", "definition": DEFINITION}))
    done = turbocat("api", "POST", "/workflows", "-d", f"@{body}", key=key, base=server.base)
    assert done.returncode == 0, done.stderr
    done = turbocat("api", "GET", "/workflows", "-q", "q=file", key=key, base=server.base)
    assert done.returncode == 0 and '"kebab_name":"from-a-file"' in done.stdout.replace(" ", "")
    bad = turbocat("api", "POST", "/workflows", "-d", '{"name": 1}', key=key, base=server.base)
    assert bad.returncode == 1 and "body.definition" in bad.stderr
