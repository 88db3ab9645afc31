"""A real ``turbocat serve`` process on an embedded database in a temporary home."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURBOCAT_")}
    return env | extra


@dataclass
class Server:
    base: str
    home: Path
    log: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "home"
    log = tmp_path / "serve.log"
    port = free_port()
    env = clean_env(TURBOCAT_HOME=str(home), TURBOCAT_LOG_LEVEL="warning")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "turbocat", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"turbocat serve did not start:\n{log.read_text()}")
        time.sleep(0.2)
    yield Server(base, home, log)
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
