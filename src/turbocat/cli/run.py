"""``turbocat run FILE``: run a workflow file end to end, in-process, and print its output.

Nothing persists: the run gets a throwaway embedded SQLite database in a temporary folder
(migrated, with a local user and organization), the workflow is created there, one execution
is started and an in-process worker runs it while the steps are shown as they change. The
execution's ``output_data`` goes to stdout; progress and errors go to stderr.

Exit codes: 0 completed with result success; 1 anything else (failed, partial, timed out,
cancelled); 2 bad usage or an invalid file or input (each problem on its own line with its
field path); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from turbocat.domain.errors import FieldError, TurbocatError, ValidationFailed
from turbocat.domain.scopes import loop_indices

if TYPE_CHECKING:
    from turbocat.bootstrap import AppContext
    from turbocat.config import Settings
    from turbocat.db.models import ExecutionRow, StepRunRow
    from turbocat.domain.access import Principal
    from turbocat.domain.definitions import WorkflowDefinition

POLL_SECONDS = 0.05
"""How often the step runs are read for the progress display."""
WORKER_POLL_SECONDS = 0.1
"""How often the in-process worker looks for steps that became due (retry delays)."""
STOP_GRACE_SECONDS = 5.0
"""How long running steps may take to wind down once the run is over."""
TERMINAL = frozenset({"completed", "failed", "cancelled", "timeout"})
LOCAL_EMAIL = "run@turbocat.localhost"
LOCAL_ORG = "Local run"


class OutputFormat(enum.StrEnum):
    JSON = "json"
    YAML = "yaml"


class _Usage(Exception):
    """Bad usage or an invalid file/input: exit code 2."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)


# ---- reading files ---------------------------------------------------------------------------


class _JSONishLoader(yaml.SafeLoader):
    """Safe YAML that yields JSON types only: dates and times stay strings."""


_JSONishLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse(text: str, path: Path, what: str) -> Any:
    """JSON or YAML, chosen by extension (.json, .yaml, .yml) or else by content."""
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip()[:1] in "[{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if suffix == ".json":
                raise _Usage(f"{what} {path} is not valid JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_JSONishLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _Usage(f"{what} {path} is not valid YAML or JSON: {exc}") from None


def _read(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"cannot read {what} {path}: {exc}") from None
    return _parse(text, path, what)


@dataclass
class Workflow:
    """What a file describes: the values to create the workflow with, and its definition."""

    values: dict[str, Any]
    definition: WorkflowDefinition
    exported: bool
    """An exported workflow file (``format: turbocat/workflow@1``): field paths keep their
    ``definition.`` prefix; for a bare definition document they start at its top level."""


def _path_text(path: Sequence[str | int], exported: bool) -> str:
    parts = list(path)
    if parts[:1] in (["body"], ["file"]):  # the API's and the import's roots
        parts = parts[1:]
    if not exported and parts[:1] == ["definition"]:
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _problems(errors: Sequence[FieldError], exported: bool) -> list[str]:
    return [f"{_path_text(e.path, exported)}: {e.message}" for e in errors]


def load_workflow(path: Path, settings: Settings) -> Workflow:
    """Read and check a workflow file: a definition (canonical or canvas) or an export."""
    from turbocat.domain import definitions
    from turbocat.engine.plan import build
    from turbocat.services.workflows import import_values

    doc = _read(path, "workflow file")
    if not isinstance(doc, Mapping):
        raise _Usage(f"workflow file {path} must hold an object (a definition with steps)")
    exported = "format" in doc
    try:
        if exported:
            values = import_values(doc)
            if not isinstance(values["definition"], Mapping):
                raise ValidationFailed.field(("definition",), "must be an object")
        else:
            values = {
                "name": path.stem.replace("_", " ").replace(".", " ") or "run",
                "definition": doc,
            }
        prefix: tuple[str, ...] = ("definition",) if exported else ()
        source: Mapping[str, Any] = values["definition"]
        if "nodes" in source or "edges" in source:
            source = definitions.from_canvas(source, path_prefix=prefix)
        limits = definitions.DefinitionLimits(**settings.definitions.model_dump())
        defn = definitions.validate_definition(source, limits=limits, path_prefix=prefix)
        canonical = definitions.canonical_document(defn)
        build(uuid.uuid4(), canonical, "default")  # refuses step types the engine cannot run
    except ValidationFailed as exc:
        raise _Usage(
            f"{path} is not a workflow turbocat can run", _problems(exc.errors, exported)
        ) from None
    values["definition"] = canonical
    return Workflow(values, defn, exported)


def load_input(text: str | None, path: Path | None, defn: WorkflowDefinition) -> dict[str, Any]:
    """The execution input from --input or --input-file, checked against the definition."""
    from turbocat.domain.jsonschemas import validate_instance

    if text is not None and path is not None:
        raise _Usage("give the input with --input or with --input-file, not both")
    data: Any = {}
    if text is not None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _Usage(f"--input is not valid JSON: {exc}") from None
    elif path is not None:
        data = _read(path, "input file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _Usage(f"the input must be a JSON object, not {_json_kind(data)}")
    if defn.inputs:
        try:
            validate_instance(data, defn.inputs, ("input",))
        except ValidationFailed as exc:
            raise _Usage(
                "the input does not match the workflow's inputs schema",
                _problems(exc.errors, exported=False),
            ) from None
    return data


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, int | float) else type(value).__name__


# ---- progress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepView:
    label: str
    status: str
    attempt: int
    duration_ms: int | None
    """Final duration, or the time so far for a running step."""


def latest_runs(runs: Sequence[StepRunRow]) -> list[tuple[str, StepRunRow]]:
    """The latest attempt of each step (and loop iteration), labelled ``key``, or ``key[i]``
    inside a loop (``key[i.j]`` inside nested loops)."""
    latest: dict[tuple[str, str], StepRunRow] = {}
    for run in runs:
        ident = (run.step_key, run.scope)
        if ident not in latest or run.attempt >= latest[ident].attempt:
            latest[ident] = run
    out = []
    for (step, scope), run in latest.items():
        indices = loop_indices(scope)
        out.append((f"{step}[{'.'.join(map(str, indices))}]" if indices else step, run))
    return out


def step_views(
    runs: Sequence[StepRunRow], order: Sequence[str], now: dt.datetime
) -> list[StepView]:
    """What the display shows: the latest attempt of each step, in definition order."""
    rank = {step: i for i, step in enumerate(order)}
    views = []
    for label, run in sorted(
        latest_runs(runs),
        key=lambda item: (rank.get(item[1].step_key, len(rank)), item[1].step_key,
                          loop_indices(item[1].scope)),
    ):  # fmt: skip
        status = run.status.value
        duration = run.duration_ms
        if duration is None and status == "running" and run.started_at is not None:
            duration = max(0, int((now - run.started_at).total_seconds() * 1000))
        if status == "ready" and run.scheduled_for is not None and run.scheduled_for > now:
            status = "scheduled"  # a timed wait or a retry delay
        views.append(StepView(label, status, run.attempt, duration))
    return views


_STYLE = {
    "pending": ("·", "dim"),
    "ready": ("·", "dim"),
    "scheduled": ("◷", "cyan"),
    "running": ("▶", "yellow"),
    "waiting": ("⏸", "cyan"),
    "completed": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("-", "dim"),
    "cancelled": ("⊘", "magenta"),
}


def _duration(ms: int | None) -> str:
    if ms is None:
        return ""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


class Display(Protocol):
    def update(self, views: Sequence[StepView]) -> None: ...

    def close(self) -> None: ...


class QuietDisplay:
    def update(self, views: Sequence[StepView]) -> None:
        pass

    def close(self) -> None:
        pass


class LineDisplay:
    """One line per observed transition (for logs, pipes and CI)."""

    def __init__(self, console: Console, width: int) -> None:
        self.console = console
        self.width = width
        self._seen: dict[str, tuple[str, int]] = {}

    def update(self, views: Sequence[StepView]) -> None:
        for view in views:
            state = (view.status, view.attempt)
            if self._seen.get(view.label) == state or view.status in ("pending", "ready"):
                continue
            self._seen[view.label] = state
            attempt = f" (attempt {view.attempt})" if view.attempt > 1 else ""
            final = view.status not in ("running", "waiting")
            took = (
                f"  {_duration(view.duration_ms)}" if final and view.duration_ms is not None else ""
            )
            self.console.print(
                f"step {view.label:<{self.width}}  {view.status}{attempt}{took}",
                markup=False,
                highlight=False,
            )

    def close(self) -> None:
        pass


class LiveDisplay:
    """A table of the steps redrawn in place (interactive terminals)."""

    MAX_ROWS = 40

    def __init__(self, console: Console, title: str) -> None:
        from rich.live import Live

        self.title = title
        self.started = time.monotonic()
        self.live = Live(console=console, auto_refresh=False, transient=False)
        self.live.start()

    def update(self, views: Sequence[StepView]) -> None:
        done = sum(v.status in ("completed", "failed", "skipped", "cancelled") for v in views)
        table = Table(
            title=Text(f"{self.title} · {done}/{len(views)} steps", style="bold"),
            title_justify="left",
            box=None,
            pad_edge=False,
        )
        table.add_column("", width=1)
        table.add_column("step")
        table.add_column("status")
        table.add_column("time", justify="right")
        shown = list(views)
        if len(shown) > self.MAX_ROWS:  # a big loop: show what is happening, count the rest
            quiet = ("completed", "skipped", "pending", "ready")
            shown = [v for v in views if v.status not in quiet][: self.MAX_ROWS]
        for view in shown:
            symbol, style = _STYLE.get(view.status, ("?", ""))
            status = view.status + (f" (attempt {view.attempt})" if view.attempt > 1 else "")
            table.add_row(
                Text(symbol, style=style),
                Text(view.label),
                Text(status, style=style),
                Text(_duration(view.duration_ms), style="dim"),
            )
        if len(shown) < len(views):
            hidden = len(views) - len(shown)
            table.add_row(Text("…"), Text(f"{hidden} more steps done or not started"), "", "")
        self.live.update(table, refresh=True)

    def close(self) -> None:
        self.live.stop()


# ---- running ---------------------------------------------------------------------------------


@dataclass
class FailedStep:
    label: str
    type: str
    message: str
    stack: str | None


@dataclass
class Outcome:
    status: str
    result: str
    output: Any
    duration_ms: int | None
    error_message: str | None = None
    error_stack: str | None = None
    failed_steps: list[FailedStep] = field(default_factory=list)
    timed_out: bool = False


async def _snapshot(
    ctx: AppContext, execution_id: uuid.UUID, *, steps: bool = True
) -> tuple[ExecutionRow, list[StepRunRow]]:
    from turbocat.db.engine import TenantContext
    from turbocat.db.models import ExecutionRow
    from turbocat.services import executions

    async with ctx.db.transaction(TenantContext(system=True), readonly=True) as session:
        execution = await session.get(ExecutionRow, execution_id)
        assert execution is not None
        return execution, await executions.step_runs(session, execution) if steps else []


async def _prepare(
    ctx: AppContext, workflow: Workflow, data: dict[str, Any]
) -> tuple[Principal, ExecutionRow, list[str], list[str]]:
    """Local account, workflow and a started execution; the step order and queues."""
    from turbocat.db.engine import TenantContext
    from turbocat.domain.access import Principal
    from turbocat.domain.enums import MemberRole, TriggerType
    from turbocat.services import audit, auth, components, executions, organizations, workflows

    meta = audit.RequestMeta(user_agent="turbocat-cli run")
    now = ctx.clock()
    async with ctx.db.transaction() as session:
        user = await auth.create_user(
            session, hasher=ctx.hasher, settings=ctx.settings.auth, email=LOCAL_EMAIL,
            password=None, full_name="turbocat run", now=now,
        )  # fmt: skip
        org = await organizations.create_organization_row(
            session, name=LOCAL_ORG, owner=user, now=now, meta=meta
        )
        # The custom components installed here, so that steps naming them resolve on save.
        await components.register_served(session, ctx.served_components().specs(), now)
    principal = Principal(user_id=user.id, organization_id=org.id, role=MemberRole.OWNER)
    tenant = TenantContext(organization_id=org.id, user_id=user.id)
    async with ctx.db.transaction(tenant) as session:
        row = await workflows.create(
            session, principal, values=dict(workflow.values), settings=ctx.settings, now=now,
            meta=meta,
        )  # fmt: skip
        plan = await ctx.plans.load(session, row)  # with custom steps' component queues
        execution = await executions.start(
            session, principal, row.id, input_data=data, trigger_type=TriggerType.MANUAL,
            trigger_data={"source": "turbocat run"}, plans=ctx.plans, notify=ctx.notifier.notify,
            now=now,
        )  # fmt: skip
    order = list(plan.steps)
    queues = sorted({plan.queue_of(key) for key in plan.steps})
    return principal, execution, order, queues


async def _cancel(ctx: AppContext, principal: Principal, execution_id: uuid.UUID) -> None:
    from turbocat.db.engine import TenantContext
    from turbocat.services import executions

    tenant = TenantContext(organization_id=principal.organization_id, user_id=principal.user_id)
    with contextlib.suppress(TurbocatError):  # it ended on its own meanwhile
        async with ctx.db.transaction(tenant) as session:
            await executions.cancel(
                session, principal, execution_id, notify=ctx.notifier.notify, now=ctx.clock()
            )


async def execute(
    settings: Settings,
    workflow: Workflow,
    data: dict[str, Any],
    *,
    limit_seconds: float,
    make_display: Callable[[Sequence[str]], Display],
) -> Outcome:
    """Create everything in the (migrated) database of ``settings`` and run the execution."""
    from turbocat.bootstrap import AppContext, freeze_startup_objects
    from turbocat.engine.worker import WorkerConfig

    ctx = AppContext.build(settings, app_role=False)
    freeze_startup_objects()
    display: Display = QuietDisplay()
    try:
        try:
            principal, execution, order, queues = await _prepare(ctx, workflow, data)
        except ValidationFailed as exc:
            problems = _problems(exc.errors, workflow.exported) or [exc.detail]
            if any(e.path[-1:] == ("agent",) for e in exc.errors):
                problems.append(
                    "(turbocat run starts from an empty database: give such steps an inline "
                    "component instead of a saved agent)"
                )
            raise _Usage(f"{workflow.values.get('name')!s} cannot run here", problems) from None
        display = make_display(order)
        engine = settings.engine
        worker = ctx.worker(
            WorkerConfig(
                queues=queues,
                concurrency=engine.concurrency,
                lease_seconds=engine.lease_seconds,
                poll_seconds=WORKER_POLL_SECONDS,
            )
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + limit_seconds
        timed_out = False
        # Without a display the loop reads the execution alone, and the steps once at the end
        # (a 500-step run spent ~10% of its time reading every step every 50 ms).
        quiet = isinstance(display, QuietDisplay)
        try:
            while True:
                current, runs = await _snapshot(ctx, execution.id, steps=not quiet)
                if not quiet:
                    display.update(step_views(runs, order, ctx.clock()))
                if current.status.value in TERMINAL:
                    break
                if time.monotonic() >= deadline:
                    timed_out = True
                    await _cancel(ctx, principal, execution.id)
                    current, runs = await _snapshot(ctx, execution.id)
                    display.update(step_views(runs, order, ctx.clock()))
                    break
                if task.done():  # the worker loop ended on its own: report, do not hang
                    task.result()
                    raise RuntimeError("the worker stopped before the execution finished")
                await asyncio.sleep(POLL_SECONDS)
        finally:
            stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_SECONDS)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if quiet:
            current, runs = await _snapshot(ctx, execution.id)
        return _outcome(current, runs, order, timed_out)
    finally:
        display.close()
        await ctx.close()


def _outcome(
    execution: ExecutionRow, runs: Sequence[StepRunRow], order: Sequence[str], timed_out: bool
) -> Outcome:
    failed = [
        FailedStep(
            view_label,
            str((run.error or {}).get("type") or "error"),
            str((run.error or {}).get("message") or ""),
            (run.error or {}).get("stack"),
        )
        for view_label, run in latest_runs(runs)
        if run.status.value == "failed"
    ]
    return Outcome(
        status=execution.status.value,
        result=execution.result.value,
        output=execution.output_data,
        duration_ms=execution.duration_ms,
        error_message=execution.error_message,
        error_stack=execution.error_stack,
        failed_steps=failed,
        timed_out=timed_out,
    )


# ---- the command -----------------------------------------------------------------------------


def _dump(value: Any, fmt: OutputFormat) -> str:
    if fmt is OutputFormat.YAML:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip("\n")
    return json.dumps(value, indent=2, ensure_ascii=False)


def _report(err: Console, outcome: Outcome, *, limit: float, show_summary: bool) -> int:
    took = f" in {_duration(outcome.duration_ms)}" if outcome.duration_ms is not None else ""
    if outcome.timed_out:
        err.print(
            f"[red]error:[/red] the execution did not finish within {limit:g} s (--timeout); "
            f"it was {escape(outcome.status)}",
            highlight=False,
        )
    elif outcome.status == "completed" and outcome.result == "success":
        if show_summary:
            err.print(f"[green]execution completed (success){took}[/green]", highlight=False)
        return 0
    elif outcome.status == "completed":
        err.print(
            f"[yellow]warning:[/yellow] execution completed with a {escape(outcome.result)} "
            f"result{took}: some steps failed and were continued past",
            highlight=False,
        )
    else:
        message = outcome.error_message or f"the execution ended as {outcome.status}"
        err.print(
            f"[red]error:[/red] execution {escape(outcome.status)}{took}: {escape(message)}",
            highlight=False,
        )
    for step in outcome.failed_steps:
        err.print(
            f"  step {escape(step.label)} failed ({escape(step.type)}): {escape(step.message)}",
            highlight=False,
        )
        if step.stack:
            err.print(Text(step.stack.rstrip(), style="dim"))
    if outcome.error_stack and not any(s.stack for s in outcome.failed_steps):
        err.print(Text(outcome.error_stack.rstrip(), style="dim"))
    return 1


def _usage_exit(err: Console, problem: _Usage) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(problem.message)}", highlight=False)
    for line in problem.problems:
        err.print(f"  {escape(line)}", highlight=False)
    return typer.Exit(2)


