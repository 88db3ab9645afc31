"""Custom components across real processes on PostgreSQL: an API server without a worker,
``turbocat worker --queue acme`` processes with and without the component package on their
path (found through its ``turbocat.components`` entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import clean_env, free_port
from tests.e2e.test_worker_process import wait_http
from tests.fakes.component_package import write_package

pytestmark = pytest.mark.slow


def poll(what: Callable[[], Any], ok: Callable[[Any], bool], logs: list[Path], seconds: float = 60) -> Any:  # fmt: skip
    deadline = time.monotonic() + seconds
    while True:
        value = what()
        if ok(value):
            return value
        assert time.monotonic() < deadline, (value, *(p.read_text() for p in logs))
        time.sleep(0.1)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_steps_wait_for_a_worker_that_has_their_component(
    empty_pg_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    package = write_package(tmp_path / "site")
    env = clean_env(
        TURBOCAT_HOME=str(tmp_path), TURBOCAT_DATABASE_URL=empty_pg_url,
        TURBOCAT_ENGINE__EMBEDDED_WORKER="false", TURBOCAT_ENGINE__POLL_SECONDS="0.2",
    )  # fmt: skip
    with_package = env | {"PYTHONPATH": str(package)}

    def start(name: str, args: list[str], environment: dict[str, str]) -> Path:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "turbocat", *args], env=environment, stdout=out,
                stderr=subprocess.STDOUT,
            ))  # fmt: skip
        return log

    port = free_port()
    api_log = start("api", ["serve", "--port", str(port), "--migrate"], env)
    base = f"http://127.0.0.1:{port}/api/v1"
    wait_http(f"http://127.0.0.1:{port}/readyz", procs[0], api_log)
    token = httpx.post(
        f"{base}/auth/signup",
        json={"email": "c@example.com", "password": "a long password", "organization_name": "C"},
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    # A worker of another queue that has the package registers its components in the catalog.
    other_log = start("other", ["worker", "--queue", "other"], with_package)
    found = poll(
        lambda: httpx.get(f"{base}/components", headers=headers, params={"q": "acme.enrich"}).json(),
        lambda body: body["items"], [other_log],
    )  # fmt: skip
    assert found["items"][0]["task_queue"] == "acme"
    assert "component acme.enrich 1.2.0 on queue acme" in other_log.read_text()

    definition = {"steps": [
        {"key": "enrich", "type": "agent", "inputs": {"email": "{{ input.email }}", "score": 4},
         "component": {"kind": "custom", "name": "acme.enrich", "version": "^1.2"}},
        {"key": "shape", "type": "agent", "depends_on": ["enrich"], "component": {"kind": "data",
         "config": {"mapping": {"domain": "{{ steps.enrich.output.domain }}"}}}},
    ], "outputs": {"domain": "{{ steps.shape.output.domain }}", "pid": "{{ steps.enrich.output.pid }}"}}  # fmt: skip
    wf = httpx.post(
        f"{base}/workflows", headers=headers, json={"name": "enrich", "definition": definition}
    ).json()
    execution_id = httpx.post(
        f"{base}/workflows/{wf['id']}/executions", headers=headers,
        json={"input": {"email": "bo@acme.test"}},
    ).json()["id"]  # fmt: skip

    def detail() -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(
            f"{base}/executions/{execution_id}", headers=headers
        ).json()
        return body

    # No worker serves queue acme: the execution says so.
    body = poll(detail, lambda b: b["steps"], [api_log])
    step = next(s for s in body["steps"] if s["step_key"] == "enrich")
    assert (body["status"], step["status"], step["queue"]) == ("running", "ready", "acme")
    assert step["status_detail"] == "waiting for a worker serving queue acme"
    assert body["waiting_for_workers"] == ["acme"]

    # A worker of queue acme without the package: it serves the queue but never claims the step.
    bare_log = start("bare", ["worker", "--queue", "acme"], env)
    poll(detail, lambda b: b["waiting_for_workers"] == [], [bare_log])  # it heartbeats
    time.sleep(1.0)  # five of its polls
    step = next(s for s in detail()["steps"] if s["step_key"] == "enrich")
    assert (step["status"], step["started_at"]) == ("ready", None), bare_log.read_text()
    assert "has not loaded" not in bare_log.read_text()  # not even claimed and given back

    # A worker of queue acme with the package runs it.
    acme_log = start("acme", ["worker", "-q", "acme", "-q", "default", "-c", "2"], with_package)
    done = poll(detail, lambda b: b["status"] not in ("running", "pending"), [acme_log, bare_log])
    assert done["status"] == "completed", done
    assert done["output_data"] == {"domain": "acme.test", "pid": procs[-1].pid}
    assert {s["step_key"]: s["queue"] for s in done["steps"]} == {"enrich": "acme", "shape": "default"}  # fmt: skip


def test_turbocat_run_loads_the_components_installed_beside_it(tmp_path: Path) -> None:
    package = write_package(tmp_path / "site")
    flow = tmp_path / "enrich.yaml"
    flow.write_text(
        "steps:\n"
        "  - {key: enrich, type: agent, inputs: {email: '{{ input.email }}'},\n"
        "     component: {kind: custom, name: acme.enrich, version: '~1.2'}}\n"
        "outputs: {domain: '{{ steps.enrich.output.domain }}'}\n"
    )
    env = clean_env(TURBOCAT_HOME=str(tmp_path / "home"), PYTHONPATH=str(package))
    done = subprocess.run(
        [sys.executable, "-m", "turbocat", "run", str(flow), "--input", '{"email": "a@b.test"}'],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"domain": "b.test"}
    bare = subprocess.run(
        [sys.executable, "-m", "turbocat", "run", str(flow), "--input", "{}"],
        env=env | {"PYTHONPATH": ""}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bare.returncode != 0 and "acme.enrich" in bare.stderr
