"""The official templates shipped in the package: valid, realistic, and instantiable offline."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from turbocat.domain import agents, templates
from turbocat.domain.definitions import definition_json_schema, validate_definition
from turbocat.domain.definitions.graph import all_steps
from turbocat.domain.enums import AgentType, IntegrationProvider, TemplateType
from turbocat.domain.errors import ValidationFailed
from turbocat.services.templates import read_official_templates

SPECS = read_official_templates()
WORKFLOWS = [s for s in SPECS if s.type is TemplateType.WORKFLOW]


def test_at_least_twelve_with_agents_and_a_step() -> None:
    assert len(SPECS) >= 12
    assert len(WORKFLOWS) >= 10
    kinds = {s.type for s in SPECS}
    assert kinds == set(TemplateType)
    assert len({s.name for s in SPECS}) == len(SPECS)


@pytest.mark.parametrize("spec", WORKFLOWS, ids=lambda s: s.name)
def test_published_schema_and_validator_accept_each_definition(
    spec: templates.TemplateSpec,
) -> None:
    definition = spec.template_data["definition"]
    validator = Draft202012Validator(definition_json_schema())
    errors = [e.message for e in validator.iter_errors(definition)]
    assert errors == []
    validate_definition(definition)


def _inline_components(spec: templates.TemplateSpec) -> list[tuple[str, dict[str, Any]]]:
    if spec.type is TemplateType.STEP:
        doc = {"steps": [spec.template_data["step"]]}
    elif spec.type is TemplateType.WORKFLOW:
        doc = spec.template_data["definition"]
    else:
        return [(spec.template_data["type"], spec.template_data["config"])]
    out = []
    for step, _path, _graph in all_steps(validate_definition(doc)):
        component = getattr(step, "component", None)
        if component is not None:
            out.append((component.kind.value, dict(component.config)))
    return out


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_inline_component_is_a_valid_agent_config(spec: templates.TemplateSpec) -> None:
    found = _inline_components(spec)
    assert found
    for kind, config in found:
        agents.validate_config(AgentType(kind), config)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_metadata_is_complete(spec: templates.TemplateSpec) -> None:
    assert spec.description and len(spec.description) > 60
    assert spec.tags and spec.estimated_time_savings
    assert spec.required_integrations
    assert all(isinstance(p, IntegrationProvider) for p in spec.optional_integrations)
    assert spec.configuration_schema is not None
    # every configuration property has a default, so a template instantiates without any
    for name, prop in spec.configuration_schema["properties"].items():
        assert "default" in prop or name == "system_prompt", name


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_instantiation_with_defaults_gives_valid_values(spec: templates.TemplateSpec) -> None:
    made = templates.instantiate(
        spec.type, spec.template_data, template_name=spec.name,
        template_description=spec.description, template_category=spec.category.value,
        template_tags=spec.tags, configuration_schema=spec.configuration_schema,
        overrides=templates.Overrides(),
    )  # fmt: skip
    if spec.type is TemplateType.AGENT:
        assert made.agent_type is not None
        agents.validate_config(made.agent_type, made.values["config"])
    else:
        validate_definition(made.values["definition"])
        assert made.values["name"]


def test_configuration_overrides_replace_vars_and_are_checked() -> None:
    spec = next(s for s in SPECS if s.name == "Lead scoring and routing")
    kwargs: dict[str, Any] = {
        "template_name": spec.name, "template_description": spec.description,
        "template_category": spec.category.value, "template_tags": spec.tags,
        "configuration_schema": spec.configuration_schema,
    }  # fmt: skip
    made = templates.instantiate(
        spec.type, spec.template_data,
        overrides=templates.Overrides(name="Leads", configuration={"hot_threshold": 55}), **kwargs,
    )  # fmt: skip
    assert made.values["name"] == "Leads"
    assert made.values["definition"]["vars"]["hot_threshold"] == 55
    assert made.values["definition"]["vars"]["model"] == "gpt-4o-mini"  # default kept
    with pytest.raises(ValidationFailed) as err:
        templates.instantiate(
            spec.type, spec.template_data,
            overrides=templates.Overrides(configuration={"hot_threshold": "high"}), **kwargs,
        )  # fmt: skip
    assert err.value.errors[0].path == ("body", "overrides", "configuration", "hot_threshold")
    with pytest.raises(ValidationFailed):
        templates.instantiate(
            spec.type, spec.template_data,
            overrides=templates.Overrides(configuration={"surprise": 1}), **kwargs,
        )  # fmt: skip


def test_agent_overrides_replace_config_fields() -> None:
    spec = next(s for s in SPECS if s.type is TemplateType.AGENT)
    made = templates.instantiate(
        spec.type, spec.template_data, template_name=spec.name,
        template_description=spec.description, template_category=spec.category.value,
        template_tags=spec.tags, configuration_schema=spec.configuration_schema,
        overrides=templates.Overrides(configuration={"model": "llama3.1"}),
    )  # fmt: skip
    assert made.values["config"]["model"] == "llama3.1"


def test_configuration_schema_must_target_vars() -> None:
    spec = WORKFLOWS[0]
    bad = {"type": "object", "properties": {"nowhere": {"type": "string"}}}
    with pytest.raises(ValidationFailed) as err:
        templates.check_configuration_schema(spec.type, spec.template_data, bad)
    assert err.value.errors[0].path[-1] == "nowhere"


def test_step_templates_stand_alone() -> None:
    step = {"key": "a", "type": "agent", "component": {"kind": "data", "config": {"query": "x"}}}
    templates.validate_data(TemplateType.STEP, {"step": step})
    with pytest.raises(ValidationFailed) as err:
        templates.validate_data(TemplateType.STEP, {"step": {**step, "depends_on": ["b"]}})
    assert err.value.errors[0].path == ("body", "template_data", "step", "depends_on")
    with pytest.raises(ValidationFailed) as err:
        templates.validate_data(TemplateType.STEP, {"step": {**step, "colour": "red"}})
    assert err.value.errors[0].path[:3] == ("body", "template_data", "step")
