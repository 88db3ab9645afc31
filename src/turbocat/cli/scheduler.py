"""``turbocat scheduler``: fire cron schedules (and run deployment health checks) from PostgreSQL.

Run as many as you like beside ``turbocat serve`` and the workers: each slot still fires once.
"""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy.engine import make_url

from turbocat.cli.common import console, fail, settings_or_exit
from turbocat.db import migrate


def scheduler() -> None:
    """Run a scheduler: fire due cron slots of every organization's schedules, exactly once
    each however many schedulers run, and check the health of running deployments. Stateless:
    stop or kill it at any moment."""
    settings = settings_or_exit()
    if make_url(settings.resolved_database_url).get_backend_name() == "sqlite":
        raise fail(
            "separate scheduler processes need PostgreSQL; with the embedded SQLite database the "
            "scheduler runs inside 'turbocat serve'"
        )
    if migrate.current(settings) not in migrate.heads():
        raise fail("the database is not migrated: run 'turbocat db upgrade' first")
    from turbocat.bootstrap import AppContext
    from turbocat.logging import configure

    configure(settings.log_level, settings.log_json)

    async def main() -> None:
        ctx = AppContext.build(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print("scheduler running; Ctrl-C stops it")
        try:
            await ctx.scheduler().run(stop)
        finally:
            await ctx.close()

    asyncio.run(main())
