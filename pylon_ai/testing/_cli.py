"""
C{python -m pylon_ai.testing}: the fake provider as a program, serving until
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn

from attrs import frozen

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError

from pylon_ai.testing._fake import FakeProvider, require_trustme
from pylon_ai.testing._script import SCRIPT_HELP, FakeScript, ScriptError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorCore

PROG = "pylon_ai.testing"

_DESCRIPTION = """\
Serve a scripted fake LLM provider until Ctrl-C or SIGTERM: OpenAI Chat
Completions on POST /v1/chat/completions (and any other path), Anthropic
Messages on POST /v1/messages, streaming or not.  Prints one line saying
where it listens; notes each request on standard error.
"""

_EPILOG = f"""\
script file (--script): JSON, {{"replies": [REPLY, ...], "default": REPLY}}
(both optional) or a bare list of replies.  The replies are served in order,
one per request, then the default (without one: "Hello from the fake.").
Example:
  {{"replies": [{{"chunks": ["Hel", "lo"], "usage": [10, 2]}},
               {{"status": 429, "retry_after": 1}}],
   "default": {{"chunks": ["Out of script."]}}}}

A REPLY is an object with any of these fields:
{SCRIPT_HELP}"""


class _UsageError(Exception):
    """
    Bad command-line arguments.
    """


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the usage and exits; we print one line.
        raise _UsageError(message)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return port


def _host(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an IP address: {text!r} (e.g. 127.0.0.1 or ::1)"
        ) from None
    return text


def _parser() -> _Parser:
    parser = _Parser(
        prog=f"python -m {PROG}",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=0,
        help="the TCP port (default 0: a free one, printed)",
    )
    parser.add_argument(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="the IP address to listen on (default 127.0.0.1)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a certificate from a throwaway CA (needs "
        "pip install 'pylon_ai[test]'); the CA certificate is written to a "
        "temporary file whose path is printed",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="with --tls: write the CA certificate here (kept at exit)",
    )
    parser.add_argument(
        "--script",
        metavar="FILE",
        help="a JSON file of scripted replies (format below)",
    )
    return parser


@frozen
class _Options:
    port: int
    host: str
    tls: bool
    ca_file: str | None
    script: FakeScript


def _read_options(argv: Sequence[str]) -> _Options:
    """
    @raise _UsageError: Bad arguments.
    @raise ScriptError: A bad script file.
    """
    args = _parser().parse_args(argv)
    if args.ca_file is not None and not args.tls:
        raise _UsageError("--ca-file needs --tls")
    script = FakeScript()
    if args.script is not None:
        script = FakeScript.from_file(args.script)
    return _Options(args.port, args.host, args.tls, args.ca_file, script)


def _say(stream: IO[str], line: str) -> None:
    print(f"{PROG}: {line}", file=stream, flush=True)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run the command.

    @param argv: The arguments (C{sys.argv[1:]} by default).
    @raise SystemExit: Always: 0 after Ctrl-C or SIGTERM (or C{--help}), 1
        when it cannot serve (port taken, C{trustme} missing), 2 on bad
        arguments or a bad script file.
    """
    try:
        options = _read_options(sys.argv[1:] if argv is None else argv)
    except (_UsageError, ScriptError) as e:
        _say(sys.stderr, f"error: {e} (see --help)")
        sys.exit(2)
    if options.tls:
        try:
            require_trustme()
        except ImportError as e:
            _say(sys.stderr, f"error: --tls: {e}")
            sys.exit(1)

    from twisted.internet.task import react

    react(_serve, (options,))


async def _serve(reactor: Any, options: _Options) -> None:
    # Start once the reactor runs, so that its SIGINT and SIGTERM handlers
    # are in place before the line that tells a caller it may signal us.
    running: Deferred[None] = Deferred()
    reactor.callWhenRunning(running.callback, None)
    await running
    _log_warnings()
    provider = FakeProvider(
        reactor, port=options.port, host=options.host, tls=options.tls
    )
    options.script.install(provider)
    try:
        await provider.start()
    except CannotListenError as e:
        _say(
            sys.stderr,
            f"error: cannot listen on {options.host}:{options.port}: {e.socketError}",
        )
        raise SystemExit(1) from None
    _stop_with(reactor, provider)
    where = (
        f"fake provider listening on {provider.base_url}"
        " (OpenAI: /v1/chat/completions, Anthropic: /v1/messages)"
    )
    if options.tls:
        where += f"; CA certificate: {_write_ca(reactor, provider, options.ca_file)}"
    _say(sys.stdout, f"{where}; Ctrl-C to stop")
    await _note_requests(provider)


def _stop_with(reactor: IReactorCore, provider: FakeProvider) -> None:
    """
    Close the provider's port and connections when the reactor stops.
    """
    reactor.addSystemEventTrigger("before", "shutdown", provider.stop)


def _write_ca(reactor: IReactorCore, provider: FakeProvider, path: str | None) -> str:
    """
    Write the CA certificate for clients to trust.

    @param path: Where; L{None} for a temporary file, removed at shutdown.
    @return: The absolute path of the file.
    """
    if path is None:
        fd, path = tempfile.mkstemp(prefix="pylon-fake-ca-", suffix=".pem")
        os.close(fd)
        reactor.addSystemEventTrigger("after", "shutdown", _remove, path)
    path = os.path.abspath(path)
    provider.ca.cert_pem.write_to_path(path)
    return path


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


async def _note_requests(provider: FakeProvider) -> None:
    """
    Note each request on standard error (never its headers: they hold keys).
    """
    number = 1
    while True:
        request = await provider.wait_for_request(number)
        number += 1
        body = request.json if isinstance(request.json, dict) else {}
        model = body.get("model")
        if not isinstance(model, str):
            model = "-"
        stream = "true" if request.stream else "false"
        _say(
            sys.stderr,
            f"{request.method} {request.path} model={model} stream={stream}",
        )


def _log_warnings() -> None:
    """
    Show Twisted's warnings and errors (an exception in a handler) on
    standard error: this is a program, not a library.
    """
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
