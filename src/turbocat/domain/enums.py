"""Every enumeration of the data model (SPEC section 3), values as in the seeds.

The database stores them as VARCHAR with a CHECK constraint built from these classes, so adding
a value is a one-line change plus a migration that rewrites the CHECK.
"""

from __future__ import annotations

from enum import StrEnum


class SystemRole(StrEnum):
    ADMIN = "admin"
    USER = "user"
    AGENT = "agent"


class MemberRole(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Plan(StrEnum):
    STARTER = "starter"
    PROFESSIONAL = "professional"
    ENTERPRISE = "enterprise"


class AgentType(StrEnum):
    CODE = "code"
    API = "api"
    LLM = "llm"
    DATA = "data"
    WORKFLOW = "workflow"


class AgentStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    INACTIVE = "inactive"
    ARCHIVED = "archived"


class WorkflowStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    INACTIVE = "inactive"
    ARCHIVED = "archived"


class WorkflowCategory(StrEnum):
    MARKETING = "marketing"
    SALES = "sales"
    OPERATIONS = "operations"
    CUSTOMER_SUPPORT = "customer_support"
    ADMIN = "admin"
    CUSTOM = "custom"


class StepType(StrEnum):
    AGENT = "agent"
    CONDITION = "condition"
    LOOP = "loop"
    PARALLEL = "parallel"
    WAIT = "wait"


class OnError(StrEnum):
    FAIL = "fail"
    CONTINUE = "continue"
    RETRY = "retry"


class ComponentKind(StrEnum):
    """Built-in kinds a component implements (agent kinds plus control-flow kinds)."""

    LLM = "llm"
    CODE = "code"
    API = "api"
    DATA = "data"
    WORKFLOW = "workflow"
    CONDITION = "condition"
    LOOP = "loop"
    PARALLEL = "parallel"
    WAIT = "wait"
    CUSTOM = "custom"


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    ORGANIZATION = "organization"


class IntegrationStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    ERROR = "error"
    DISABLED = "disabled"


class TemplateType(StrEnum):
    AGENT = "agent"
    WORKFLOW = "workflow"
    STEP = "step"


class TemplateDifficulty(StrEnum):
    BEGINNER = "beginner"
    INTERMEDIATE = "intermediate"
    ADVANCED = "advanced"


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


class ExecutionResult(StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILURE = "failure"
    CANCELLED = "cancelled"


class TriggerType(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    API = "api"
    WEBHOOK = "webhook"
    EVENT = "event"


class StepStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    FATAL = "fatal"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class DeploymentStatus(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"
    MAINTENANCE = "maintenance"


class HealthStatus(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DEGRADED = "degraded"


class UsageMetric(StrEnum):
    WORKFLOW_EXECUTIONS = "workflow_executions"
    AI_TOKENS_USED = "ai_tokens_used"
    API_CALLS_MADE = "api_calls_made"
    STORAGE_GB = "storage_gb"
    ACTIVE_USERS = "active_users"
    ACTIVE_WORKFLOWS = "active_workflows"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    TRIALING = "trialing"
    PAST_DUE = "past_due"
    CANCELLED = "cancelled"
    UNPAID = "unpaid"
    INCOMPLETE = "incomplete"


class WorkerStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"


class WorkQueueOrder(StrEnum):
    FIFO = "fifo"
    LIFO = "lifo"
    PRIORITY = "priority"


class WorkItemStatus(StrEnum):
    """An item of a work queue: ``pending`` until a wait step takes it."""

    PENDING = "pending"
    TAKEN = "taken"


class ParentClosePolicy(StrEnum):
    TERMINATE = "terminate"
    ABANDON = "abandon"
    REQUEST_CANCEL = "request_cancel"


class MisfirePolicy(StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


class IntegrationProvider(StrEnum):
    """Providers of seed 004, lower case."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE_GEMINI = "google_gemini"
    COHERE = "cohere"
    SLACK = "slack"
    MICROSOFT_TEAMS = "microsoft_teams"
    DISCORD = "discord"
    GMAIL = "gmail"
    OUTLOOK = "outlook"
    SENDGRID = "sendgrid"
    RESEND = "resend"
    HUBSPOT = "hubspot"
    SALESFORCE = "salesforce"
    PIPEDRIVE = "pipedrive"
    TRELLO = "trello"
    ASANA = "asana"
    MONDAY = "monday"
    NOTION = "notion"
    LINEAR = "linear"
    SHOPIFY = "shopify"
    WOO_COMMERCE = "woo_commerce"
    SQUARE = "square"
    MAILCHIMP = "mailchimp"
    CONVERTKIT = "convertkit"
    ACTIVECAMPAIGN = "activecampaign"
    STRIPE = "stripe"
    PAYPAL = "paypal"
    CALENDLY = "calendly"
    ACUITY = "acuity"
    ZAPIER = "zapier"
    MAKE = "make"
    GOOGLE_SHEETS = "google_sheets"
    AIRTABLE = "airtable"
    HTTP = "http"
    """A generic HTTP service (not in seed 004): credentials for api steps to any host."""