def run(
    file: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        readable=True,
        help="Workflow file (YAML or JSON): a definition with steps, its canvas form, or an "
        "exported workflow (format turbocat/workflow@1).",
    ),
    input: str | None = typer.Option(
        None,
        "--input",
        "-i",
        metavar="JSON",
        help="Execution input as a JSON object, e.g. '{\"n\": 3}'.",
    ),
    input_file: Path | None = typer.Option(
        None,
        "--input-file",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        readable=True,
        help="Read the execution input from a JSON or YAML file.",
    ),
    output_format: OutputFormat = typer.Option(
        OutputFormat.JSON, "--format", "-f", help="How the output is printed to stdout."
    ),
    timeout: float = typer.Option(
        300.0,
        "--timeout",
        min=0.1,
        metavar="SECONDS",
        help="Give up (and cancel the execution) after SECONDS.",
    ),
    no_progress: bool = typer.Option(
        False, "--no-progress", help="Show no step progress, only the output and errors."
    ),
    keep_db: Path | None = typer.Option(
        None,
        "--keep-db",
        metavar="PATH",
        dir_okay=False,
        help="Keep the run's SQLite database at this path (which must not exist yet) for "
        "inspection, instead of discarding it.",
    ),
) -> None:
    """Run a workflow file end to end on a throwaway embedded database and print its output.

    The output goes to stdout as JSON or YAML; step progress and errors go to stderr.

    Exit codes: 0 completed with result success; 1 failed, partial or timed out; 2 invalid.
    """
    err = Console(stderr=True, soft_wrap=True)
    try:
        code, rendered = _main(
            err, file, input, input_file, output_format, timeout, no_progress, keep_db
        )
    except _Usage as problem:
        raise _usage_exit(err, problem) from None
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        raise typer.Exit(130) from None
    if rendered is not None:
        typer.echo(rendered)
    if code:
        raise typer.Exit(code)


