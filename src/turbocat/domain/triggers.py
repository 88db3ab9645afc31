"""``trigger_config`` of a workflow: schedules, webhook behaviour and event subscriptions.

Validated when a workflow is saved; the scheduler, webhooks and events run what it says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from turbocat.domain import events
from turbocat.domain.enums import MisfirePolicy
from turbocat.domain.errors import FieldError, ValidationFailed
from turbocat.domain.expressions import ExpressionError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_cron(expression: str) -> str:
    """A 5-field (minute) or 6-field (with seconds first) cron expression, or ValueError."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError("a cron expression has 5 fields (or 6 with seconds first)")
    if not croniter.is_valid(expression, second_at_beginning=len(fields) == 6):
        raise ValueError(f"{expression!r} is not a valid cron expression")
    return " ".join(fields)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Paris)") from None
    return name


class ScheduleTrigger(_Strict):
    cron: str = Field(description="5 fields, or 6 with seconds first")
    timezone: str = "UTC"
    enabled: bool = True
    input: dict[str, Any] = Field(default_factory=dict)
    misfire_policy: MisfirePolicy = MisfirePolicy.SKIP
    start_immediately: bool = False
    max_runs: int | None = Field(default=None, ge=1)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)


class WebhookTrigger(_Strict):
    enabled: bool = True
    wait_for_result: bool = False
    response_status: int = Field(default=200, ge=200, le=299)


class EventTrigger(_Strict):
    pattern: str = Field(min_length=1, max_length=200, description="event name; '*' wildcards")
    filter: str | None = Field(default=None, max_length=4096, description="expression on event")

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                events.compile_filter(value)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return value


class TriggerConfig(_Strict):
    schedules: list[ScheduleTrigger] = Field(default_factory=list, max_length=20)
    webhook: WebhookTrigger | None = None
    events: list[EventTrigger] = Field(default_factory=list, max_length=20)


def validate_trigger_config(
    doc: Mapping[str, Any], prefix: tuple[str | int, ...] = ("body", "trigger_config")
) -> dict[str, Any]:
    try:
        parsed = TriggerConfig.model_validate(dict(doc))
    except ValidationError as exc:
        raise ValidationFailed(
            "invalid trigger_config",
            [
                FieldError(
                    (*prefix, *e["loc"]), str(e["msg"]).removeprefix("Value error, "), e["type"]
                )
                for e in exc.errors()
            ],
        ) from None
    return parsed.model_dump(mode="json", exclude_defaults=True)
