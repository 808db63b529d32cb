"""
The service's configuration as values: the C{[server]} table, the
C{[[models]]} entries and the whole, with their defaults.

Reading and checking a TOML file into these is L{pylon_ai.gateway._config}'s
job.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from attrs import field, frozen

MB = 1024 * 1024


class ConfigError(ValueError):
    """
    The configuration is invalid; the message names the bad key.
    """


@frozen
class RedisAddress:
    """
    Where the shared state lives: C{redis://HOST:PORT/DB} or C{rediss://}
    (TLS, with the platform's trust).
    """

    host: str
    port: int = 6379
    db: int = 0
    tls: bool = False


def redis_address(url: str) -> RedisAddress:
    """
    Parse a C{redis://} or C{rediss://} URL.

    @raise ConfigError: When it is not one.
    """
    where = "server.state"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f'{where} must be "memory" or a redis:// or rediss:// URL, not {url!r}'
        )
    if parts.username or parts.password:
        raise ConfigError(f"{where}: give the password in redis_password_env")
    if not parts.hostname:
        raise ConfigError(f"{where}: the URL has no host")
    try:
        port = parts.port or 6379
        db = int(parts.path.strip("/") or "0")
    except ValueError:
        raise ConfigError(f"{where}: bad port or database number in {url!r}") from None
    if db < 0 or parts.query or parts.fragment:
        raise ConfigError(f"{where}: expected redis://HOST:PORT/DB, not {url!r}")
    return RedisAddress(parts.hostname, port, db, parts.scheme == "rediss")


@frozen
class ServerConfig:
    """
    The C{[server]} table.
    """

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 32 * MB
    shutdown_grace_s: float = 30.0
    #: Seconds without progress from an upstream before a request fails.
    upstream_timeout_s: float = 120.0
    #: The longest line accepted in an upstream event stream.
    max_line_bytes: int = 1 * MB
    #: Requests in flight at once in the whole process (0: no limit); past
    #: it, 503 with retry-after.
    max_concurrent: int = 0
    #: Requests in flight at once per client key (0: no limit); past it, 429.
    max_concurrent_per_key: int = 0
    #: Requests per minute per client key (0: no limit); past it, 429.
    requests_per_minute_per_key: int = 0
    #: Further C{Host} names accepted in no-key mode, beside the loopback
    #: ones (C{localhost}, C{127.0.0.1}, C{[::1]}).
    allowed_hosts: tuple[str, ...] = ()
    #: Serve without client keys on a non-loopback interface (logged as a
    #: warning at start).
    allow_unauthenticated: bool = False
    #: Whether C{/metrics} answers without a key; C{None}: only in no-key
    #: mode.
    metrics_public: bool | None = None
    #: The largest single event (all its lines) in an upstream stream.
    max_event_bytes: int = 16 * MB
    #: The largest reply collected for a non-streaming request.
    max_reply_bytes: int = 16 * MB
    #: Seconds a client has to send its request line and headers.
    header_timeout_s: float = 10.0
    #: Seconds a kept-alive connection may wait for its next request.
    keepalive_timeout_s: float = 60.0
    #: Client connections open at once in this process (0: no limit);
    #: past it new ones get a 503 and are closed.
    max_connections: int = 4096
    #: Bytes queued for one WebSocket client before its upstreams pause...
    ws_pause_bytes: int = 1 * MB
    #: ...and before the socket is closed as not reading.
    ws_max_queued_bytes: int = 16 * MB
    #: Tokens (input + output, as the requests report them) per minute per
    #: client key (0: no limit); past it, 429.
    tokens_per_minute_per_key: int = 0
    #: Where the per-key limits, cooldowns and in-flight counts live:
    #: C{"memory"} (this process) or C{"redis://HOST:PORT/DB"} (also
    #: C{rediss://}), shared by every worker and instance.
    state: str = "memory"
    #: The Redis password (from C{redis_password_env}).
    redis_password: str = field(default="", repr=False)
    #: Milliseconds a Redis call may take before Redis counts as down.
    redis_timeout_ms: int = 50
    #: Redis slow or down: C{"open"} (this process's own limits) or
    #: C{"closed"} (503).
    redis_failure: str = "open"

    @property
    def redis(self) -> RedisAddress | None:
        """
        Where Redis is, or L{None} for C{state = "memory"}.
        """
        return None if self.state == "memory" else redis_address(self.state)

    @property
    def public_metrics(self) -> bool:
        """
        Whether C{/metrics} needs no key.
        """
        if self.metrics_public is None:
            return not self.api_keys
        return self.metrics_public


@frozen
class ModelConfig:
    """
    One C{[[models]]} entry: a deployment of a model name.
    """

    name: str
    provider: str
    model: str | None = None
    api_key: str = field(default="", repr=False)
    base_url: str | None = None
    ca_file: str | None = None
    fallbacks: tuple[str, ...] = ()
    max_tokens: int = 4096
    #: Seconds without progress (idle between chunks); the server's
    #: C{upstream_timeout_s} when not set.
    timeout_s: float | None = None
    #: Seconds to connect to the upstream.
    connect_timeout_s: float = 10.0
    #: Seconds from sending the request to the first byte of the reply
    #: (C{timeout_s} when not set).
    first_byte_timeout_s: float | None = None
    #: Seconds the whole upstream request may take.
    request_timeout_s: float = 600.0
    #: Further attempts after a retryable failure, before anything reached
    #: the client (connection errors, 408/409/429/5xx/529, timeouts).
    retries: int = 2
    #: The first wait between attempts; it doubles each time, with jitter.
    retry_backoff_s: float = 0.5
    #: The longest single wait, including one a provider asks for.
    retry_max_wait_s: float = 8.0
    #: No new attempt starts this long after the request arrived.
    retry_budget_s: float = 30.0
    #: Consecutive failures that put a deployment into cooldown...
    cooldown_failures: int = 3
    #: ...for this many seconds (it is used again if every deployment is).
    cooldown_s: float = 30.0
    #: The upstream speaks the OpenAI Responses API too: C{/v1/responses}
    #: requests pass through to it.  L{None}: yes for provider C{openai}.
    responses_api: bool | None = field(default=None, alias="responses")
    #: Refuse a Responses request's hosted tools (C{web_search}, ...) with
    #: a 400 instead of dropping them, where the upstream cannot run them.
    strict_tools: bool = False

    @property
    def responses(self) -> bool:
        """
        Whether the upstream speaks the Responses API (so that
        C{/v1/responses} passes through to it).
        """
        if self.responses_api is None:
            return self.provider == "openai"
        return self.responses_api


@frozen
class Config:
    """
    The whole configuration.
    """

    server: ServerConfig
    models: tuple[ModelConfig, ...]

    def model_names(self) -> list[str]:
        """
        The distinct model names, in the order the file gives them.
        """
        return list(dict.fromkeys(m.name for m in self.models))


def default_config() -> Config:
    """
    The configuration used when no file is given: the built-in mock model.
    """
    return Config(ServerConfig(), (ModelConfig(name="mock", provider="mock"),))
