"""User verbs over the REST API (through the SDK): workflows, agents and usage.

They talk to a running server: ``--url``/``TURBOCAT_URL`` (default http://127.0.0.1:8420) with
``--api-key``/``TURBOCAT_API_KEY``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table

from turbocat.cli.common import console, fail
from turbocat.sdk import ApiError, Client

T = TypeVar("T")

workflows_app = typer.Typer(
    help="Workflows on a turbocat server (needs an API key).", no_args_is_help=True
)
agents_app = typer.Typer(
    help="Agents on a turbocat server (needs an API key).", no_args_is_help=True
)

UrlOpt = typer.Option(
    None, "--url", envvar="TURBOCAT_URL", help="Server URL [default: http://127.0.0.1:8420]"
)
KeyOpt = typer.Option(None, "--api-key", envvar="TURBOCAT_API_KEY", help="API key (tc_...)")


def _call(url: str | None, api_key: str | None, work: Callable[[Client], T]) -> T:
    if not api_key:
        raise fail("an API key is needed: pass --api-key or set TURBOCAT_API_KEY")
    try:
        with Client(url, api_key) as client:
            return work(client)
    except ApiError as exc:
        raise fail(str(exc)) from exc


def _is_yaml(path: Path, fmt: str | None) -> bool:
    return (fmt or path.suffix.lstrip(".")).lower() in ("yaml", "yml")


@workflows_app.command("list")
def workflows_list(
    status: str = typer.Option(None, help="draft, active, paused, inactive or archived"),
    q: str = typer.Option(None, help="Text search"),
    url: str = UrlOpt,
    api_key: str = KeyOpt,
) -> None:
    """List workflows (latest versions)."""
    rows = _call(url, api_key, lambda c: list(c.workflows.list(status=status, q=q)))
    table = Table("kebab name", "name", "version", "status", "id")
    for wf in rows:
        table.add_row(wf["kebab_name"], wf["name"], str(wf["version"]), wf["status"], wf["id"])
    console.print(table)


@workflows_app.command("export")
def workflows_export(
    ref: str = typer.Argument(..., help="Workflow id or kebab name"),
    output: Path = typer.Option(None, "-o", "--output", help="File to write [default: stdout]"),
    fmt: str = typer.Option(None, "--format", help="yaml or json [default: from -o, else yaml]"),
    url: str = UrlOpt,
    api_key: str = KeyOpt,
) -> None:
    """Write a workflow as a portable file (YAML or JSON)."""
    as_yaml = _is_yaml(output, fmt) if output else (fmt or "yaml").lower() != "json"
    text = _call(url, api_key, lambda c: c.workflows.export(ref, yaml=as_yaml))
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


@workflows_app.command("import")
def workflows_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A file from 'export'"),
    update: bool = typer.Option(
        False, "--update", help="Make a new version if the kebab name exists"
    ),
    url: str = UrlOpt,
    api_key: str = KeyOpt,
) -> None:
    """Create a workflow from a file (YAML or JSON)."""
    content = file.read_text()
    wf = _call(
        url,
        api_key,
        lambda c: c.workflows.import_(content, yaml=_is_yaml(file, None), update=update),
    )
    console.print(f"imported {wf['kebab_name']} version {wf['version']} ({wf['id']})")


@workflows_app.command("run")
def workflows_run(
    ref: str = typer.Argument(..., help="Workflow id or kebab name (its latest version)"),
    input_json: str = typer.Option("{}", "--input", "-i", help="Input as a JSON object"),
    wait: float = typer.Option(
        None, "--wait", min=0, help="Seconds to wait for the output [default: do not wait]"
    ),
    idempotency_key: str = typer.Option(
        None, "--idempotency-key", help="Run at most once for this key (safe to retry)"
    ),
    url: str = UrlOpt,
    api_key: str = KeyOpt,
) -> None:
    """Start an execution; with --wait, print its output as JSON when it ends in time."""
    try:
        payload = json.loads(input_json)
    except ValueError as exc:
        raise fail(f"--input is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise fail("--input must be a JSON object")
    execution = _call(
        url, api_key,
        lambda c: c.workflows.run(
            ref, payload, wait=wait, idempotency_key=idempotency_key, manual=True
        ),
    )  # fmt: skip
    status = execution["status"]
    if status in ("pending", "running", "waiting"):
        console.print(f"execution {execution['id']} is {status}")
        return
    if status != "completed":
        raise fail(f"execution {execution['id']} {status}: {execution.get('error_message')}")
    typer.echo(json.dumps(execution["output_data"], indent=2))


@agents_app.command("list")
def agents_list(url: str = UrlOpt, api_key: str = KeyOpt) -> None:
    """List agents (latest versions)."""
    rows = _call(url, api_key, lambda c: list(c.agents.list()))
    table = Table("name", "type", "version", "status", "id")
    for agent in rows:
        table.add_row(
            agent["name"], agent["type"], str(agent["version"]), agent["status"], agent["id"]
        )
    console.print(table)


def api(
    method: str = typer.Argument(..., help="GET, POST, PATCH, PUT or DELETE"),
    path: str = typer.Argument(..., help="Path under /api/v1, e.g. /projects"),
    data: str = typer.Option(None, "--data", "-d", help="JSON body, or @FILE (JSON or YAML)"),
    query: list[str] = typer.Option([], "--query", "-q", help="key=value (repeatable)"),
    url: str = UrlOpt,
    api_key: str = KeyOpt,
) -> None:
    """Call any REST endpoint and print the JSON answer (every resource is reachable)."""
    kwargs: dict[str, object] = {}
    if data is not None:
        if data.startswith("@"):
            file = Path(data[1:])
            if not file.is_file():
                raise fail(f"{file} is not a file")
            content_type = "application/yaml" if _is_yaml(file, None) else "application/json"
            kwargs = {"content": file.read_bytes(), "headers": {"Content-Type": content_type}}
        else:
            kwargs = {"content": data.encode(), "headers": {"Content-Type": "application/json"}}
    params = {}
    for item in query:
        key, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--query takes key=value, not {item!r}")
        params[key] = value
    route = path if path.startswith("/") else f"/{path}"
    route = route.removeprefix("/api/v1")
    response = _call(
        url, api_key, lambda c: c.request(method.upper(), route, params=params, **kwargs)
    )
    if response.content:
        typer.echo(response.text)


METRICS = (
    "workflow_executions",
    "ai_tokens_used",
    "api_calls_made",
    "storage_gb",
    "active_users",
    "active_workflows",
)


def usage(
    from_: str = typer.Option(
        None, "--from", help="First UTC day, YYYY-MM-DD [default: the 1st of this month]"
    ),
    to: str = typer.Option(None, "--to", help="The UTC day after the last [default: tomorrow]"),
    metric: list[str] = typer.Option([], "--metric", "-m", help=f"One of {', '.join(METRICS)}"),
    granularity: str = typer.Option("day", "--granularity", "-g", help="day or month"),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON answer"),
    url: str = UrlOpt,
    api_key: str = KeyOpt,
) -> None:
    """Usage of the key's organization: totals, then one row per metric and day (or month).
    Needs a key with usage:read made by an owner or admin."""
    unknown = [m for m in metric if m not in METRICS]
    if unknown:
        raise fail(f"unknown metric {unknown[0]!r}; use one of {', '.join(METRICS)}")
    if granularity not in ("day", "month"):
        raise fail("--granularity is day or month")
    body = _call(
        url, api_key,
        lambda c: c.usage(from_=from_, to=to, metrics=metric or None, granularity=granularity),
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    console.print(f"usage from {body['from']} to {body['to']} (excluded), by {body['granularity']}")
    totals = Table("metric", "total")
    for name, value in body["totals"].items():
        totals.add_row(name, _quantity(value))
    console.print(totals)
    rows = Table("period", "metric", "quantity")
    for point in body["data"]:
        period = point["period_start"][: 7 if body["granularity"] == "month" else 10]
        rows.add_row(period, point["metric"], _quantity(point["quantity"]))
    if body["data"]:
        console.print(rows)


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}"