def _main(
    err: Console,
    file: Path,
    input_text: str | None,
    input_file: Path | None,
    output_format: OutputFormat,
    timeout: float,
    no_progress: bool,
    keep_db: Path | None,
) -> tuple[int, str | None]:
    from pydantic import ValidationError

    from turbocat.config import Settings
    from turbocat.db import migrate

    if keep_db is not None:
        keep_db = keep_db.expanduser().resolve()
        if keep_db.exists():
            raise _Usage(f"--keep-db {keep_db} already exists; remove it or choose another path")
        if not keep_db.parent.is_dir():
            raise _Usage(f"--keep-db: the folder {keep_db.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="turbocat-run-") as tmp:
        database = keep_db or Path(tmp) / "run.db"
        try:
            settings = Settings(home=Path(tmp), database_url=f"sqlite:///{database}")
        except (ValidationError, FileNotFoundError, ValueError) as exc:
            raise _Usage(f"invalid settings: {exc}") from None
        workflow = load_workflow(file, settings)
        data = load_input(input_text, input_file, workflow.definition)
        name = str(workflow.values["name"])
        live = sys.stdout.isatty() and err.is_terminal

        def make_display(order: Sequence[str]) -> Display:
            if no_progress:
                return QuietDisplay()
            if live:
                return LiveDisplay(err, name)
            err.print(f"running {name} ({len(order)} steps)", markup=False, highlight=False)
            return LineDisplay(err, max((len(k) for k in order), default=0))

        migrate.upgrade(settings)
        try:
            outcome = asyncio.run(
                execute(settings, workflow, data, limit_seconds=timeout, make_display=make_display)
            )
        except TurbocatError as exc:  # e.g. a limit of the local organization's plan
            err.print(f"[red]error:[/red] {escape(exc.detail)}", highlight=False)
            return 1, None
        code = _report(err, outcome, limit=timeout, show_summary=not no_progress)
        if keep_db is not None:
            err.print(f"database kept at {keep_db}", markup=False, highlight=False)
        rendered = _dump(outcome.output, output_format) if outcome.status == "completed" else None
        return code, rendered


__all__ = ["OutputFormat", "execute", "load_input", "load_workflow", "run"]
