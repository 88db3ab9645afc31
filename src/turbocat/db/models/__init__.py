"""All table models. Importing this package registers every table on ``Base.metadata``.

Each tenant-owned table carries ``info={"rls": kind}`` (see ``db/migrations`` for the policies
of each kind): "tenant", "tenant_or_public", "organization", "membership", "api_key" and
"credential". Tables without the marker (users, user_sessions, login_failures, workers,
billing_events) are platform-wide.
"""

from turbocat.db.models.billing import BillingEventRow, SubscriptionRow, UsageRecordRow
from turbocat.db.models.catalog import AgentPromptRow, AgentRow, ComponentRow, IntegrationRow
from turbocat.db.models.deploy import DeploymentRow
from turbocat.db.models.identity import (
    ApiKeyRow,
    AuditLogRow,
    LoginFailureRow,
    MembershipRow,
    OrganizationRow,
    UserRow,
    UserSessionRow,
)
from turbocat.db.models.queues import TaskQueueRow, WorkerRow
from turbocat.db.models.runs import (
    ActivityStatisticsRow,
    ExecutionLogRow,
    ExecutionRow,
    StepRunRow,
    WorkItemRow,
    step_status_is,
)
from turbocat.db.models.templates import TemplateRatingRow, TemplateRow
from turbocat.db.models.triggers import EventRow, ScheduleRow, WebhookRow
from turbocat.db.models.workflows import (
    ProjectRow,
    WorkflowChildWorkflowRow,
    WorkflowQueryRow,
    WorkflowRow,
    WorkflowSignalRow,
    WorkflowStepRow,
    WorkflowWorkQueueRow,
)

__all__ = [
    "ActivityStatisticsRow",
    "AgentPromptRow",
    "AgentRow",
    "ApiKeyRow",
    "AuditLogRow",
    "BillingEventRow",
    "ComponentRow",
    "DeploymentRow",
    "EventRow",
    "ExecutionLogRow",
    "ExecutionRow",
    "IntegrationRow",
    "LoginFailureRow",
    "MembershipRow",
    "OrganizationRow",
    "ProjectRow",
    "ScheduleRow",
    "StepRunRow",
    "SubscriptionRow",
    "TaskQueueRow",
    "TemplateRatingRow",
    "TemplateRow",
    "UsageRecordRow",
    "UserRow",
    "UserSessionRow",
    "WebhookRow",
    "WorkItemRow",
    "WorkerRow",
    "WorkflowChildWorkflowRow",
    "WorkflowQueryRow",
    "WorkflowRow",
    "WorkflowSignalRow",
    "WorkflowStepRow",
    "WorkflowWorkQueueRow",
    "step_status_is",
]
