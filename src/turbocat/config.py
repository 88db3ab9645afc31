"""Settings: built once at start-up from TURBOCAT_* variables and an optional TOML file.

Nested groups use a double underscore in the environment, for example
``TURBOCAT_AUTH__SIGNUP_ENABLED=false``. The file is ``$TURBOCAT_CONFIG`` or, when
that is unset, ``$TURBOCAT_HOME/turbocat.toml`` if it exists.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from turbocat.domain.enums import Plan
from turbocat.domain.netpolicy import parse_entries
from turbocat.domain.plans import DEFAULT_LIMITS, PlanLimits, Quotas
from turbocat.domain.retention import Kind, Policy


def default_home() -> Path:
    return Path(os.environ.get("TURBOCAT_HOME") or Path.home() / ".turbocat")


class DatabaseSettings(BaseModel):
    """How turbocat reaches its database."""

    app_role: str = "turbocat_app"
    """PostgreSQL role the application acts as. Migrations create it (NOLOGIN, no BYPASSRLS);
    a connection made as another role switches to it with SET ROLE, so row-level security
    applies to every query the application runs."""
    pool_size: int = Field(default=10, ge=1, le=200)
    """Connections kept open per process (PostgreSQL)."""
    max_overflow: int = Field(default=10, ge=0, le=200)
    """Extra connections allowed under bursts (PostgreSQL)."""
    echo: bool = False
    """Log every SQL statement (debugging only)."""


class ApiSettings(BaseModel):
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8420, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    public_url: str | None = None
    """Base URL shown to users (defaults to http://host:port)."""


class AuthSettings(BaseModel):
    """Sign-up, sessions, passwords and API keys."""

    signup_enabled: bool = True
    """Whether anyone may sign up through the API (admins can always add users by CLI)."""
    session_ttl_seconds: int = Field(default=12 * 3600, ge=60)
    """Lifetime of a login token."""
    password_min_length: int = Field(default=10, ge=8, le=128)
    login_max_failures: int = Field(default=5, ge=1)
    """Failed logins for one email within the window before further attempts get 429."""
    login_failure_window_seconds: int = Field(default=900, ge=1)
    argon2_memory_kib: int = Field(default=19_456, ge=19_456)
    """argon2id memory cost; at least 19 MiB as OWASP advises."""
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_parallelism: int = Field(default=1, ge=1)
    api_key_default_rate_limit: int = Field(default=60, ge=1)
    """Requests per minute for a new API key when none is given."""
    api_key_usage_flush_seconds: float = Field(default=5.0, gt=0)
    """How often API key usage counters are written back in one batch."""


class PlanLimitSettings(BaseModel):
    """Limits of one plan; null means unlimited. A field left out of ``[plans.<plan>]`` keeps
    the built-in default (docs/billing.md)."""

    workflows: int | None = Field(default=None, ge=0)
    integrations: int | None = Field(default=None, ge=0)
    executions_per_month: int | None = Field(default=None, ge=0)
    """Executions started per UTC calendar month; beyond it starts are refused (403
    ``quota_exceeded``) until the month ends. Unlimited by default."""
    ai_tokens_per_month: int | None = Field(default=None, ge=0)
    """LLM tokens per UTC calendar month; once spent, llm steps fail with
    ``token_quota_exceeded`` before calling the model. Unlimited by default."""


def _default_plans() -> dict[Plan, PlanLimitSettings]:
    return {
        plan: PlanLimitSettings(**dataclasses.asdict(limits))
        for plan, limits in DEFAULT_LIMITS.items()
    }


def _with_defaults(configured: dict[Plan, PlanLimitSettings]) -> dict[Plan, PlanLimitSettings]:
    """Each plan's limits with the fields the operator left out taken from the defaults, so
    ``[plans.starter] executions_per_month = 1000`` does not lift the workflow limit."""
    merged = _default_plans()
    for plan, limits in configured.items():
        given = limits.model_dump(include=limits.model_fields_set)
        merged[plan] = merged[plan].model_copy(update=given)
    return merged


class DefinitionLimitSettings(BaseModel):
    """Size limits a workflow definition must stay within."""

    max_steps: int = Field(default=500, ge=1)
    max_nesting: int = Field(default=8, ge=1)
    """Depth of loop/parallel bodies inside each other."""
    max_bytes: int = Field(default=512 * 1024, ge=1024)
    """Size of the definition as compact JSON."""
    max_expression_length: int = Field(default=4096, ge=16)


class EngineSettings(BaseModel):
    """The execution engine."""

    embedded_worker: bool = True
    """Run a worker inside ``turbocat serve`` (the embedded setup; on PostgreSQL you may turn
    it off and run ``turbocat worker`` processes instead)."""
    queues: list[str] = Field(default_factory=lambda: ["default"])
    """Task queues the embedded worker serves."""
    concurrency: int = Field(default=8, ge=1, le=1024)
    """Steps a worker runs at once."""
    lease_seconds: float = Field(default=30.0, ge=1.0)
    """How long a claimed step is held without a heartbeat before another worker may take it."""
    poll_seconds: float = Field(default=1.0, gt=0)
    """How often an idle worker looks for work made ready by other processes."""


class TriggerSettings(BaseModel):
    """API runs that wait, webhooks and events."""

    max_wait_seconds: float = Field(default=300.0, gt=0)
    """Longest a request may wait for an execution's output (``?wait=``, waiting webhooks)."""
    webhook_max_body_bytes: int = Field(default=262_144, ge=1024)
    """Largest webhook body accepted (413 beyond it, nothing written)."""
    webhook_tolerance_seconds: int = Field(default=300, ge=1)
    """How far a signed webhook's timestamp may be from the server's clock."""
    webhook_secret_grace_seconds: int = Field(default=86_400, ge=0)
    """How long a replaced signing secret still verifies after a rotation."""
    event_max_depth: int = Field(default=8, ge=1)
    """Event chains longer than this (a workflow triggering itself) start nothing more."""
    event_poll_seconds: float = Field(default=2.0, gt=0)
    """How often a worker looks for events other processes published (its own commits wake it
    at once): the longest a cross-process event waits. Each look is a read transaction."""
    event_retention_days: float = Field(default=7.0, gt=0)
    """Dispatched events are deleted after this long (every execution leaves one)."""


class SchedulerSettings(BaseModel):
    """Cron schedules and deployment health checks (``turbocat scheduler``, or embedded)."""

    embedded: bool = True
    """Run a scheduler inside ``turbocat serve``. Several may run (serve and ``turbocat
    scheduler`` processes on PostgreSQL): each slot still fires once."""
    poll_seconds: float = Field(default=1.0, gt=0)
    """Longest an idle scheduler sleeps before looking for due slots again."""
    misfire_grace_seconds: float = Field(default=60.0, ge=0)
    """A slot reached later than this after its time (the scheduler was down) is a misfire:
    the schedule's misfire policy decides whether it runs."""
    health_check_seconds: float = Field(default=30.0, gt=0)
    """How often running deployments get a health check."""
    health_window_seconds: float = Field(default=900.0, gt=0)
    """Executions that ended within this window make a deployment's error rate and latency."""
    worker_heartbeat_timeout_seconds: float = Field(default=90.0, gt=0)
    """A worker whose last heartbeat is older than this serves nothing (health checks)."""
    usage_gauge_seconds: float = Field(default=300.0, gt=0)
    """How often the usage gauges (storage_gb, active_users, active_workflows) of every
    organization are measured into today's usage records."""


class BillingSettings(BaseModel):
    """Stripe subscriptions (docs/billing.md). Turbocat never calls Stripe: it receives its
    webhook events at ``POST /api/v1/billing/webhook``."""

    webhook_secrets: list[str] = Field(default_factory=list)
    """The endpoint's signing secrets (``whsec_...``); an event signed with any of them is
    accepted, so a rotated secret can stay listed until Stripe uses only the new one. Empty:
    the endpoint refuses every event."""
    tolerance_seconds: int = Field(default=300, ge=1)
    """How far an event's signed timestamp may be from the server's clock."""
    price_plans: dict[str, Plan] = Field(default_factory=dict)
    """Stripe price (or legacy plan) id -> turbocat plan, e.g. ``{"price_123" =
    "professional"}``. A subscription whose price is not listed keeps the organization's
    plan and is recorded with it."""


class CodeRuntimeSettings(BaseModel):
    """The ``code`` agent kind: user Python in a separate, limited process (docs/agents.md)."""

    allow_degraded: bool = False
    """Run code steps even where no separate uid is possible (the worker is not root) or
    libseccomp is missing. The rlimits still apply but user code then runs as the worker's
    user: not a security boundary, for single-user machines only."""
    python: str | None = None
    """Interpreter for user code (default: the worker's own). Only its standard library is
    importable: it starts isolated, without site-packages."""
    uid_first: int = Field(default=1_500_000, ge=1)
    uid_count: int = Field(default=4096, ge=1)
    """Each running code step gets its own uid (and gid) from [uid_first, uid_first+uid_count):
    no passwd entry needed, so concurrent steps cannot signal each other and the process limit
    is per step. Pick a range no real user or container mapping uses."""
    state_dir: Path | None = None
    """Where the uid locks are kept (root-only); default a folder in the system temp dir."""
    workdir_root: Path | None = None
    """Where each step's private working directory is made; default the system temp dir."""
    default_max_execution_seconds: float = Field(default=30.0, gt=0, le=86_400)
    """CPU seconds for code without an agent limit (inline components); the wall-clock limit
    is this plus ``wall_clock_margin_seconds``, or the step's timeout when smaller."""
    default_max_memory_mb: int = Field(default=256, ge=32, le=65_536)
    """Address space of the process (RLIMIT_AS) for code without an agent limit."""
    wall_clock_margin_seconds: float = Field(default=2.0, ge=0)
    """Added to the CPU limit for the wall clock (start-up, waiting on I/O)."""
    max_processes: int = Field(default=8, ge=1, le=4096)
    """Processes and threads the step's uid may have (RLIMIT_NPROC)."""
    max_open_files: int = Field(default=64, ge=16, le=65_536)
    max_file_size_mb: int = Field(default=16, ge=1)
    """Largest file the code may write (RLIMIT_FSIZE)."""
    max_output_bytes: int = Field(default=64 * 1024, ge=1024)
    """Bytes of stdout and of stderr kept for the step's logs; the rest is counted, not kept."""
    max_result_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest JSON result main may return."""
    allow_network: bool = False
    """Let user code open sockets. Off by default: a code step could otherwise reach the
    database and internal services without the api kind's SSRF checks."""


class HttpRuntimeSettings(BaseModel):
    """The ``api`` agent kind: outbound HTTP requests.

    In TOML, ``[runtimes.http]`` with ``allow = ["10.1.2.0/24", "intranet.example.com"]``; in
    the environment, ``TURBOCAT_RUNTIMES__HTTP__ALLOW='["127.0.0.1/32"]'`` (a JSON list).
    """

    ssrf_protection: bool = True
    """Refuse requests to loopback, private, link-local, CGNAT, metadata and other non-public
    addresses (checked after DNS resolution and on every redirect). Turn off only where every
    workflow author is trusted with the network the workers sit in."""
    allow: list[str] = Field(default_factory=list)
    """Destinations permitted despite the SSRF rules: networks (``127.0.0.1/32``,
    ``fd00::/8``) or host names (``intranet.example.com``, ``*.corp.example.com``). An allowed
    name permits its resolved addresses except cloud metadata ones; only a network permits
    those."""
    deny: list[str] = Field(default_factory=list)
    """Destinations always refused, even public ones and even with ``ssrf_protection`` off
    (e.g. the platform's own public address); deny wins over allow."""
    max_response_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    """Ceiling on any agent's ``max_response_bytes`` (decompressed body size)."""
    max_retry_after_seconds: float = Field(default=3600.0, ge=0)
    """A server's Retry-After longer than this is shortened to it."""
    user_agent: str = Field(default="turbocat", min_length=1, max_length=200)
    """User-Agent sent unless the agent config sets one."""

    @field_validator("allow", "deny", mode="after")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        parse_entries(value)  # raises ValueError naming the bad entry
        return value


class LlmRuntimeSettings(BaseModel):
    """The ``llm`` agent kind: chat completions.

    Provider URLs pass the same SSRF policy as the ``api`` kind, with their own lists: to use a
    model server on this machine or the local network (Ollama, vLLM, LM Studio), allow it, e.g.
    ``[runtimes.llm] allow = ["127.0.0.1/32"]``.
    """

    ssrf_protection: bool = True
    """Refuse provider URLs that resolve to loopback, private, link-local, CGNAT, metadata and
    other non-public addresses unless ``allow`` covers them."""
    allow: list[str] = Field(default_factory=list)
    """Networks or host names permitted despite the SSRF rules (as ``[runtimes.http]``)."""
    deny: list[str] = Field(default_factory=list)
    """Networks or host names always refused; deny wins over allow."""

    openai_base_url: str = "https://api.openai.com/v1"
    """Base URL of provider ``openai`` when neither the step nor its integration names one."""
    anthropic_base_url: str = "https://api.anthropic.com"
    """Base URL of provider ``anthropic`` when neither the step nor its integration names one."""
    anthropic_version: str = "2023-06-01"
    """``anthropic-version`` header, unless the integration's settings give another."""
    anthropic_max_tokens: int = Field(default=4096, ge=1)
    """``max_tokens`` sent to Anthropic (where it is required) when the step sets none."""
    schema_retries: int = Field(default=2, ge=0, le=10)
    """Times a reply that does not satisfy ``response_schema`` is asked for again, with the
    validation error, before the step fails."""
    stream_log_chars: int = Field(default=400, ge=1)
    """Streamed text is written to the execution's logs in lines of about this many characters
    (or what arrived within ``stream_log_seconds``), not one line per token."""
    stream_log_seconds: float = Field(default=1.0, gt=0)
    """Longest streamed text waits before it is written to the logs as a line."""
    max_reply_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest reply (or error body, or whole stream) read from a provider; more fails the step
    (a wrong base_url must not fill a worker's memory)."""

    @field_validator("allow", "deny", mode="after")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        parse_entries(value)  # raises ValueError naming the bad entry
        return value


class WorkflowRuntimeSettings(BaseModel):
    """The ``workflow`` agent kind: child executions."""

    max_depth: int = Field(default=16, ge=1, le=1000)
    """Most nested child executions (a parent's child's child...): a deeper start fails the
    step with ``child_depth_exceeded``, which stops a workflow that starts itself."""


class RetentionSettings(BaseModel):
    """How long rows are kept (docs/retention.md); each period in days, null keeps forever.
    An organization overrides any of them with ``turbocat retention set``."""

    logs_days: int | None = Field(default=30, ge=1)
    """Execution log lines, even of executions still kept."""
    successful_executions_days: int | None = Field(default=90, ge=1)
    """Completed executions (with their step runs and logs), from ``completed_at``."""
    failed_executions_days: int | None = Field(default=180, ge=1)
    """Failed, timed-out and cancelled executions, from ``completed_at``."""
    soft_deleted_days: int | None = Field(default=90, ge=1)
    """Soft-deleted workflows, agents, deployments, API keys, templates and users."""
    audit_logs_days: int | None = Field(default=365, ge=1)
    usage_records_days: int | None = Field(default=730, ge=1)
    """Usage records, from the end of their period."""
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    """Rows deleted per transaction, so no table is locked for long."""
    scheduled: bool = True
    """Let the scheduler run retention every ``every_hours``."""
    every_hours: float = Field(default=24.0, gt=0)
    start_delay_seconds: float = Field(default=300.0, ge=0)
    """A scheduler's first run waits this long after it starts."""

    @field_validator(
        "logs_days", "successful_executions_days", "failed_executions_days",
        "soft_deleted_days", "audit_logs_days", "usage_records_days", mode="before",
    )  # fmt: skip
    @classmethod
    def _forever(cls, value: object) -> object:
        """``"forever"`` (TOML has no null; the environment only strings) keeps rows forever."""
        if isinstance(value, str) and value.strip().lower() in ("forever", "null", "none"):
            return None
        return value

    def policy(self) -> Policy:
        """The global defaults as a domain policy."""
        return Policy(
            {
                Kind.LOGS: self.logs_days,
                Kind.SUCCESSFUL_EXECUTIONS: self.successful_executions_days,
                Kind.FAILED_EXECUTIONS: self.failed_executions_days,
                Kind.SOFT_DELETED: self.soft_deleted_days,
                Kind.AUDIT_LOGS: self.audit_logs_days,
                Kind.USAGE_RECORDS: self.usage_records_days,
            }
        )


class MetricsSettings(BaseModel):
    """Prometheus ``GET /metrics`` (docs/operations.md lists the metrics)."""

    enabled: bool = True
    token: str | None = Field(default=None, min_length=16)
    """When set, a scrape must send ``Authorization: Bearer <token>``; when unset, only
    clients on the loopback interface may scrape (others get 404)."""
    cache_seconds: float = Field(default=5.0, ge=0)
    """Database gauges (executions, step runs, queues, workers, scheduler lag) are computed
    at most this often; scrapes in between reuse them."""


class OtelSettings(BaseModel):
    """OpenTelemetry tracing of API requests, executions and steps (``pip install
    'turbocat[otel]'``; off unless an exporter is chosen)."""

    exporter: Literal["none", "console", "otlp"] = "none"
    """``otlp`` sends spans over OTLP/HTTP to ``endpoint``; ``console`` prints them."""
    endpoint: str | None = None
    """OTLP/HTTP traces URL (default the exporter's own, http://localhost:4318/v1/traces)."""
    service_name: str = "turbocat"


class RuntimeSettings(BaseModel):
    """How the agent kinds run (read by workers)."""

    code: CodeRuntimeSettings = Field(default_factory=CodeRuntimeSettings)
    http: HttpRuntimeSettings = Field(default_factory=HttpRuntimeSettings)
    llm: LlmRuntimeSettings = Field(default_factory=LlmRuntimeSettings)
    workflow: WorkflowRuntimeSettings = Field(default_factory=WorkflowRuntimeSettings)


class Settings(BaseSettings):
    """All of turbocat's settings."""

    model_config = SettingsConfigDict(
        env_prefix="TURBOCAT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    home: Path = Field(default_factory=default_home)
    """Data folder of the embedded setup (SQLite file, generated keys)."""
    database_url: str | None = None
    """postgresql://... or sqlite:///...; defaults to SQLite in the data folder."""
    log_level: str = "info"
    log_json: bool = False
    """Write structured JSON log lines instead of human-readable ones."""
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    plans: dict[Plan, PlanLimitSettings] = Field(default_factory=_default_plans)
    """Limits per plan (seed 004 defaults)."""
    definitions: DefinitionLimitSettings = Field(default_factory=DefinitionLimitSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    runtimes: RuntimeSettings = Field(default_factory=RuntimeSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    secret_key_file: Path | None = None
    """File holding the credential encryption keys; default $TURBOCAT_HOME/secret-keys.json."""

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("plans", mode="after")
    @classmethod
    def _plan_defaults(cls, value: dict[Plan, PlanLimitSettings]) -> dict[Plan, PlanLimitSettings]:
        return _with_defaults(value)

    def plan_limits(self, plan: Plan) -> PlanLimits:
        configured = self.plans.get(plan)
        if configured is None:
            return DEFAULT_LIMITS[plan]
        return PlanLimits(**configured.model_dump())

    def quotas(self) -> Quotas:
        """Every plan's limits, for the services and the engine (``PlanCache.quotas``)."""
        return Quotas({plan: self.plan_limits(plan) for plan in Plan})

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'turbocat.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def config_file_path() -> Path | None:
    explicit = os.environ.get("TURBOCAT_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"TURBOCAT_CONFIG points to {path}, which is not a file")
        return path
    candidate = default_home() / "turbocat.toml"
    return candidate if candidate.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, the config file and explicit overrides."""
    return Settings(**overrides)
