"""OpenTelemetry tracing: a tracer per process, built from the ``otel`` settings.

Off by default (a no-op tracer, nothing imported beyond the API). With an exporter the SDK
(``pip install 'turbocat[otel]'``) records spans for API requests and for executions and
their steps. The provider belongs to the process's ``AppContext``, not to OpenTelemetry's
global, so tests can give each app its own exporter (``tracer_for(InMemorySpanExporter())``).

Executions span processes and hours, so no process holds an execution span open. Instead the
trace id *is* the execution id (both are 128 bits) and every step span is a child of a span id
derived from it; when the execution ends, the worker that recorded the end emits the
execution span with exactly those ids, start and end. A backend thus shows each execution as
one trace, its steps under it, and looking up a trace by execution id needs no search.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from turbocat.config import OtelSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_forced_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "forced_span_ids", default=None
)


@dataclass
class Tracing:
    """A tracer and the provider behind it (None when tracing is off)."""

    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)
    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def shutdown(self) -> None:
        """Export what is buffered and stop (end of the process or app)."""
        if self.provider is not None:
            self.provider.shutdown()


def from_settings(settings: OtelSettings) -> Tracing:
    """The process's tracing: off for exporter ``none``, else batched to the exporter."""
    if settings.exporter == "none":
        return Tracing()
    exporter: SpanExporter
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "otel.exporter = 'otlp' needs opentelemetry-exporter-otlp-proto-http "
                "(pip install 'turbocat[otel]')"
            ) from exc
        exporter = (
            OTLPSpanExporter(endpoint=settings.endpoint)
            if settings.endpoint
            else (OTLPSpanExporter())
        )
    return tracer_for(exporter, service_name=settings.service_name, batch=True)


def tracer_for(
    exporter: SpanExporter, *, service_name: str = "turbocat", batch: bool = False
) -> Tracing:
    """Tracing into ``exporter``; unbatched (each span exported as it ends) unless ``batch``."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), id_generator=_ids()
    )
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return Tracing(provider.get_tracer("turbocat"), provider)


def _ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ExecutionIds(RandomIdGenerator):
        """Random ids, except while an execution span is made (its ids are derived)."""

        def generate_trace_id(self) -> int:
            forced = _forced_ids.get()
            return forced[0] if forced else super().generate_trace_id()

        def generate_span_id(self) -> int:
            forced = _forced_ids.get()
            return forced[1] if forced else super().generate_span_id()

    return ExecutionIds()


def execution_ids(execution_id: uuid.UUID) -> tuple[int, int]:
    """(trace id, span id) of an execution's span: the id itself, and its low 64 bits."""
    return execution_id.int, (execution_id.int & 0xFFFF_FFFF_FFFF_FFFF) or 1


def execution_context(execution_id: uuid.UUID) -> Context:
    """A context whose parent is the execution's (future) span: step spans start in it."""
    trace_id, span_id = execution_ids(execution_id)
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextlib.contextmanager
def step_span(
    tracing: Tracing, execution_id: uuid.UUID, step_key: str, attributes: Mapping[str, Any]
) -> Iterator[trace.Span]:
    """The span of one step attempt (run and record), current while it runs."""
    with tracing.tracer.start_as_current_span(
        f"step {step_key}",
        context=execution_context(execution_id),
        kind=SpanKind.INTERNAL,
        attributes={
            "turbocat.execution_id": str(execution_id),
            "turbocat.step_key": step_key,
            **attributes,
        },
        record_exception=False,
    ) as span:
        yield span


def mark_failed(span: trace.Span, error_type: str, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"[:500]))
    span.set_attribute("error.type", error_type)


def _nanos(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def emit_execution_span(
    tracing: Tracing,
    execution_id: uuid.UUID,
    *,
    start: dt.datetime,
    end: dt.datetime,
    status: str,
    attributes: Mapping[str, Any],
) -> None:
    """The execution's span, with its derived ids, once it has ended."""
    if not tracing.enabled:
        return
    token = _forced_ids.set(execution_ids(execution_id))
    try:
        span = tracing.tracer.start_span(
            "execution",
            context=Context(),  # a root: the trace id is the execution's
            kind=SpanKind.INTERNAL,
            attributes={
                "turbocat.execution_id": str(execution_id),
                "turbocat.execution_status": status,
                **attributes,
            },
            start_time=_nanos(start),
        )
    finally:
        _forced_ids.reset(token)
    if status != "completed":
        span.set_status(Status(StatusCode.ERROR, f"execution {status}"))
    span.end(end_time=_nanos(max(start, end)))
