"""Per-type agent configuration (SPEC section 6), validated when an agent is saved.

The runtimes that execute these configurations arrive with the engine; the shapes are fixed
here so that what is saved now is what will run.
"""

from __future__ import annotations

import ast
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from turbocat.domain.enums import AgentType, ParentClosePolicy
from turbocat.domain.errors import FieldError, ValidationFailed
from turbocat.domain.jsonschemas import check_json_schema

MAX_CODE_BYTES = 256 * 1024


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LlmTool(_Config):
    """Another agent or workflow of the same organization the model may call."""

    type: Literal["agent", "workflow"]
    ref: str = Field(min_length=1, max_length=255, description="id or name (kebab name)")
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=2000)


class LlmConfig(_Config):
    """Chat completions over the OpenAI-compatible or the Anthropic protocol."""

    provider: Literal["openai", "anthropic"] = "openai"
    """'openai' is any server speaking OpenAI's chat completions (Azure, vLLM, Ollama, ...)."""
    model: str | None = Field(default=None, min_length=1, max_length=255)
    base_url: str | None = Field(default=None, max_length=2048)
    integration_id: uuid.UUID | None = None
    """Integration holding the API key; without one the provider must need none (local)."""
    system_prompt: str | None = Field(default=None, max_length=100_000)
    prompt_id: uuid.UUID | None = None
    """An agent prompt (versioned, with variables) used instead of ``system_prompt``."""
    prompt_variables: dict[str, Any] = Field(default_factory=dict)
    user_prompt: str | None = Field(default=None, max_length=100_000)
    """Template for the user message; default: the step input as JSON."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    response_schema: dict[str, Any] | None = None
    """JSON Schema the reply must satisfy (structured output)."""
    tools: list[LlmTool] = Field(default_factory=list, max_length=64)
    max_iterations: int = Field(default=8, ge=1, le=100)
    stream: bool = False
    timeout_ms: int = Field(default=120_000, ge=100, le=3_600_000)

    @model_validator(mode="after")
    def _prompt_source(self) -> LlmConfig:
        if self.system_prompt is not None and self.prompt_id is not None:
            raise ValueError("give either system_prompt or prompt_id, not both")
        if self.model is None and self.prompt_id is None:
            raise ValueError("model is required unless prompt_id names a prompt with a model")
        return self


class CodeConfig(_Config):
    """User Python: ``def main(input: dict) -> JSON``, run in a separate, limited process."""

    language: Literal["python"] = "python"
    source: str = Field(min_length=1)


class ApiConfig(_Config):
    """An HTTP request with templated parts; SSRF-protected when it runs."""

    method: str = Field(
        default="GET", pattern=r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|\{\{.+\}\})$"
    )
    url: str = Field(min_length=1, max_length=8192)
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)
    body: Any = None
    integration_id: uuid.UUID | None = None
    timeout_ms: int = Field(default=30_000, ge=100, le=600_000)
    follow_redirects: bool = True
    max_redirects: int = Field(default=5, ge=0, le=5)
    response_type: Literal["auto", "json", "text"] = "auto"
    max_response_bytes: int = Field(default=10 * 1024 * 1024, ge=1, le=100 * 1024 * 1024)
    retry_on_status: list[int] = Field(default_factory=lambda: [429, 502, 503, 504])
    fail_on_status: list[int] | None = None
    """Statuses that fail the step; default: any status >= 400 not in retry_on_status."""


class DataOperation(_Config):
    """One list operation; ``where``/``by`` are bare expressions with ``item`` = the element."""

    op: Literal["filter", "sort", "group", "aggregate", "map", "limit", "unique"]
    where: str | None = Field(default=None, max_length=4096, description="filter: keep if true")
    by: str | None = Field(
        default=None, max_length=4096, description="sort/group/unique key, map/aggregate value"
    )
    desc: bool = False
    count: int | None = Field(default=None, ge=0, description="limit: how many to keep")

    @model_validator(mode="after")
    def _needs(self) -> DataOperation:
        if self.op == "filter" and not self.where:
            raise ValueError("filter needs where")
        if self.op in ("group", "map") and not self.by:
            raise ValueError(f"{self.op} needs by")
        if self.op == "limit" and self.count is None:
            raise ValueError("limit needs count")
        return self


class DataConfig(_Config):
    """JSON transformations of the step input ``data`` (or the whole input): a JMESPath
    ``query``, then list ``operations``; or a ``mapping`` of templates over the workflow
    context (input, steps, vars), which becomes the output."""

    query: str | None = Field(default=None, max_length=10_000)
    mapping: dict[str, Any] | None = None
    operations: list[DataOperation] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _something(self) -> DataConfig:
        if self.query is None and self.mapping is None and not self.operations:
            raise ValueError("give a query, a mapping or operations")
        return self


class WorkflowConfig(_Config):
    """Run another workflow as a child execution."""

    workflow: str = Field(min_length=1, max_length=255, description="workflow id or kebab name")
    version: int | None = Field(default=None, ge=1, description="pinned version; default active")
    wait: bool = True
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE


CONFIG_MODELS: dict[AgentType, type[BaseModel]] = {
    AgentType.LLM: LlmConfig,
    AgentType.CODE: CodeConfig,
    AgentType.API: ApiConfig,
    AgentType.DATA: DataConfig,
    AgentType.WORKFLOW: WorkflowConfig,
}


def config_json_schema(agent_type: AgentType) -> dict[str, Any]:
    return CONFIG_MODELS[agent_type].model_json_schema()


def _field_errors(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[FieldError]:
    return [
        FieldError(
            prefix + tuple(err["loc"]),
            str(err["msg"]).removeprefix("Value error, "),
            str(err["type"]),
        )
        for err in exc.errors()
    ]


def check_python_source(source: str, prefix: tuple[str | int, ...]) -> None:
    """Parse (never run) user code: it must be valid Python defining ``main``."""
    path = (*prefix, "source")
    if len(source.encode()) > MAX_CODE_BYTES:
        raise ValidationFailed.field(path, f"source is larger than {MAX_CODE_BYTES} bytes")
    try:
        tree = ast.parse(source, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise ValidationFailed.field(
            path, f"not valid Python{where}: {exc}", "syntax_error"
        ) from None
    if not any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "main"
        for n in tree.body
    ):
        raise ValidationFailed.field(
            path, "define a top-level function main(input)", "missing_main"
        )


def validate_config(
    agent_type: AgentType,
    config: Mapping[str, Any],
    prefix: tuple[str | int, ...] = ("body", "config"),
) -> dict[str, Any]:
    """The config in canonical form (defaults filled in), or ValidationFailed with field paths."""
    model = CONFIG_MODELS[agent_type]
    try:
        parsed = model.model_validate(dict(config))
    except ValidationError as exc:
        raise ValidationFailed(
            f"invalid {agent_type.value} agent config", _field_errors(exc, prefix)
        ) from None
    if isinstance(parsed, CodeConfig):
        check_python_source(parsed.source, prefix)
    if isinstance(parsed, LlmConfig) and parsed.response_schema is not None:
        check_json_schema(parsed.response_schema, (*prefix, "response_schema"))
    return parsed.model_dump(mode="json", exclude_none=True)
