"""The worker loop: claim ready steps, run them, record outcomes; renew leases; rescue the
steps of workers that died.

One ``Worker`` runs in ``turbocat serve`` (embedded, SQLite or PostgreSQL) or in
``turbocat worker`` processes (PostgreSQL). It wakes when this process makes work ready and
polls otherwise, so steps made ready by other processes are picked up within ``poll_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import trace as otel_trace
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import aliased

import turbocat
from turbocat import tracing
from turbocat.config import RuntimeSettings
from turbocat.db import signals
from turbocat.db.engine import Database, TenantContext, is_conflict, is_disconnect
from turbocat.db.models import (
    AgentRow,
    ExecutionRow,
    StepRunRow,
    WorkerRow,
    WorkflowRow,
    WorkflowStepRow,
    step_status_is,
)
from turbocat.domain.definitions import AgentStep
from turbocat.domain.enums import StepStatus, UsageMetric, WorkerStatus
from turbocat.engine import claims, custom, frames, store, waits
from turbocat.engine.agents.base import Limits
from turbocat.engine.plan import Plan, PlanCache, template_reads
from turbocat.engine.platform import StepServices
from turbocat.engine.recorder import Pending, Recorder
from turbocat.engine.runner import SavedAgent, StepCall, StepFailure, StepOutcome, run_step
from turbocat.logging import execution_id_var, step_key_var
from turbocat.security.crypto import Keyring
from turbocat.services import components, deployments, metering
from turbocat.tracing import Tracing

log = logging.getLogger("turbocat.worker")
SIGNAL_CHECK_SECONDS = 0.25
"""How often, at most, an idle worker expires signal waits whose timeout passed (it looks
only when the next due instant it knows of has passed)."""
Loaded = tuple[Plan, Any, dict[str, Any], SavedAgent | None]
"""A claimed step ready to run: plan, step, expression context, saved agent."""
SYSTEM = TenantContext(system=True)
NOTHING_DUE = dt.datetime.max.replace(tzinfo=dt.UTC)
"""A claim found no delayed step to wait for."""
_T = TypeVar("_T")
_Recorded = tuple[store.Recorded, list[tuple[StepRunRow, Loaded]]]
"""An outcome recorded: what the store did, and the successors its slot takes on."""
_NO_TRACING = tracing.Tracing()


@dataclass
class WorkerConfig:
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 8
    lease_seconds: float = 30.0
    poll_seconds: float = 1.0
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )


class Notifier:
    """Wakes this process's worker when work becomes ready (after the commit that made it)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    @property
    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def notify(self) -> None:
        self.event.set()


