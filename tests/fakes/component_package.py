"""A real component package written to disk: a module plus a ``*.dist-info`` with an
``entry_points.txt``, so that ``importlib.metadata`` finds it on ``sys.path``/``PYTHONPATH``
exactly as it finds an installed distribution."""

from __future__ import annotations

from pathlib import Path

MODULE = "acme_components"

SOURCE = '''
import asyncio
import os
import time

from pydantic import BaseModel, Field

from turbocat.components import component


class EnrichInput(BaseModel):
    email: str
    score: int = 0


class EnrichOutput(BaseModel):
    domain: str
    score: int = Field(ge=0)
    pid: int


@component(name="acme.enrich", version="{version}", queue="{queue}", tags=["acme"])
def enrich(inp: EnrichInput) -> EnrichOutput:
    """The domain of an email address and a doubled score."""
    return EnrichOutput(domain=inp.email.partition("@")[2], score=inp.score * 2, pid=os.getpid())


@component(name="acme.add", version="{version}", queue="{queue}")
async def add(a: int, b: int = 1) -> dict[str, int]:
    await asyncio.sleep(0)
    return {{"sum": a + b}}


@component(name="acme.liar", version="{version}", queue="{queue}")
def liar(n: int) -> EnrichOutput:
    return {{"domain": "x", "score": -n, "pid": 0}}


@component(name="acme.boom", version="{version}", queue="{queue}")
def boom(message: str) -> None:
    raise RuntimeError(message)


@component(name="acme.sleepy", version="{version}", queue="{queue}")
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
'''


def write_package(root: Path, *, version: str = "1.2.0", queue: str = "acme") -> Path:
    """Write the package under ``root`` and return ``root`` (the path entry to add)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{MODULE}.py").write_text(SOURCE.format(version=version, queue=queue))
    info = root / f"{MODULE}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {MODULE.replace('_', '-')}\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(f"[turbocat.components]\nacme = {MODULE}\n")
    return root
