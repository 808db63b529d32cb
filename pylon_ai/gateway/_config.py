"""
The service's TOML configuration: loading and validation.

Every key is checked at start: an unknown key, a wrong type or a missing
environment variable stops the start with a message that names it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from pylon_ai._provider import CustomProvider
from pylon_ai.gateway._config_values import (
    Config,
    ConfigError,
    ModelConfig,
    RedisAddress,
    ServerConfig,
    default_config,
    redis_address,
)

__all__ = [
    "PROVIDERS",
    "Config",
    "ConfigError",
    "ModelConfig",
    "RedisAddress",
    "ServerConfig",
    "default_config",
    "load_config",
    "parse_config",
    "redis_address",
]

PROVIDERS = ("anthropic", "openai", "custom", "mock")

_SERVER_KEYS: dict[str, type | tuple[type, ...]] = {
    "api_keys": list,
    "cors_origins": list,
    "max_body_bytes": int,
    "shutdown_grace_s": (int, float),
    "upstream_timeout_s": (int, float),
    "max_line_bytes": int,
    "max_concurrent": int,
    "max_concurrent_per_key": int,
    "requests_per_minute_per_key": int,
    "allowed_hosts": list,
    "allow_unauthenticated": bool,
    "metrics_public": bool,
    "max_event_bytes": int,
    "max_reply_bytes": int,
    "header_timeout_s": (int, float),
    "keepalive_timeout_s": (int, float),
    "max_connections": int,
    "ws_pause_bytes": int,
    "ws_max_queued_bytes": int,
    "tokens_per_minute_per_key": int,
    "state": str,
    "redis_password_env": str,
    "redis_timeout_ms": int,
    "redis_failure": str,
}

_MODEL_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "provider": str,
    "model": str,
    "api_key": str,
    "api_key_env": str,
    "base_url": str,
    "ca_file": str,
    "fallbacks": list,
    "max_tokens": int,
    "timeout_s": (int, float),
    "connect_timeout_s": (int, float),
    "first_byte_timeout_s": (int, float),
    "request_timeout_s": (int, float),
    "retries": int,
    "retry_backoff_s": (int, float),
    "retry_max_wait_s": (int, float),
    "retry_budget_s": (int, float),
    "cooldown_failures": int,
    "cooldown_s": (int, float),
    "responses": bool,
    "strict_tools": bool,
}


def _check_types(
    table: Mapping[str, Any], spec: Mapping[str, type | tuple[type, ...]], where: str
) -> None:
    for key, value in table.items():
        if key not in spec:
            raise ConfigError(
                f"unknown key {where}.{key} (known: {', '.join(sorted(spec))})"
            )
        want = spec[key]
        if (isinstance(value, bool) and want is not bool) or not isinstance(
            value, want
        ):
            names = (
                " or ".join(t.__name__ for t in want)
                if isinstance(want, tuple)
                else want.__name__
            )
            raise ConfigError(
                f"{where}.{key} must be {names}, not {type(value).__name__}"
            )


def _strings(value: list[Any], where: str) -> tuple[str, ...]:
    for item in value:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{where} must be a list of non-empty strings")
    return tuple(value)


def _positive(value: float, where: str) -> None:
    if value <= 0:
        raise ConfigError(f"{where} must be positive")


def _responses_url(base_url: str) -> str | None:
    try:
        return CustomProvider(base_url, "").responses_url
    except ValueError:
        return ""  # a bad base_url is refused by its own check


def _check_state(server_args: dict[str, Any], environ: Mapping[str, str]) -> None:
    # The shared state's keys: checked here so that a typo stops the start
    # rather than the first request.
    state = server_args.get("state", "memory")
    if state != "memory":
        redis_address(state)
    if server_args.get("redis_failure", "open") not in ("open", "closed"):
        raise ConfigError('server.redis_failure must be "open" or "closed"')
    if "redis_timeout_ms" in server_args and server_args["redis_timeout_ms"] < 1:
        raise ConfigError("server.redis_timeout_ms must be at least 1")
    if "redis_password_env" in server_args:
        var = server_args.pop("redis_password_env")
        if var not in environ:
            raise ConfigError(
                f"server.redis_password_env: environment variable {var} is not set"
            )
        server_args["redis_password"] = environ[var]


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """
    Validate a parsed TOML document.

    @param data: The document.
    @param environ: Where C{api_key_env} names are looked up.
    @raise ConfigError: Naming the first bad key.
    """
    for key in data:
        if key not in ("server", "models"):
            raise ConfigError(f"unknown table [{key}] (known: [server], [[models]])")
    raw_server = data.get("server", {})
    if not isinstance(raw_server, dict):
        raise ConfigError("[server] must be a table")
    _check_types(raw_server, _SERVER_KEYS, "server")
    server_args = dict(raw_server)
    for key in ("api_keys", "cors_origins", "allowed_hosts"):
        if key in server_args:
            server_args[key] = _strings(server_args[key], f"server.{key}")
    for key in (
        "max_body_bytes",
        "shutdown_grace_s",
        "upstream_timeout_s",
        "max_event_bytes",
        "max_reply_bytes",
        "header_timeout_s",
        "keepalive_timeout_s",
        "ws_pause_bytes",
        "ws_max_queued_bytes",
    ):
        if key in server_args:
            _positive(server_args[key], f"server.{key}")
    for key in (
        "max_concurrent",
        "max_concurrent_per_key",
        "requests_per_minute_per_key",
        "max_connections",
        "tokens_per_minute_per_key",
    ):
        if server_args.get(key, 0) < 0:
            raise ConfigError(f"server.{key} must be 0 (no limit) or more")
    if "max_line_bytes" in server_args and server_args["max_line_bytes"] < 1024:
        raise ConfigError("server.max_line_bytes must be at least 1024")
    _check_state(server_args, environ)
    server = ServerConfig(**server_args)

    raw_models = data.get("models")
    if raw_models is None:
        return Config(server, default_config().models)
    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigError("[[models]] must be a non-empty array of tables")
    models = []
    for i, raw in enumerate(raw_models):
        where = f"models[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        if isinstance(raw.get("name"), str) and raw["name"]:
            # The operator knows the model by its name, not its position.
            where = f"models[{i}] ({raw['name']})"
        _check_types(raw, _MODEL_KEYS, where)
        for key in ("name", "provider"):
            if not raw.get(key):
                raise ConfigError(f"{where}.{key} is required")
        provider = raw["provider"]
        if provider not in PROVIDERS:
            raise ConfigError(
                f"{where}.provider must be one of {', '.join(PROVIDERS)}, "
                f"not {provider!r}"
            )
        args = {k: v for k, v in raw.items() if k != "api_key_env"}
        if "api_key" in raw and "api_key_env" in raw:
            raise ConfigError(f"{where}: give api_key or api_key_env, not both")
        if "api_key_env" in raw:
            var = raw["api_key_env"]
            if var not in environ:
                raise ConfigError(
                    f"{where}.api_key_env: environment variable {var} is not set"
                )
            args["api_key"] = environ[var]
        if provider in ("anthropic", "openai"):
            if not raw.get("model"):
                raise ConfigError(f"{where}.model is required for {provider}")
            if not args.get("api_key"):
                raise ConfigError(f"{where}: api_key or api_key_env is required")
        if raw.get("responses") and provider not in ("openai", "custom"):
            raise ConfigError(
                f"{where}.responses: only an openai or custom upstream can "
                "speak the Responses API"
            )
        if provider == "custom" and not raw.get("base_url"):
            raise ConfigError(f"{where}.base_url is required for custom")
        if (
            provider == "custom"
            and raw.get("responses")
            and _responses_url(raw["base_url"]) is None
        ):
            raise ConfigError(
                f"{where}.responses: the Responses URL of base_url cannot be "
                "told; give a base URL without a path, or one ending in "
                "/chat/completions"
            )
        if "base_url" in raw and not raw["base_url"].startswith(
            ("http://", "https://")
        ):
            raise ConfigError(f"{where}.base_url must start with http:// or https://")
        if "ca_file" in raw and not os.path.isfile(raw["ca_file"]):
            raise ConfigError(f"{where}.ca_file: no such file {raw['ca_file']}")
        if "fallbacks" in raw:
            args["fallbacks"] = _strings(raw["fallbacks"], f"{where}.fallbacks")
        for key in (
            "max_tokens",
            "timeout_s",
            "connect_timeout_s",
            "first_byte_timeout_s",
            "request_timeout_s",
            "retry_max_wait_s",
            "retry_budget_s",
            "cooldown_failures",
        ):
            if key in raw:
                _positive(raw[key], f"{where}.{key}")
        for key in ("retries", "retry_backoff_s", "cooldown_s"):
            if raw.get(key, 0) < 0:
                raise ConfigError(f"{where}.{key} must not be negative")
        models.append(ModelConfig(**args))

    names = {m.name for m in models}
    for name in names:
        group = [m for m in models if m.name == name]
        if len({m.fallbacks for m in group}) > 1:
            raise ConfigError(
                f"models named {name!r} disagree on fallbacks; "
                "deployments of one model must list the same fallbacks"
            )
        for fallback in group[0].fallbacks:
            if fallback not in names:
                raise ConfigError(f"models ({name}).fallbacks: no model {fallback!r}")
    return Config(server, tuple(models))


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """
    Read and validate a TOML configuration file.

    @raise ConfigError: If the file cannot be read or is invalid.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse_config(data, os.environ if environ is None else environ)
