"""
Tests for L{pylon_ai.gateway._config} and the C{twistd pylon-ai} options.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pylon_ai.gateway._config import ConfigError, load_config, parse_config
from pylon_ai.tap import Options

ANTHROPIC = {
    "name": "claude",
    "provider": "anthropic",
    "model": "claude-x",
    "api_key_env": "PYLON_TEST_KEY",
}


def _parse(data: dict[str, Any], **environ: str) -> Any:
    return parse_config(data, environ)


class ParseTests(SynchronousTestCase):
    """
    Valid files give typed values; every mistake names the bad key.
    """

    def test_defaults(self) -> None:
        """
        No tables at all: the mock model and the documented defaults.
        """
        config = _parse({})
        self.assertEqual([m.name for m in config.models], ["mock"])
        self.assertEqual(config.models[0].provider, "mock")
        self.assertEqual(config.server.max_body_bytes, 32 * 1024 * 1024)
        self.assertEqual(config.server.shutdown_grace_s, 30.0)
        self.assertEqual(config.server.api_keys, ())

    def test_key_from_environment(self) -> None:
        """
        C{api_key_env} reads the key from the environment; the key is not in
        the value's repr.
        """
        config = _parse({"models": [ANTHROPIC]}, PYLON_TEST_KEY="sk-secret-1")
        self.assertEqual(config.models[0].api_key, "sk-secret-1")
        self.assertNotIn("sk-secret-1", repr(config))

    def test_missing_environment_variable(self) -> None:
        """
        A variable that is not set stops the start, naming it.
        """
        e = self.assertRaises(ConfigError, _parse, {"models": [ANTHROPIC]})
        self.assertIn("PYLON_TEST_KEY", str(e))
        self.assertIn("models[0] (claude).api_key_env", str(e))

    def test_unknown_key(self) -> None:
        """
        Unknown keys are refused, in [server] and in [[models]].
        """
        e = self.assertRaises(ConfigError, _parse, {"server": {"api_key": ["x"]}})
        self.assertIn("server.api_key", str(e))
        model = dict(ANTHROPIC, modle="typo")
        e = self.assertRaises(
            ConfigError, _parse, {"models": [model]}, PYLON_TEST_KEY="k"
        )
        self.assertIn(f"models[0] ({ANTHROPIC['name']}).modle", str(e))
        e = self.assertRaises(ConfigError, _parse, {"servr": {}})
        self.assertIn("[servr]", str(e))

    def test_wrong_types(self) -> None:
        """
        A value of the wrong type is refused with the key and both types.
        """
        e = self.assertRaises(
            ConfigError, _parse, {"server": {"max_body_bytes": "big"}}
        )
        self.assertIn("server.max_body_bytes must be int, not str", str(e))
        e = self.assertRaises(ConfigError, _parse, {"server": {"api_keys": "k"}})
        self.assertIn("server.api_keys", str(e))
        e = self.assertRaises(ConfigError, _parse, {"server": {"api_keys": [1]}})
        self.assertIn("server.api_keys", str(e))
        e = self.assertRaises(ConfigError, _parse, {"server": {"max_body_bytes": True}})
        self.assertIn("server.max_body_bytes", str(e))

    def test_provider_rules(self) -> None:
        """
        Unknown providers, missing models, keys and URLs are refused.
        """
        e = self.assertRaises(
            ConfigError, _parse, {"models": [{"name": "x", "provider": "cohere"}]}
        )
        self.assertIn("models[0] (x).provider", str(e))
        e = self.assertRaises(
            ConfigError,
            _parse,
            {"models": [{"name": "x", "provider": "openai", "api_key": "k"}]},
        )
        self.assertIn("models[0] (x).model is required", str(e))
        e = self.assertRaises(
            ConfigError,
            _parse,
            {"models": [{"name": "x", "provider": "openai", "model": "m"}]},
        )
        self.assertIn("api_key", str(e))
        e = self.assertRaises(
            ConfigError, _parse, {"models": [{"name": "x", "provider": "custom"}]}
        )
        self.assertIn("base_url is required", str(e))
        e = self.assertRaises(
            ConfigError,
            _parse,
            {"models": [{"name": "x", "provider": "custom", "base_url": "ftp://h"}]},
        )
        self.assertIn("base_url must start with http", str(e))

    def test_deployments_and_fallbacks(self) -> None:
        """
        Deployments of one name must agree on fallbacks, and fallbacks must
        name configured models.
        """
        a = {"name": "m", "provider": "mock", "fallbacks": ["other"]}
        other = {"name": "other", "provider": "mock"}
        config = _parse({"models": [a, dict(a), other]})
        self.assertEqual(config.model_names(), ["m", "other"])
        e = self.assertRaises(
            ConfigError,
            _parse,
            {"models": [a, {"name": "m", "provider": "mock"}, other]},
        )
        self.assertIn("disagree on fallbacks", str(e))
        e = self.assertRaises(ConfigError, _parse, {"models": [a]})
        self.assertIn("no model 'other'", str(e))

    def test_ca_file_must_exist(self) -> None:
        """
        A C{ca_file} that does not exist is refused at start.
        """
        model = {
            "name": "x",
            "provider": "custom",
            "base_url": "https://h",
            "ca_file": "/nonexistent/ca.pem",
        }
        e = self.assertRaises(ConfigError, _parse, {"models": [model]})
        self.assertIn("ca_file", str(e))


class LoadTests(SynchronousTestCase):
    """
    Reading TOML files.
    """

    def write(self, text: str) -> str:
        fd, path = tempfile.mkstemp(suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def test_load(self) -> None:
        """
        A TOML file is parsed and validated.
        """
        path = self.write(
            '[server]\napi_keys = ["k1"]\n\n[[models]]\nname = "m"\nprovider = "mock"\n'
        )
        config = load_config(path, {})
        self.assertEqual(config.server.api_keys, ("k1",))

    def test_invalid_toml(self) -> None:
        """
        A file that is not TOML is refused with its name.
        """
        path = self.write("[server\n")
        e = self.assertRaises(ConfigError, load_config, path, {})
        self.assertIn("not valid TOML", str(e))

    def test_missing_file(self) -> None:
        """
        A file that cannot be read is refused with its name.
        """
        e = self.assertRaises(ConfigError, load_config, "/nonexistent.toml", {})
        self.assertIn("/nonexistent.toml", str(e))


class OptionsTests(SynchronousTestCase):
    """
    C{twistd pylon-ai} options.
    """

    def test_default_port_loopback(self) -> None:
        """
        With no keys configured, a bare port listens on loopback only.
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(
            options["endpoint"], "tcp:8080:interface=127.0.0.1:backlog=1024"
        )
        options = Options()
        options.parseOptions(["--port", "9000"])
        self.assertEqual(
            options["endpoint"], "tcp:9000:interface=127.0.0.1:backlog=1024"
        )

    def test_endpoint_string_kept(self) -> None:
        """
        An endpoint string is used as it is (the operator chose the
        interface).
        """
        options = Options()
        options.parseOptions(["--port", "tcp:9000:interface=127.0.0.1:backlog=5"])
        self.assertEqual(options["endpoint"], "tcp:9000:interface=127.0.0.1:backlog=5")

    def test_keys_open_all_interfaces(self) -> None:
        """
        With client keys configured, a bare port listens on all interfaces.
        """
        fd, path = tempfile.mkstemp(suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write('[server]\napi_keys = ["k"]\n')
        self.addCleanup(os.unlink, path)
        options = Options()
        options.parseOptions(["--config", path, "--port", "9000"])
        self.assertEqual(options["endpoint"], "tcp:9000:backlog=1024")

    def test_bad_config_stops_the_start(self) -> None:
        """
        A bad configuration stops the start with a message naming the key,
        not a traceback (nor the usage text: see test_tap).
        """
        fd, path = tempfile.mkstemp(suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write("[server]\nmax_body_bytes = -1\n")
        self.addCleanup(os.unlink, path)
        options = Options()
        e = self.assertRaises(SystemExit, options.parseOptions, ["--config", path])
        self.assertIn("server.max_body_bytes", str(e.code))
