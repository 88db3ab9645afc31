"""Bodies for the component registry."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field, computed_field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain.enums import ComponentKind, Visibility


class ComponentCreate(RequestModel):
    """A custom component: a Python callable that workers serve on ``task_queue``."""

    name: str = Field(min_length=1, max_length=100, description="steps name it in component.name")
    display_name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    version: str = Field(default="1.0.0", max_length=50, description="semantic version")
    visibility: Visibility = Visibility.ORGANIZATION
    config_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema")
    input_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema")
    output_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema")
    implementation_path: str | None = Field(
        default=None, max_length=500, description="package.module:function (never imported here)"
    )
    package: str | None = Field(default=None, max_length=255, description="distribution name")
    task_queue: str | None = Field(default=None, max_length=255)
    tags: list[str] = Field(default_factory=list, max_length=50)
    capabilities: list[str] = Field(default_factory=list, max_length=100)


class ComponentUpdate(RequestModel):
    display_name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    deprecated: bool | None = None
    visibility: Visibility | None = None
    tags: list[str] | None = Field(default=None, max_length=50)


class ComponentRead(ReadModel):
    id: uuid.UUID
    organization_id: uuid.UUID | None = Field(description="null for built-ins")
    name: str
    display_name: str | None
    description: str | None
    kind: ComponentKind
    version: str
    visibility: Visibility
    config_schema: dict[str, Any]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    tags: list[str]
    capabilities: list[str]
    agent_prompt_id: uuid.UUID | None
    model_provider: str | None
    model_name: str | None
    implementation_path: str | None
    package: str | None
    task_queue: str | None
    deprecated: bool
    created_by_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def builtin(self) -> bool:
        """Shipped with turbocat (no organization, not custom: workers register custom
        components without an organization too)."""
        return self.organization_id is None and self.kind != ComponentKind.CUSTOM
