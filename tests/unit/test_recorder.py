"""``engine.recorder``: outcomes that end while a batch is being recorded go together in the
next batch; a lone outcome is recorded at once; a failing batch is retried one by one; what
was recorded for a caller that stopped waiting is handed over, not dropped."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest

from turbocat.engine.recorder import Pending, Recorder
from turbocat.engine.runner import StepOutcome


def pending(name: str) -> Pending:
    return Pending(
        run_id=uuid.uuid5(uuid.NAMESPACE_OID, name),
        epoch=1,
        outcome=StepOutcome(output={"name": name}),
        plan=cast(Any, None),
        claimed=(uuid.uuid4(), None),
        lines=[],
        organization_id=uuid.uuid4(),
        tokens=0,
    )


def name(item: Pending) -> str:
    return str(cast(dict[str, Any], item.outcome.output)["name"])


class Store:
    """Records batches, slowly enough for others to queue meanwhile."""

    def __init__(self, *, failing: str | None = None, delay: float = 0.01) -> None:
        self.batches: list[list[str]] = []
        self.failing = failing
        self.delay = delay
        self.active = self.most = 0

    async def record(self, batch: list[Pending]) -> list[str]:
        names = [name(item) for item in batch]
        self.batches.append(names)
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        if self.failing in names:
            raise RuntimeError(f"{self.failing} cannot be recorded")
        return [f"recorded {n}" for n in names]


async def test_a_lone_outcome_goes_at_once_and_later_ones_are_batched() -> None:
    store = Store()
    recorder = Recorder(store.record)
    first = asyncio.create_task(recorder.record(pending("a")))
    await asyncio.sleep(0)  # "a" is being recorded: the next ones wait for it, together
    rest = [asyncio.create_task(recorder.record(pending(n))) for n in "bcd"]
    assert await first == "recorded a"
    assert await asyncio.gather(*rest) == ["recorded b", "recorded c", "recorded d"]
    assert store.batches == [["a"], ["b", "c", "d"]]
    assert (recorder.batches, recorder.recorded) == (2, 4)


async def test_with_two_in_flight_the_next_batch_does_not_wait_for_the_first() -> None:
    store = Store(delay=0.05)
    recorder = Recorder(store.record, in_flight=2)
    first = asyncio.create_task(recorder.record(pending("a")))
    await asyncio.sleep(0)
    second = asyncio.create_task(recorder.record(pending("b")))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(recorder.record(pending(n))) for n in "cd"]
    await asyncio.gather(first, second, *rest)
    assert store.batches == [["a"], ["b"], ["c", "d"]]
    assert store.most == 2


async def test_batches_are_bounded() -> None:
    store = Store()
    recorder = Recorder(store.record, max_batch=2)
    results = await asyncio.gather(*(recorder.record(pending(n)) for n in "abcde"))
    assert results == [f"recorded {n}" for n in "abcde"]
    assert store.batches == [["a", "b"], ["c", "d"], ["e"]]


async def test_a_failing_batch_is_retried_one_by_one() -> None:
    store = Store(failing="c")
    recorder = Recorder(store.record)
    tasks = [asyncio.create_task(recorder.record(pending(n))) for n in "bcd"]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert done[0] == "recorded b" and done[2] == "recorded d"
    assert isinstance(done[1], RuntimeError)
    assert store.batches == [["b", "c", "d"], ["b"], ["c"], ["d"]]


async def test_what_a_cancelled_caller_was_given_is_handed_over() -> None:
    store = Store(delay=0.05)
    orphans: list[Any] = []
    recorder = Recorder(store.record, orphaned=orphans.append)
    waiting = asyncio.create_task(recorder.record(pending("a")))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await recorder.record(pending("b")) == "recorded b"
    assert orphans == ["recorded a"]
