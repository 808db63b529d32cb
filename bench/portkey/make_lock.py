#!/usr/bin/env python3
"""
Writes bench/portkey/package.json and package-lock.json: Portkey's gateway
1.15.2 as a dependency, with every runtime package at the version of the
release's own lockfile (the gateway repository's package-lock.json at tag
v1.15.2; the npm tarball ships none).  bench/run.py installs them with
`npm ci`, so the tree is exactly the release's.

    git -C gateway show v1.15.2:package-lock.json > /tmp/lock.json
    python3 bench/portkey/make_lock.py /tmp/lock.json

The gateway's own entry (tarball URL, integrity, dependency ranges) comes from
`npm view @portkey-ai/gateway@1.15.2`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

VERSION = "1.15.2"
HERE = Path(__file__).resolve().parent


def main(src: str) -> None:
    release = json.loads(Path(src).read_text())
    root = release["packages"][""]
    if root.get("version") != VERSION:
        raise SystemExit(f"{src} is the lockfile of {root.get('version')}")
    view = json.loads(
        subprocess.run(
            ["npm", "view", f"@portkey-ai/gateway@{VERSION}", "--json"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    name = "bench-portkey-lockfile"
    packages: dict[str, dict[str, object]] = {
        "": {"name": name, "dependencies": {"@portkey-ai/gateway": VERSION}},
        "node_modules/@portkey-ai/gateway": {
            "version": VERSION,
            "resolved": view["dist"]["tarball"],
            "integrity": view["dist"]["integrity"],
            "hasInstallScript": True,
            "license": view.get("license", "MIT"),
            "dependencies": view["dependencies"],
            "bin": {"gateway": "build/start-server.js"},
        },
    }
    # The release's runtime closure, at the paths its own install used: the
    # gateway was the root there, so its dependencies sit in node_modules/
    # here as they did there.
    for path, entry in release["packages"].items():
        if path and not entry.get("dev") and not entry.get("devOptional"):
            packages[path] = entry
    lock = {
        "name": name,
        "lockfileVersion": 3,
        "requires": True,
        "packages": packages,
    }
    pkg = {
        "name": name,
        "private": True,
        "description": "Portkey gateway with its release lockfile's versions",
        "dependencies": {"@portkey-ai/gateway": VERSION},
    }
    (HERE / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    (HERE / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n")
    print(f"{len(packages) - 2} runtime packages pinned")


if __name__ == "__main__":
    main(sys.argv[1])
