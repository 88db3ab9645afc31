"""Big workloads complete: a definition of 500 steps, a loop over 1,000 items."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.conftest import signup
from tests.integration.test_engine import data_step, run_workflow

pytestmark = pytest.mark.slow


async def test_a_definition_with_500_steps_completes(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "wide@example.com")
    # 25 chains of 20 steps, joined at the end: long paths and wide fan-in at once
    steps = []
    for chain in range(25):
        for i in range(20):
            key = f"c{chain}_s{i}"
            deps = (f"c{chain}_s{i - 1}",) if i else ()
            steps.append(data_step(key, deps=deps, mapping={"v": f"{{{{ {chain * 100 + i} }}}}"}))
    steps[-1] = data_step(
        "c24_s19", deps=tuple(f"c{c}_s18" for c in range(25)), mapping={"v": "{{ 2419 }}"}
    )
    assert len(steps) == 500
    started = time.monotonic()
    done = await run_workflow(
        client, owner, {"steps": steps, "outputs": {"last": "{{ steps.c24_s19.output.v }}"}},
        seconds=120,
    )  # fmt: skip
    assert done["status"] == "completed", done
    assert done["output_data"] == {"last": 2419}
    assert done["steps_completed"] == 500
    print(f"500 steps: {time.monotonic() - started:.1f} s")


async def test_a_loop_over_1000_items_completes_in_order(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "thousand@example.com")
    definition = {
        "steps": [
            {
                "key": "each",
                "type": "loop",
                "over": "{{ range(1000) }}",
                "max_concurrency": 16,
                "body": data_step("sq", mapping={"v": "{{ item * item }}"}),
            },
            data_step("total", deps=("each",), mapping={"n": "{{ len(steps.each.output) }}"}),
        ],
        "outputs": {"n": "{{ steps.total.output.n }}", "last": "{{ steps.each.output[999].v }}"},
    }
    started = time.monotonic()
    done = await run_workflow(client, owner, definition, seconds=180)
    assert done["status"] == "completed", done
    assert done["output_data"] == {"n": 1000, "last": 999 * 999}
    assert done["steps_completed"] == 1002
    print(f"1000 items: {time.monotonic() - started:.1f} s")
