"""A worker process killed (SIGKILL) in the middle of an llm step's tool loop: the worker that
rescues the step resumes the conversation from its checkpoint. The model is not asked again for
the turns before the crash, the agent tool that ran is not run again, and the workflow tool's
child execution is started once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import clean_env, free_port
from tests.e2e.test_worker_process import wait_http
from tests.fakes.llm_server import Script, running
from tests.local_http import local_server

pytestmark = pytest.mark.slow

DOUBLER = {
    "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    "steps": [{"key": "double", "type": "agent",
               "component": {"kind": "data", "config": {"mapping": {"n": "{{ input.n * 2 }}"}}}}],
    "outputs": {"doubled": "{{ steps.double.output.n }}"},
}  # fmt: skip


@pytest.mark.timeout(180)
def test_a_killed_worker_s_llm_step_resumes_from_its_checkpoint(
    empty_pg_url: str, tmp_path: Path
) -> None:
    allow = '["127.0.0.1/32"]'
    env = clean_env(
        TURBOCAT_HOME=str(tmp_path), TURBOCAT_DATABASE_URL=empty_pg_url,
        TURBOCAT_ENGINE__EMBEDDED_WORKER="false", TURBOCAT_ENGINE__LEASE_SECONDS="2",
        TURBOCAT_ENGINE__POLL_SECONDS="0.2", TURBOCAT_LOG_LEVEL="warning",
        TURBOCAT_RUNTIMES__LLM__ALLOW=allow, TURBOCAT_RUNTIMES__HTTP__ALLOW=allow,
    )  # fmt: skip
    port = free_port()
    api_log = tmp_path / "api.log"
    procs: list[subprocess.Popen[bytes]] = []
    closing: list[httpx.Client] = []

    def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("w") as out:  # the child keeps its own copy of the file
            proc = subprocess.Popen(
                [sys.executable, "-m", "turbocat", *args], env=env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(proc)
        return proc

    with running() as fake, local_server() as team:
        try:
            api = spawn(["serve", "--port", str(port), "--migrate"], api_log)
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/readyz", api, api_log)
            token = httpx.post(f"{base}/api/v1/auth/signup", json={
                "email": "llm-crash@example.com", "password": "a long password",
                "organization_name": "Crash",
            }).json()["access_token"]  # fmt: skip
            client = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            closing.append(client)

            def made(url: str, body: dict[str, Any]) -> dict[str, Any]:
                r = client.post(url, json=body)
                assert r.status_code == 201, r.text
                return dict(r.json())

            made("/api/v1/workflows", {"name": "Doubler", "definition": DOUBLER})
            made("/api/v1/agents", {
                "name": "notify", "type": "api", "status": "active",
                "config": {"method": "POST", "url": team.url("/echo"), "body": "{{ inputs }}"},
            })  # fmt: skip
            made("/api/v1/agents", {
                "name": "planner", "type": "llm", "status": "active",
                "config": {"provider": "openai", "model": "m-1", "base_url": fake.openai_url,
                           "system_prompt": "You plan.",
                           "tools": [{"type": "agent", "ref": "notify"},
                                     {"type": "workflow", "ref": "doubler"}]},
            })  # fmt: skip
            wf = made("/api/v1/workflows", {"name": "plans", "definition": {
                "steps": [{"key": "ask", "type": "agent", "agent": "planner", "inputs": {}}],
                "outputs": {"answer": "{{ steps.ask.output.content }}"},
            }})  # fmt: skip
            fake.add(
                Script(tool_calls=[("c1", "notify", {"msg": "hi"}), ("c2", "doubler", {"n": 21})]),
                Script(text="never delivered", delay=90),  # held while the worker dies
                Script(text="Told them; it is 42."),
            )
            r = client.post(f"/api/v1/workflows/{wf['id']}/executions", json={"input": {}})
            assert r.status_code == 202, r.text
            execution_id = r.json()["id"]

            doomed = spawn(["worker", "-c", "2"], tmp_path / "worker-1.log")
            deadline = time.monotonic() + 60
            while len(fake.requests) < 2:  # the first turn, the child, then the held call
                assert time.monotonic() < deadline and doomed.poll() is None, (
                    tmp_path / "worker-1.log"
                ).read_text()
                time.sleep(0.05)
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait()
            spawn(["worker", "-c", "2"], tmp_path / "worker-2.log")

            deadline = time.monotonic() + 60
            while True:
                done = client.get(f"/api/v1/executions/{execution_id}").json()
                if done["status"] not in ("pending", "running", "waiting"):
                    break
                assert time.monotonic() < deadline, done
                time.sleep(0.2)
            assert done["status"] == "completed", done
            assert done["output_data"] == {"answer": "Told them; it is 42."}
            ask = next(s for s in done["steps"] if s["step_key"] == "ask")
            assert ask["attempt"] == 1
            # the first turn was asked once; the rescuer sent the checkpointed conversation
            assert len(fake.requests) == 3
            assert fake.bodies[2]["messages"] == fake.bodies[1]["messages"]
            roles = [m["role"] for m in fake.bodies[2]["messages"]]
            assert roles == ["system", "user", "assistant", "tool", "tool"]
            assert len(team.requests) == 1  # the agent tool ran once
            kids = client.get(
                "/api/v1/executions", params={"parent_execution_id": execution_id}
            ).json()["items"]
            assert [k["status"] for k in kids] == ["completed"]  # the workflow tool ran once
            runs = ask["output"]["tool_calls"]
            assert [r["id"] for r in runs] == ["c1", "c2"]
            assert runs[1]["output"] == {"doubled": 42}
            assert runs[1]["execution_id"] == kids[0]["id"]
        finally:
            for opened in closing:
                opened.close()
            fake.release.set()
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=15)
