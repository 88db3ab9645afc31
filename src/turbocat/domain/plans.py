"""Plan limits (seed 004), in one place. ``None`` means unlimited.

The defaults are starter 5 workflows / 3 integrations, professional 25 / 10, enterprise
unlimited; operators override them in settings (``[plans.starter]`` in turbocat.toml).
"""

from __future__ import annotations

from dataclasses import dataclass

from turbocat.domain.enums import Plan
from turbocat.domain.errors import QuotaExceeded


@dataclass(frozen=True)
class PlanLimits:
    workflows: int | None
    """Workflow lineages (versions of one workflow count once), excluding soft-deleted ones."""
    integrations: int | None
    executions_per_month: int | None = None
    ai_tokens_per_month: int | None = None


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
