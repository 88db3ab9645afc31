"""The workflow kind's config: templated, validated, turned into a child request."""

from __future__ import annotations

import uuid

import pytest

from turbocat.domain.enums import ParentClosePolicy
from turbocat.engine.agents.base import AgentError, Invocation, RecordingServices
from turbocat.engine.agents.workflow import invoke, prepare


def call(config: dict, inputs: dict | None = None) -> Invocation:
    return Invocation(
        kind="workflow", config=config, inputs=inputs or {}, context={"input": {"which": "b"}},
        services=RecordingServices(), idempotency_key="e:s:0", execution_id=uuid.uuid4(),
        organization_id=uuid.uuid4(), step_key="s",
    )  # fmt: skip


def test_templates_render_and_defaults_fill_in() -> None:
    request = prepare(call({"workflow": "flow-{{ input.which }}"}, {"n": 1}))
    assert request.workflow == "flow-b" and request.version is None and request.wait
    assert request.parent_close_policy is ParentClosePolicy.TERMINATE
    assert request.input == {"n": 1} and request.max_depth == 16
    pinned = prepare(call({"workflow": "x", "version": "{{ inputs.v }}"}, {"v": 2}))
    assert pinned.version == 2


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({}, "workflow"),
        ({"workflow": "x", "version": 0}, "version"),
        ({"workflow": "x", "parent_close_policy": "kill"}, "parent_close_policy"),
        ({"workflow": "{{ nope( }}"}, "workflow"),
    ],
)
def test_a_bad_config_fails_for_good_naming_the_field(config: dict, words: str) -> None:
    with pytest.raises(AgentError) as caught:
        prepare(call(config))
    assert not caught.value.retryable and words in caught.value.message


async def test_it_cannot_run_inline() -> None:
    with pytest.raises(AgentError, match="child execution"):
        await invoke(call({"workflow": "x"}))
