"""Plan limits (seed 004), in one place. ``None`` means unlimited.

The defaults are starter 5 workflows / 3 integrations, professional 25 / 10, enterprise
unlimited; operators override them in settings (``[plans.starter]`` in turbocat.toml).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from turbocat.domain.enums import Plan
from turbocat.domain.errors import QuotaExceeded


@dataclass(frozen=True)
class PlanLimits:
    workflows: int | None
    """Workflow lineages (versions of one workflow count once), excluding soft-deleted ones."""
    integrations: int | None
    executions_per_month: int | None = None
    """Executions started per calendar month (UTC); re-runs and child executions count."""
    ai_tokens_per_month: int | None = None
    """LLM tokens (prompt + completion) per calendar month (UTC); checked before an llm step."""


DEFAULT_LIMITS: dict[Plan, PlanLimits] = {
    Plan.STARTER: PlanLimits(workflows=5, integrations=3),
    Plan.PROFESSIONAL: PlanLimits(workflows=25, integrations=10),
    Plan.ENTERPRISE: PlanLimits(workflows=None, integrations=None),
}

_LABELS = {"workflows": "workflows", "integrations": "integrations"}


def check(plan: Plan, limits: PlanLimits, resource: str, current: int, adding: int = 1) -> None:
    """Refuse when ``current + adding`` would pass the plan's limit for ``resource``."""
    limit: int | None = getattr(limits, resource)
    if limit is not None and current + adding > limit:
        raise QuotaExceeded(
            f"the {plan.value} plan allows {limit} {_LABELS.get(resource, resource)}; "
            f"this organization has {current}. Upgrade the plan or remove some first.",
            limit=resource,
            plan=plan.value,
        )


MONTHLY = {"executions_per_month": "executions", "ai_tokens_per_month": "AI tokens"}


def month_of(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC calendar month ``now`` falls in, as [start, end): the quota period."""
    start = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end


def check_monthly(
    plan: Plan, limits: PlanLimits, resource: str, used: int, now: dt.datetime, adding: int = 1
) -> None:
    """Refuse when this month's ``used`` plus ``adding`` would pass the plan's monthly quota
    (``executions_per_month`` or ``ai_tokens_per_month``), saying when it resets."""
    limit: int | None = getattr(limits, resource)
    if limit is None or used + adding <= limit:
        return
    resets = month_of(now)[1]
    raise QuotaExceeded(
        f"the {plan.value} plan allows {limit} {MONTHLY[resource]} per month; this organization "
        f"has used {used} this month. The quota resets at {resets.isoformat()}; upgrade the "
        "plan to go on sooner.",
        limit=resource,
        plan=plan.value,
        resets_at=resets.isoformat(),
    )


def any_limit(limits: list[PlanLimits], resource: str) -> bool:
    """Whether any plan sets ``resource``: when none does, nothing needs checking."""
    return any(getattr(each, resource) is not None for each in limits)


@dataclass(frozen=True)
class Quotas:
    """The operator's limits for every plan (settings ``[plans.*]``), as the engine and the
    services that start executions see them."""

    limits: Mapping[Plan, PlanLimits] = field(default_factory=lambda: dict(DEFAULT_LIMITS))

    def of(self, plan: Plan) -> PlanLimits:
        return self.limits.get(plan, DEFAULT_LIMITS[plan])

    @property
    def executions(self) -> bool:
        """Whether some plan has a monthly execution quota."""
        return any_limit(list(self.limits.values()), "executions_per_month")

    @property
    def tokens(self) -> bool:
        """Whether some plan has a monthly AI token quota."""
        return any_limit(list(self.limits.values()), "ai_tokens_per_month")