class Worker:
    def __init__(
        self,
        db: Database,
        config: WorkerConfig,
        *,
        clock: Callable[[], dt.datetime],
        notifier: Notifier | None = None,
        plans: PlanCache | None = None,
        keyring: Callable[[], Keyring] | None = None,
        runtime_settings: RuntimeSettings | None = None,
        tracing: Tracing | None = None,
        components: custom.Served | None = None,
    ) -> None:
        self.db = db
        self.components = components or custom.Served()
        """The custom components this process loaded: it claims only their custom steps."""
        self._claimable = custom.claim_filter(self.components)
        self.tracing = tracing or _NO_TRACING
        self.runtime_settings = runtime_settings or RuntimeSettings()
        self.keyring = keyring or _no_keyring
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.plans = plans or PlanCache()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._last_maintenance = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._cancel_pending = False
        self._last_cancel_check = 0.0
        self._last_signal_check = 0.0
        self.steps_run: dict[str, int] = {}
        """Step attempts this worker recorded, by outcome (its own metrics endpoint)."""
        self.recorder = Recorder(self._record_batch, orphaned=self._adopt, in_flight=2)
        """Records step outcomes, several in one transaction when they end together."""
        self._listener = signals.Listener(db, [signals.READY, signals.CANCEL], self._on_signal)
        self._prepared = False
        self._due: dt.datetime | None = None
        """When the next delayed step is due, found by the last claim that took nothing
        (``NOTHING_DUE``: none is); the idle wait uses it once."""

    def _on_signal(self, channel: str, payload: str) -> None:
        if channel == signals.CANCEL:
            self._cancel_pending = True
        if channel == signals.CANCEL or payload == "*" or payload in self.config.queues:
            self.notifier.notify()

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then let running steps finish."""
        await self.prepare()
        self._listener.start()
        try:
            while not stop.is_set():
                try:
                    claimed = await self.tick()
                    if self._running and (
                        self._cancel_pending or time.monotonic() - self._last_cancel_check >= 0.5
                    ):
                        await self.stop_cancelled()
                    wait = await self._idle_wait() if claimed == 0 else 0.0
                except Exception:
                    log.exception("worker tick failed; retrying")
                    claimed, wait = 0, self.config.poll_seconds
                if claimed == 0 or self.busy >= self.config.concurrency:
                    # While steps run, look for cancellations at least twice a second.
                    await self._sleep(stop, min(wait or 0.5, 0.5) if self._running else wait)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            await self._listener.stop()
            with contextlib.suppress(Exception):  # the database may be what is failing
                await self._deregister()

    async def _register(self) -> None:
        """A row in the workers registry (seed 003's workflow_workers), kept by heartbeats."""
        now = self.clock()
        async with self.db.transaction(SYSTEM) as session:
            row = (
                await session.execute(
                    select(WorkerRow).where(WorkerRow.worker_id == self.config.worker_id)
                )
            ).scalar_one_or_none()
            if row is None:
                row = WorkerRow(worker_id=self.config.worker_id, created_at=now)
                session.add(row)
            row.hostname = socket.gethostname()
            row.pid = os.getpid()
            row.queues = list(self.config.queues)
            row.concurrency = self.config.concurrency
            row.version = turbocat.__version__
            row.status = WorkerStatus.RUNNING
            row.started_at = row.last_heartbeat_at = row.updated_at = now
            row.stopped_at = None

    async def prepare(self) -> None:
        """Register this worker and the custom components it loaded (``run`` does it first if
        nobody did). ``turbocat serve`` awaits it before answering requests, so a workflow that
        names a component can be saved as soon as the server is up."""
        if self._prepared:
            return
        await self._while_unreachable(self._register)  # a worker may start as the database restarts
        if self.components.by_name:
            await self._while_unreachable(self._register_components)
        self._prepared = True

    async def _register_components(self) -> None:
        """Register the loaded custom components in the catalog (system-level rows)."""
        served = self.components
        async with self.db.transaction(SYSTEM) as session:
            await components.register_served(session, served.specs(), self.clock())
        for item in served.by_name.values():
            served_here = item.queue in self.config.queues
            where = "" if served_here else " (a queue this worker does not serve)"
            log.info("component %s %s on queue %s%s", item.name, item.version, item.queue, where)

    async def _give_back(self, run_id: uuid.UUID, epoch: int) -> None:
        async with self.db.transaction(SYSTEM) as session:
            await custom.release(session, run_id, epoch, self.clock())
        log.warning("step run %s needs a custom component this worker has not loaded", run_id)

    async def _deregister(self) -> None:
        now = self.clock()
        async with self.db.transaction(SYSTEM) as session:
            await session.execute(
                update(WorkerRow)
                .where(WorkerRow.worker_id == self.config.worker_id)
                .values(status=WorkerStatus.STOPPED, stopped_at=now, updated_at=now),
                execution_options={"synchronize_session": False},
            )

    async def _idle_wait(self) -> float:
        """Seconds until there may be work: the next due retry, timed wait or signal timeout,
        or the polling interval."""
        now = self.clock()
        due, self._due = self._due, None
        if due is None:  # not known from the last claim
            async with self.db.transaction(SYSTEM, readonly=True) as session:
                due = await claims.next_due(session, self.config.queues, now)
        if due is None or due is NOTHING_DUE:
            return self.config.poll_seconds
        if due <= now:  # a signal wait's timeout passed (ready steps due now were claimed)
            if time.monotonic() - self._last_signal_check >= SIGNAL_CHECK_SECONDS:
                self._last_signal_check = time.monotonic()
                await self.expire_signal_waits(now)
            return min(self.config.poll_seconds, SIGNAL_CHECK_SECONDS)
        return max(0.0, min(self.config.poll_seconds, (due - now).total_seconds()))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        event = self.notifier.event
        if event.is_set():
            event.clear()
            return
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            event.clear()

    async def stop_cancelled(self) -> int:
        """Stop running steps whose rows are no longer running for this worker (cancelled, the
        execution ended, or the lease went elsewhere)."""
        ids = list(self._running)
        async with self.db.transaction(SYSTEM, readonly=True) as session:
            still = set(
                (
                    await session.execute(
                        select(StepRunRow.id).where(
                            StepRunRow.id.in_(ids),
                            StepRunRow.status == StepStatus.RUNNING,
                            StepRunRow.lease_owner == self.config.worker_id,
                        )
                    )
                ).scalars()
            )
        self._cancel_pending = False
        self._last_cancel_check = time.monotonic()
        stopped = 0
        for run_id in ids:
            task = self._running.get(run_id)
            if run_id not in still and task is not None and not task.done():
                task.cancel()
                stopped += 1
        if stopped:
            log.info("stopped %d steps that were cancelled", stopped)
        return stopped

    async def drain(self, limit_seconds: float = 30.0) -> None:
        """Run until nothing is ready or running (tests and ``turbocat run``)."""
        async with asyncio.timeout(limit_seconds):
            while True:
                claimed = await self.tick()
                if claimed == 0 and not self._tasks:
                    return
                if claimed == 0:
                    await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def tick(self) -> int:
        """Maintenance when due, then claim as many steps as there are free slots."""
        now = self.clock()
        if now - self._last_maintenance >= dt.timedelta(seconds=self.config.lease_seconds / 3):
            self._last_maintenance = now
            await self.maintain(now)
        free = self.config.concurrency - self.busy
        if free <= 0:
            return 0
        async with self.db.transaction(SYSTEM) as session:
            claimed = await claims.claim(
                session,
                worker_id=self.config.worker_id,
                queues=self.config.queues,
                limit=free,
                now=now,
                lease=dt.timedelta(seconds=self.config.lease_seconds),
                also=(self._claimable,),
            )
            # Loaded while the claim's transaction is open: one transaction fewer per step.
            held = await _executions_of(session, claimed)
            loaded = [await self._try_load_in(session, run) for run in claimed]
            del held
            if not claimed:  # what the idle wait needs, without a transaction of its own
                self._due = await claims.next_due(session, self.config.queues, now) or NOTHING_DUE
        for run, ready in zip(claimed, loaded, strict=True):
            self._spawn(run, ready)
        return len(claimed)

    async def _try_load_in(self, session: Any, run: StepRunRow) -> Loaded | None:
        """``_load_in``, or None when it fails: the step's own task loads it again and records
        the failure (a step that cannot load must fail, not undo its claim)."""
        try:
            return await self._load_in(session, run)
        except DBAPIError:
            raise  # the transaction is unusable: the claim is undone and taken again later
        except Exception:
            return None

    async def expire_signal_waits(self, now: dt.datetime) -> int:
        """Fail the signal waits whose timeout passed, each in its own transaction."""
        async with self.db.transaction(SYSTEM, readonly=True) as session:
            due = await waits.due_signal_waits(session, now)
        expired = 0
        for run in due:
            async with self.db.transaction(SYSTEM) as session:
                plan = await self._plan_of(session, run.execution_id)
                expired += await waits.expire_signal_wait(session, run, plan, now)
        if expired:
            self.notifier.notify()
        return expired

    async def _plan_of(self, session: Any, execution_id: uuid.UUID) -> Plan:
        execution = await session.get(ExecutionRow, execution_id)
        workflow = await session.get(WorkflowRow, execution.workflow_id)
        return await self.plans.load(session, workflow)

    def _forget(self, run_id: uuid.UUID) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._running.pop(run_id, None)

        return done

    async def maintain(self, now: dt.datetime) -> None:
        """Renew this worker's leases; make steps with expired leases ready again."""
        lease = dt.timedelta(seconds=self.config.lease_seconds)
        async with self.db.transaction(SYSTEM) as session:
            # Only the steps still running here: a step this process gave up on (its result
            # could not be recorded) must let its lease run out, so that it runs again.
            await session.execute(
                update(StepRunRow)
                .where(
                    StepRunRow.id.in_(list(self._running)),
                    StepRunRow.lease_owner == self.config.worker_id,
                    StepRunRow.status == StepStatus.RUNNING,
                )
                .values(lease_expires_at=now + lease),
                execution_options={"synchronize_session": False},
            )
            rescued = await session.execute(
                update(StepRunRow)
                .where(step_status_is(StepStatus.RUNNING), StepRunRow.lease_expires_at < now)
                .values(
                    status=StepStatus.READY,
                    lease_owner=None,
                    lease_expires_at=None,
                    scheduled_for=now,
                    updated_at=now,
                )
                .returning(StepRunRow.id),
                execution_options={"synchronize_session": False},
            )
            count = len(rescued.all())
            expired = await store.expire_timeouts(session, now)
            admitted = await store.admit_pending(session, now)
            await session.execute(
                update(WorkerRow)
                .where(WorkerRow.worker_id == self.config.worker_id)
                .values(last_heartbeat_at=now, updated_at=now),
                execution_options={"synchronize_session": False},
            )
        await self.expire_signal_waits(now)
        if expired:
            log.warning("%d executions exceeded their time limit", expired)
        if count:
            log.warning("made %d steps with expired leases ready again", count)
        if count or admitted:
            self.notifier.notify()

    def _spawn(self, run: StepRunRow, loaded: Loaded | None = None) -> None:
        run_id, claimed = run.id, (run.execution_id, run.started_at)
        services = StepServices(
            self.db, self.keyring, run.organization_id, self.clock, quotas=self.plans.quotas,
            step_run=(run.id, run.lease_epoch),  # llm checkpoints are fenced on it
        )  # fmt: skip
        call = StepCall(
            run.execution_id, run.organization_id, run.idempotency_key, run.attempt, services,
            self.runtime_settings, components=self.components,
        )  # fmt: skip
        # The task copies this context: its log lines carry the execution id and step key.
        tokens = execution_id_var.set(str(run.execution_id)), step_key_var.set(run.step_key)
        try:
            task = asyncio.create_task(self._traced(run, loaded, claimed, call))
        finally:
            step_key_var.reset(tokens[1])
            execution_id_var.reset(tokens[0])
        self._tasks.add(task)
        self._running[run_id] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._forget(run_id))

    async def _traced(
        self,
        run: StepRunRow,
        loaded: Loaded | None,
        claimed: tuple[uuid.UUID, dt.datetime | None],
        call: StepCall,
    ) -> None:
        """``_execute`` inside the step's span when tracing is on."""
        log.debug("step run %s starts (attempt %d)", run.id, run.attempt)
        if not self.tracing.enabled:
            await self._execute(run.id, run.lease_epoch, loaded, claimed, call)
            return
        attributes = {
            "turbocat.step_run_id": str(run.id),
            "turbocat.attempt": run.attempt,
            "turbocat.queue": run.queue,
            "turbocat.worker_id": self.config.worker_id,
        }
        with tracing.step_span(self.tracing, run.execution_id, run.step_key, attributes):
            await self._execute(run.id, run.lease_epoch, loaded, claimed, call)

    async def _execute(
        self,
        run_id: uuid.UUID,
        epoch: int,
        preloaded: Loaded | None,
        claimed: tuple[uuid.UUID, dt.datetime | None],
        call: StepCall,
    ) -> None:
        try:
            loaded = preloaded or await self._while_unreachable(lambda: self._load(run_id))
            if loaded is None:
                return
            plan, step, context, agent = loaded
            if not custom.can_run(step, self.components):  # a successor chained here
                await self._while_unreachable(lambda: self._give_back(run_id, epoch))
                return
            outcome = await run_step(step, context, agent=agent, call=call)
        except asyncio.CancelledError:
            log.info("step run %s stopped: it was cancelled", run_id)
            return
        except Exception as exc:  # loading failed (e.g. the definition no longer validates)
            log.exception("could not run step %s", run_id)
            plan = None
            outcome = StepOutcome(failure=StepFailure(type(exc).__name__, str(exc), False))
        if plan is None:
            return
        if outcome.failure is not None and self.tracing.enabled:
            failure = outcome.failure
            tracing.mark_failed(otel_trace.get_current_span(), failure.type, failure.message)

        assert isinstance(call.services, StepServices)
        lines = call.services.drain()
        tokens = sum(u.total_tokens for u in call.services.usage)
        org = call.organization_id
        pending = Pending(run_id, epoch, outcome, plan, claimed, lines, org, tokens)
        # Recorded from here on: the row may be completed before this task hears of it, and
        # ``stop_cancelled`` must not take that for a cancellation (the successors claimed for
        # this slot would be lost with the task).
        self._running.pop(run_id, None)
        try:  # fenced by the lease epoch: a retry after a lost commit reply records nothing
            recorded, successors = await self.recorder.record(pending)
        except Exception:
            log.exception("could not record step run %s; it runs again when its lease ends", run_id)
            return
        if recorded.lost_lease:
            log.warning("step run %s lost its lease; its result was discarded", run_id)
        kind = "lost" if recorded.lost_lease else "failed" if outcome.failure else "succeeded"
        self.steps_run[kind] = self.steps_run.get(kind, 0) + 1
        if recorded.finished and recorded.execution is not None:
            self._trace_execution(recorded.execution)
        for run, loaded in successors:
            self._spawn(run, loaded)
        if not successors or recorded.made_ready > len(successors) or recorded.finished:
            # A slot is free (or admitted executions may wait): the loop claims again now
            # rather than at its next timer.
            self.notifier.notify()

    def _adopt(self, result: Any) -> None:
        """A step's task ended before its outcome was recorded: its successors run anyway."""
        _recorded, successors = result
        for run, loaded in successors:
            self._spawn(run, loaded)
        self.notifier.notify()

    async def _record_batch(self, batch: list[Pending]) -> list[_Recorded]:
        """Record ``batch`` in one transaction (``recorder``), executions locked in id order
        so that two workers' batches cannot deadlock each other; with the successors each
        outcome's worker slot takes on, loaded while the transaction is open."""
        order = sorted(range(len(batch)), key=lambda i: batch[i].execution_id)
        lease = dt.timedelta(seconds=self.config.lease_seconds)

        async def attempt() -> list[_Recorded]:
            results: list[_Recorded] = []
            # The slots of the batch's steps are free once their outcomes are recorded
            # (a step whose task was cancelled meanwhile already gave its slot back).
            waiting = sum(1 for item in batch if item.done is None or not item.done.done())
            free = self.config.concurrency - self.busy + waiting
            by_index: dict[int, _Recorded] = {}
            async with self.db.transaction(SYSTEM) as session:
                for i in order:
                    item = batch[i]
                    chain = store.Chain(self.config.worker_id, self.config.queues, free, lease)
                    recorded = await store.record_outcome(
                        session, run_id=item.run_id, epoch=item.epoch, outcome=item.outcome,
                        plan=item.plan, now=self.clock(),
                        rand=random.random(),  # noqa: S311 - retry jitter
                        chain=chain, claimed=item.claimed, lines=item.lines, plans=self.plans,
                    )  # fmt: skip
                    # load the successors while the transaction is open
                    held = await _executions_of(session, recorded.chained)
                    loaded = [(run, await self._load_in(session, run)) for run in recorded.chained]
                    del held
                    free = max(0, free - len(loaded))
                    by_index[i] = (recorded, loaded)
                spent = [i for i in order if batch[i].tokens and not by_index[i][0].lost_lease]
                for i in sorted(spent, key=lambda i: batch[i].organization_id):
                    # last: the organization's usage row is locked until the commit
                    await metering.add(
                        session, batch[i].organization_id, UsageMetric.AI_TOKENS_USED,
                        batch[i].tokens, self.clock(),
                    )  # fmt: skip
            results.extend(by_index[i] for i in range(len(batch)))
            return results

        return await self._while_unreachable(attempt)

    def _trace_execution(self, execution: ExecutionRow) -> None:
        """The execution's own span, now that it has ended (see ``turbocat.tracing``)."""
        if not self.tracing.enabled:
            return
        end = execution.completed_at or self.clock()
        tracing.emit_execution_span(
            self.tracing, execution.id, start=execution.started_at or execution.created_at,
            end=end, status=str(execution.status),
            attributes={"turbocat.workflow_id": str(execution.workflow_id),
                        "turbocat.organization_id": str(execution.organization_id),
                        "turbocat.trigger_type": str(execution.trigger_type)},
        )  # fmt: skip

    async def _while_unreachable(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """``attempt()``, again while the database is unreachable (a restart, a failover), for
        about as long as this worker's lease on the step lasts, and at once when it lost a
        deadlock (each attempt is a whole transaction)."""
        deadline = time.monotonic() + self.config.lease_seconds
        delay = 0.2
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if is_conflict(exc) and time.monotonic() < deadline:  # lost a deadlock: again
                    log.info("transaction aborted by a conflict; retrying")
                    await asyncio.sleep(random.uniform(0.001, 0.02))  # noqa: S311 - backoff
                    continue
                if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _load(self, run_id: uuid.UUID) -> Loaded | None:
        async with self.db.transaction(SYSTEM, readonly=True) as session:
            run = await session.get(StepRunRow, run_id)
            if run is None:
                return None
            return await self._load_in(session, run)

    async def _load_in(self, session: Any, run: StepRunRow) -> Loaded:
        """What running ``run`` needs: its plan, step, expression context and saved agent."""
        execution = await session.get(ExecutionRow, run.execution_id)
        assert execution is not None
        plan = self.plans.of_version(execution.workflow_id)
        if plan is None:
            workflow = await session.get(WorkflowRow, execution.workflow_id)
            assert workflow is not None
            plan = self.plans.remember_ran(await self.plans.load(session, workflow))
        step = plan.steps[run.step_key]
        agent = await _saved_agent(session, plan.workflow_id, step)
        # A saved agent's templates (a prompt, a URL) may read steps too: load those as well.
        also = template_reads(agent.config) if agent is not None else frozenset()
        context = await frames.step_context(session, execution, plan, run.scope, run.step_key, also)
        if execution.deployment_id is not None:  # its environment variables, as vars
            context = await deployments.with_environment(
                session, self.keyring, execution.deployment_id, context
            )
        return plan, step, context, agent


async def _executions_of(session: Any, runs: list[StepRunRow]) -> list[ExecutionRow]:
    """The executions of ``runs`` that this session does not hold yet, in one query: the
    session keeps what the caller holds (it holds rows weakly), so loading each run then
    finds its execution without a query of its own."""
    held = session.sync_session.identity_map
    wanted = {
        run.execution_id
        for run in runs
        if held.get(session.sync_session.identity_key(ExecutionRow, run.execution_id)) is None
    }
    if len(wanted) < 2:  # one is no cheaper loaded here than by the run that needs it
        return []
    rows = await session.execute(select(ExecutionRow).where(ExecutionRow.id.in_(sorted(wanted))))
    return list(rows.scalars().all())


_SAVED = aliased(AgentRow, name="saved_agent")
"""Made once (see ``services.versions.is_latest``: a fresh alias costs ~0.8 ms per query)."""


async def _saved_agent(session: Any, workflow_id: uuid.UUID, step: Any) -> SavedAgent | None:
    """The agent a step runs: the exact version when the definition names it by id, else the
    latest version of the agent it names (editing an agent that has run makes a new version,
    and a workflow that names the agent runs the edited one from then on)."""
    if not isinstance(step, AgentStep) or step.agent is None:
        return None
    saved = _SAVED
    lineage = func.coalesce(saved.parent_id, saved.id)
    same = (
        AgentRow.id == saved.id
        if _is_uuid(step.agent)
        else or_(AgentRow.id == lineage, AgentRow.parent_id == lineage)
    )
    stmt = (
        select(AgentRow)
        .select_from(WorkflowStepRow)
        .join(saved, saved.id == WorkflowStepRow.agent_id)
        .join(AgentRow, same)
        .where(WorkflowStepRow.workflow_id == workflow_id, WorkflowStepRow.step_key == step.key)
        .order_by(AgentRow.version.desc())
        .limit(1)
    )
    row = (await session.execute(stmt)).scalars().first()
    if row is None:
        return None
    limits = Limits(max_execution_seconds=row.max_execution_time, max_memory_mb=row.max_memory_mb)
    return SavedAgent(row.type, row.config, limits)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _no_keyring() -> Keyring:
    raise RuntimeError("this worker was started without the credential keys")


async def stop_quietly(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
