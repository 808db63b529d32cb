"""
Helpers for tests that run the service as its own process.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pylon_ai


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_command(
    config: Path, port: int, *options: str
) -> tuple[list[str], dict[str, str]]:
    """
    The arguments and environment of C{twistd -n pylon-ai} on 127.0.0.1,
    run by this interpreter with this checkout's package.

    @param options: More options of C{pylon-ai} (C{"--workers", "2"}).
    @return: The argument list (C{sys.executable} first) and environment,
        for C{reactor.spawnProcess}.
    """
    env = dict(os.environ)
    package_parent = str(Path(pylon_ai.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, env.get("PYTHONPATH")) if p
    )
    # The supervisor of workers makes its own; one inherited would be shared.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "--logfile=-",
        "pylon-ai",
        "--config",
        str(config),
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
        *options,
    ]
    return args, env
