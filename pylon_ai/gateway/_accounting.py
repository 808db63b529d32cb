"""
What the service records about each request: Prometheus metrics and one
structured log line.  The line holds no key and no prompt.
"""

from __future__ import annotations

from twisted.logger import Logger

from pylon_ai.formats.events import Usage
from pylon_ai.gateway._metrics import Metrics

log = Logger(namespace="pylon_ai.requests")


def record_request(
    metrics: Metrics,
    *,
    route: str,
    model: str,
    provider: str,
    status: int,
    latency: float,
    ttft: float | None,
    usage: Usage | None,
    overhead: float | None = None,
) -> None:
    """
    Count a finished request and log its line.

    @param model: The configured model name, or C{"unknown"} (never a name
        the client made up, which would grow the metrics without bound).
    @param latency: Seconds from request to the end of the response.
    @param ttft: Seconds to the first token, or L{None}.
    @param overhead: Seconds spent in the gateway itself, if measured.
    """
    metrics.requests.labels(route, model, str(status)).inc()
    metrics.request_seconds.labels(route).observe(latency)
    if ttft is not None:
        metrics.ttft_seconds.labels(route).observe(ttft)
    usage = usage or Usage()
    if usage.input_tokens:
        metrics.tokens.labels(model, "in").inc(usage.input_tokens)
    if usage.output_tokens:
        metrics.tokens.labels(model, "out").inc(usage.output_tokens)
    latency_ms = latency * 1000
    ttft_ms = "-" if ttft is None else f"{ttft * 1000:.1f}"
    overhead_ms = "-" if overhead is None else f"{overhead * 1000:.3f}"
    # The line is formatted here, once: an observer formatting a format
    # string of nine fields costs twice as much, on every request.  The
    # fields stay in the event for observers that keep them (JSON logs).
    log.info(
        "{log_line}",
        log_line=(
            f"{route} model={model} provider={provider} status={status} "
            f"latency_ms={latency_ms:.1f} ttft_ms={ttft_ms} "
            f"overhead_ms={overhead_ms} tokens_in={usage.input_tokens} "
            f"tokens_out={usage.output_tokens}"
        ),
        route=route,
        model=model,
        provider=provider,
        status=status,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        overhead_ms=overhead_ms,
        tokens_in=usage.input_tokens,
        tokens_out=usage.output_tokens,
    )
