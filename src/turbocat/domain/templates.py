"""Templates (seeds 000/001/004): what ``template_data`` holds per type, and instantiation.

``template_data`` by template type:

- ``workflow``: ``{definition, name?, description?, category?, tags?}`` where ``definition`` is a
  workflow definition document (section 4 of the spec; validated like a saved workflow).
- ``agent``: ``{type, config, name?, description?, parameters?, capabilities?, tags?}``, where
  ``config`` is a valid configuration of the agent ``type``.
- ``step``: ``{step, vars?, name?, description?}``: one step (no ``depends_on``/``when``; it may
  read ``input`` and ``vars``). Instantiating it makes a one-step workflow.

Overrides at instantiation are deliberately simple and safe: nothing in ``template_data`` is
treated as a template of the template. ``name``, ``description`` and ``tags`` replace the
template's; ``configuration`` is validated against the template's ``configuration_schema``
(after filling in the schema's property defaults) and its values then replace

- for workflow and step templates: entries of ``definition.vars``, which the steps read as
  ``{{ vars.x }}`` at run time (the same expressions as every workflow);
- for agent templates: top-level fields of the agent's ``config`` (``model``, ``temperature``...),
  and the config is validated again.

Every property of a ``configuration_schema`` must name such a var (or config field), so a
configuration value always lands somewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from turbocat.domain import agents, definitions
from turbocat.domain.enums import (
    AgentType,
    IntegrationProvider,
    TemplateDifficulty,
    TemplateType,
    WorkflowCategory,
)
from turbocat.domain.errors import FieldError, ValidationFailed
from turbocat.domain.jsonschemas import check_json_schema, validate_instance

Path = tuple[str | int, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkflowTemplateData(_Strict):
    definition: dict[str, Any]
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    category: WorkflowCategory | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)


class AgentTemplateData(_Strict):
    type: AgentType
    config: dict[str, Any]
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    capabilities: list[str] = Field(default_factory=list, max_length=100)
    tags: list[str] = Field(default_factory=list, max_length=50)


class StepTemplateData(_Strict):
    step: dict[str, Any]
    vars: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)


class Overrides(_Strict):
    """What a caller may change when instantiating a template."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] | None = Field(default=None, max_length=50)
    configuration: dict[str, Any] = Field(default_factory=dict)


_MODELS: dict[TemplateType, type[_Strict]] = {
    TemplateType.WORKFLOW: WorkflowTemplateData,
    TemplateType.AGENT: AgentTemplateData,
    TemplateType.STEP: StepTemplateData,
}


def _parse(kind: TemplateType, data: Mapping[str, Any], path: Path) -> Any:
    try:
        return _MODELS[kind].model_validate(dict(data))
    except ValidationError as exc:
        errors = [
            FieldError((*path, *e["loc"]), str(e["msg"]).removeprefix("Value error, "), e["type"])
            for e in exc.errors()
        ]
        raise ValidationFailed(f"invalid {kind.value} template_data", errors) from None


def _step_definition(data: StepTemplateData) -> dict[str, Any]:
    key = data.step.get("key")
    doc: dict[str, Any] = {"steps": [data.step]}
    if isinstance(key, str):
        doc["outputs"] = {"result": f"{{{{ steps.{key}.output }}}}"}
    if data.vars:
        doc["vars"] = data.vars
    return doc


def validate_data(
    kind: TemplateType,
    data: Mapping[str, Any],
    *,
    limits: definitions.DefinitionLimits = definitions.DEFAULT_DEFINITION_LIMITS,
    path: Path = ("body", "template_data"),
) -> dict[str, Any]:
    """``template_data`` in canonical form, or ValidationFailed naming each problem's field."""
    if not isinstance(data, Mapping):
        raise ValidationFailed.field(path, "must be an object")
    parsed = _parse(kind, data, path)
    if isinstance(parsed, WorkflowTemplateData):
        defn = definitions.validate_definition(
            parsed.definition, limits=limits, path_prefix=(*path, "definition")
        )
        parsed.definition = definitions.canonical_document(defn)
    elif isinstance(parsed, AgentTemplateData):
        parsed.config = agents.validate_config(parsed.type, parsed.config, (*path, "config"))
        if parsed.parameters:
            check_json_schema(parsed.parameters, (*path, "parameters"))
    elif isinstance(parsed, StepTemplateData):
        for banned in ("depends_on", "when"):
            if parsed.step.get(banned):
                raise ValidationFailed.field(
                    (*path, "step", banned), "a step template stands alone: no " + banned
                )
        try:
            definitions.validate_definition(
                _step_definition(parsed), limits=limits, path_prefix=path
            )
        except ValidationFailed as exc:
            raise ValidationFailed(exc.detail, [_step_path(e, path) for e in exc.errors]) from None
    dumped: dict[str, Any] = parsed.model_dump(mode="json", exclude_none=True)
    return dumped


def _step_path(error: FieldError, path: Path) -> FieldError:
    n = len(path)
    if error.path[: n + 2] == (*path, "steps", 0):
        return FieldError((*path, "step", *error.path[n + 2 :]), error.message, error.code)
    return error


