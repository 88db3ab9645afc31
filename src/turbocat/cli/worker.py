"""``turbocat worker``: run steps from PostgreSQL, on any machine, as many as you like."""

from __future__ import annotations

import asyncio
import signal

import typer
from sqlalchemy.engine import make_url

from turbocat.cli.common import console, fail, settings_or_exit
from turbocat.db import migrate
from turbocat.engine.worker import WorkerConfig


def worker(
    queue: list[str] = typer.Option(
        ["default"], "--queue", "-q", help="Task queue to serve (repeatable)"
    ),
    concurrency: int = typer.Option(
        None, "--concurrency", "-c", min=1, help="Steps run at once [default: setting]"
    ),
    metrics_port: int = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve this worker's Prometheus metrics (slots, steps run) on this port",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="Interface of the metrics port"
    ),
) -> None:
    """Run a worker: claim ready steps of the given queues, run them, record the outcomes.
    Stateless: stop or kill it at any moment; its unfinished steps run again elsewhere.
    It loads the custom components of the 'turbocat.components' entry points installed beside
    it, registers them in the catalog and runs their steps (docs/components.md)."""
    settings = settings_or_exit()
    if make_url(settings.resolved_database_url).get_backend_name() == "sqlite":
        raise fail(
            "separate worker processes need PostgreSQL; with the embedded SQLite database the "
            "worker runs inside 'turbocat serve'"
        )
    if migrate.current(settings) not in migrate.heads():
        raise fail("the database is not migrated: run 'turbocat db upgrade' first")
    from turbocat.bootstrap import AppContext, freeze_startup_objects
    from turbocat.logging import configure

    configure(settings.log_level, settings.log_json)
    engine = settings.engine
    config = WorkerConfig(
        queues=queue,
        concurrency=concurrency or engine.concurrency,
        lease_seconds=engine.lease_seconds,
        poll_seconds=engine.poll_seconds,
    )

    async def main() -> None:
        ctx = AppContext.build(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(
            f"worker {config.worker_id} serving {', '.join(config.queues)} "
            f"with {config.concurrency} slots; Ctrl-C stops it after running steps finish"
        )
        served = ctx.served_components()  # the turbocat.components entry points, imported here
        for item in served.by_name.values():
            console.print(
                f"component {item.name} {item.version} on queue {item.queue}", markup=False
            )
        for line in served.errors:
            console.print(f"component not loaded: {line}", markup=False)
        the_worker = ctx.worker(config)
        metrics = None
        if metrics_port is not None:
            from turbocat.engine import worker_metrics

            metrics = worker_metrics.serve(the_worker, metrics_port, metrics_host)
        freeze_startup_objects()
        try:
            # Events are dispatched by every worker; each event starts a subscriber once.
            await asyncio.gather(the_worker.run(stop), ctx.dispatcher().run(stop))
        finally:
            if metrics is not None:
                metrics.close()
            await ctx.close()

    asyncio.run(main())
