"""The bench's Temporal workflows and activity, in a module of their own: Temporal's workflow
sandbox re-imports the module that defines a workflow, which cannot be ``__main__``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

STEP_TIMEOUT = timedelta(seconds=60)


@activity.defn
async def noop(x: int) -> int:
    return x


@workflow.defn
class Sequential:
    @workflow.run
    async def run(self, steps: int) -> int:
        result = 0
        for _ in range(steps):
            result = await workflow.execute_activity(
                noop, result + 1, start_to_close_timeout=STEP_TIMEOUT
            )
        return result


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, steps: int) -> int:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(noop, i, start_to_close_timeout=STEP_TIMEOUT)
                for i in range(steps)
            )
        )
        return sum(results)


@workflow.defn
class Single:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(noop, 1, start_to_close_timeout=STEP_TIMEOUT)


WORKFLOWS = [Sequential, FanOut, Single]
ACTIVITIES = [noop]
