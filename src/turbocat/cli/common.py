"""Helpers shared by CLI verbs: settings, running async code, printing errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from turbocat.config import Settings, load_settings
from turbocat.domain.errors import TurbocatError

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(2) from exc


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run an async verb; domain errors become a one-line message and exit code 1."""
    try:
        return asyncio.run(_call(coro_factory))
    except TurbocatError as exc:
        raise fail(exc.detail) from exc


async def _call(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()
