"""
Prometheus metrics of the service, in a registry of its own.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

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
        The metrics in Prometheus text format.
        """
        return generate_latest(self.registry)
