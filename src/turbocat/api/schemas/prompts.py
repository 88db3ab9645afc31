"""Bodies for agent prompts."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field, computed_field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain.enums import Visibility

CONTENT_HELP = (
    "prompt text; variables are written {{ vars.name }} (the workflow expression language, "
    "with vars as its only root)"
)
VARIABLES_HELP = "variable name -> {type?, description?, required?, default?}"


class _PromptContent(RequestModel):
    display_name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    prompt_variables: dict[str, dict[str, Any]] | None = Field(
        default=None, description=VARIABLES_HELP
    )
    role: str | None = Field(default=None, max_length=255)
    model_provider: str | None = Field(default=None, max_length=100)
    model_name: str | None = Field(default=None, max_length=255)
    parameters: dict[str, Any] | None = Field(
        default=None, description="model parameters (temperature, max_tokens...)"
    )
    recommended_models: list[Any] | None = Field(default=None, max_length=50)
    tags: list[str] | None = Field(default=None, max_length=50)
    capabilities: list[str] | None = Field(default=None, max_length=100)
    visibility: Visibility | None = None


class PromptCreate(_PromptContent):
    name: str = Field(min_length=1, max_length=100)
    version: str = Field(default="1.0.0", max_length=50, description="semantic version")
    prompt_content: str = Field(min_length=1, max_length=100_000, description=CONTENT_HELP)


class PromptVersionCreate(_PromptContent):
    """A new version; fields left out are copied from the version it is made from."""

    version: str = Field(max_length=50, description="higher than every existing version")
    prompt_content: str | None = Field(
        default=None, min_length=1, max_length=100_000, description=CONTENT_HELP
    )


class PromptUpdate(RequestModel):
    display_name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] | None = Field(default=None, max_length=50)
    capabilities: list[str] | None = Field(default=None, max_length=100)
    visibility: Visibility | None = None
    deprecated: bool | None = None
    recommended_models: list[Any] | None = Field(default=None, max_length=50)


class PromptRender(RequestModel):
    variables: dict[str, Any] = Field(default_factory=dict)


class PromptRendered(ReadModel):
    prompt_id: uuid.UUID
    version: str
    text: str


class PromptRead(ReadModel):
    id: uuid.UUID
    organization_id: uuid.UUID | None = Field(description="null for built-ins")
    name: str
    display_name: str | None
    description: str | None
    version: str
    role: str | None
    prompt_content: str
    prompt_variables: dict[str, Any]
    model_provider: str | None
    model_name: str | None
    parameters: dict[str, Any]
    recommended_models: list[Any]
    capabilities: list[str]
    tags: list[str]
    visibility: Visibility
    deprecated: bool
    created_by_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def builtin(self) -> bool:
        """Shipped with turbocat (no organization)."""
        return self.organization_id is None