def _targets(kind: TemplateType, data: Mapping[str, Any]) -> tuple[set[str], str]:
    """Names a configuration may set, and where they live (for messages)."""
    if kind is TemplateType.AGENT:
        model = agents.CONFIG_MODELS[AgentType(data["type"])]
        return set(model.model_fields), "config"
    if kind is TemplateType.WORKFLOW:
        return set(data["definition"].get("vars", {})), "definition.vars"
    return set(data.get("vars", {})), "vars"


def check_configuration_schema(
    kind: TemplateType,
    data: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
    path: Path = ("body", "configuration_schema"),
) -> None:
    """A valid JSON Schema of an object whose properties each name a var (or config field)."""
    if schema is None:
        return
    check_json_schema(schema, path)
    if schema.get("type") != "object":
        raise ValidationFailed.field((*path, "type"), "a configuration schema describes an object")
    targets, where = _targets(kind, data)
    for name in schema.get("properties", {}):
        if name not in targets:
            raise ValidationFailed.field(
                (*path, "properties", name),
                f"configuration property {name!r} is not in the template's {where}",
            )


def configuration_with_defaults(
    schema: Mapping[str, Any] | None, given: Mapping[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prop in (schema or {}).get("properties", {}).items():
        if isinstance(prop, Mapping) and "default" in prop:
            out[name] = prop["default"]
    out.update(given)
    return out


@dataclass(frozen=True)
class Instance:
    """What instantiating a template creates: a workflow (values for the workflow service) or
    an agent (type and values for the agent service)."""

    kind: TemplateType
    values: dict[str, Any]
    agent_type: AgentType | None = None
    configuration: dict[str, Any] = field(default_factory=dict)


def instantiate(
    kind: TemplateType,
    data: Mapping[str, Any],
    *,
    template_name: str,
    template_description: str | None,
    template_category: str,
    template_tags: list[str],
    configuration_schema: Mapping[str, Any] | None,
    overrides: Overrides,
) -> Instance:
    """Apply ``overrides`` to the template (see the module docstring); no I/O."""
    path: Path = ("body", "overrides", "configuration")
    config = configuration_with_defaults(configuration_schema, overrides.configuration)
    if configuration_schema is not None:
        validate_instance(config, configuration_schema, path)
    elif config:
        raise ValidationFailed.field(path, "this template takes no configuration")
    targets, where = _targets(kind, data)
    for name in config:
        if name not in targets:
            raise ValidationFailed.field(
                (*path, name), f"{name!r} is not in the template's {where}"
            )
    name = overrides.name or data.get("name") or template_name
    description = overrides.description or data.get("description") or template_description
    tags = overrides.tags if overrides.tags is not None else (data.get("tags") or template_tags)
    common = {"name": name, "description": description, "tags": list(tags)}
    if kind is TemplateType.AGENT:
        agent_config = {**data["config"], **config}
        agent_type = AgentType(data["type"])
        agents.validate_config(agent_type, agent_config, path)
        values = {
            **common,
            "config": agent_config,
            "capabilities": list(data.get("capabilities", [])),
        }
        if data.get("parameters"):
            values["parameters"] = data["parameters"]
        return Instance(kind, values, agent_type, config)
    if kind is TemplateType.WORKFLOW:
        definition = dict(data["definition"])
        category = data.get("category") or template_category
    else:
        definition = _step_definition(StepTemplateData.model_validate(dict(data)))
        category = template_category
    if config:
        definition["vars"] = {**definition.get("vars", {}), **config}
    values = {**common, "definition": definition}
    if category in {c.value for c in WorkflowCategory}:
        values["category"] = WorkflowCategory(category)
    return Instance(kind, values, None, config)


class TemplateSpec(_Strict):
    """A complete template as a file or a request describes it (official templates ship as
    YAML files of this shape)."""

    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    type: TemplateType
    category: WorkflowCategory = WorkflowCategory.CUSTOM
    tags: list[str] = Field(default_factory=list, max_length=50)
    difficulty: TemplateDifficulty = TemplateDifficulty.BEGINNER
    estimated_time_savings: str | None = Field(default=None, max_length=100)
    required_integrations: list[IntegrationProvider] = Field(default_factory=list)
    optional_integrations: list[IntegrationProvider] = Field(default_factory=list)
    configuration_schema: dict[str, Any] | None = None
    template_data: dict[str, Any]


def check_spec(
    spec: TemplateSpec,
    *,
    limits: definitions.DefinitionLimits = definitions.DEFAULT_DEFINITION_LIMITS,
    path: Path = ("body",),
) -> TemplateSpec:
    """``spec`` with canonical ``template_data`` and tags, after every check."""
    data = validate_data(
        spec.type, spec.template_data, limits=limits, path=(*path, "template_data")
    )
    check_configuration_schema(
        spec.type, data, spec.configuration_schema, (*path, "configuration_schema")
    )
    tags = sorted({t.strip().lower() for t in spec.tags if t.strip()})
    return spec.model_copy(update={"template_data": data, "tags": tags})
