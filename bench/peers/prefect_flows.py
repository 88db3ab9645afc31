"""The bench's Prefect flows, in a module of their own: a served flow runs in a subprocess
that imports it again, which ``__main__`` cannot be."""

from __future__ import annotations

from prefect import flow, task


@task
def noop(x: int) -> int:
    return x


@flow
def sequential(steps: int) -> int:
    result = 0
    for _ in range(steps):
        result = noop(result + 1)
    return result


@flow
def fan_out(steps: int) -> int:
    futures = [noop.submit(i) for i in range(steps)]
    return sum(f.result() for f in futures)


@flow
def single() -> int:
    return noop(1)
