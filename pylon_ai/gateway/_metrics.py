"""
Prometheus metrics of the service, in a registry of its own.

Under C{--workers N} each worker counts in files of a directory the
supervisor shares between them (prometheus-client's multiprocess mode, chosen
by the L{MULTIPROCESS_ENV} variable before the library is imported), and
C{/metrics} on any worker sums what every worker, living or dead, counted.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: The variable naming the directory shared by the workers' metrics:
#: prometheus-client's own, read when it is first imported.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)


class Metrics:
    """
    The service's counters, histograms and gauges.
    """

    def __init__(self) -> None:
        #: The directory of the workers' metrics, or L{None} in a single
        #: process.
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pylon_requests",
            "Requests handled, by route, model and status.",
            ("route", "model", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "pylon_request_seconds",
            "Time from request to the end of the response.",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft_seconds = Histogram(
            "pylon_ttft_seconds",
            "Time from request to the first token sent to the client.",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "pylon_tokens",
            "Tokens reported by upstreams, by model and direction (in/out).",
            ("model", "direction"),
            registry=self.registry,
        )
        self.streams_in_flight = Gauge(
            "pylon_streams_in_flight",
            "Streaming responses open now.",
            registry=self.registry,
            # Across workers: the sum over the living ones (a dead worker's
            # streams are gone with it).
            multiprocess_mode="livesum",
        )
        self.ws_bad_messages = Counter(
            "pylon_ws_bad_messages",
            "WebSocket messages refused as malformed, by reason "
            "(json, shape, utf8, too_large).",
            ("reason",),
            registry=self.registry,
        )
        self.ws_upstream_pauses = Counter(
            "pylon_ws_upstream_pauses",
            "Times a WebSocket client fell ws_pause_bytes behind and the "
            "upstreams of its socket were paused.",
            registry=self.registry,
        )
        self.ws_overflow_closes = Counter(
            "pylon_ws_overflow_closes",
            "WebSocket sockets closed because more than ws_max_queued_bytes "
            "waited for their client.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """
        The metrics in Prometheus text format: under workers, the totals of
        all of them.
        """
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        # A registry per scrape: the collector reads every worker's files
        # as they are now.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)


def forget_process(directory: str, pid: int) -> None:
    """
    Drop the live gauges of a worker that has ended (its counters stay in
    the totals).

    @param directory: The workers' metrics directory.
    @param pid: The process id of the worker.
    """
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, path=directory)
