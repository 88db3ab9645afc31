"""Group commit (``engine.recorder``) on a real database: steps of a fan-out that end
together are recorded in shared transactions, and every one of them exactly once."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.conftest import signup
from tests.integration.test_engine import data_step, run_workflow
from turbocat.api.app import create_app
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.engine.worker import WorkerConfig
from turbocat.engine.worker_metrics import registry_for


async def test_steps_that_end_together_share_transactions(
    settings: Settings, app_context: AppContext
) -> None:
    app = create_app(settings, app_context, embedded_worker=False)
    wide = [data_step(f"p{i:02d}", mapping={"v": f"{{{{ {i} }}}}"}) for i in range(40)]
    join = data_step(
        "join",
        deps=tuple(s["key"] for s in wide),
        mapping={"sum": "{{ " + " + ".join(f"steps.p{i:02d}.output.v" for i in range(40)) + " }}"},
    )
    definition = {"steps": [*wide, join], "outputs": {"sum": "{{ steps.join.output.sum }}"}}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            owner = await signup(client, "batch@example.com")
            worker = app_context.worker(WorkerConfig(concurrency=8, poll_seconds=0.2))
            stop = asyncio.Event()
            running = asyncio.create_task(worker.run(stop))
            try:
                done = await run_workflow(client, owner, definition, seconds=60)
            finally:
                stop.set()
                await asyncio.wait_for(running, timeout=30)
    assert done["status"] == "completed", done
    assert done["output_data"] == {"sum": sum(range(40))}
    assert done["steps_completed"] == 41
    assert sorted(run["status"] for run in done["steps"]) == ["completed"] * 41
    recorder = worker.recorder
    assert recorder.recorded == 41
    assert recorder.batches < recorder.recorded  # some ended together and went together
    assert worker.steps_run == {"succeeded": 41}
    exposed = registry_for(worker).get_sample_value("turbocat_worker_process_record_batches_total")
    assert exposed == recorder.batches
