"""A worker process's own Prometheus endpoint (``turbocat worker --metrics-port``): its slots
and the step attempts it ran. Platform-wide figures (queues, executions) come from the
server's ``/metrics``; these are what only the process itself knows."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from turbocat.engine.worker import Worker


class WorkerCollector(Collector):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        slots = GaugeMetricFamily(
            "turbocat_worker_process_slots", "This worker's step slots: total and busy.",
            labels=["state"],
        )  # fmt: skip
        slots.add_metric(["total"], worker.config.concurrency)
        slots.add_metric(["busy"], worker.busy)
        steps = CounterMetricFamily(
            "turbocat_worker_process_steps",
            "Step attempts this worker ran, by outcome (succeeded, failed, lost: the lease "
            "went to another worker and the result was discarded).",
            labels=["outcome"],
        )
        for outcome in ("succeeded", "failed", "lost"):
            steps.add_metric([outcome], worker.steps_run.get(outcome, 0))
        batches = CounterMetricFamily(
            "turbocat_worker_process_record_batches",
            "Transactions that recorded step outcomes (outcomes that end while another is "
            "being recorded are recorded together, in one).",
        )
        batches.add_metric([], worker.recorder.batches)
        yield slots
        yield steps
        yield batches


def registry_for(worker: Worker) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(WorkerCollector(worker))
    return registry


class MetricsServer:
    """The HTTP server of a worker's metrics, in a thread of its own."""

    def __init__(self, worker: Worker, port: int, host: str) -> None:
        self._server, self._thread = start_http_server(
            port, addr=host, registry=registry_for(worker)
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and release the port (blocks up to half a second)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(worker: Worker, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve the worker's metrics over HTTP (port 0: any free port)."""
    return MetricsServer(worker, port, host)
