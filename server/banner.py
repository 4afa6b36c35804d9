"""The start-up banner of `ours serve` for a person at a terminal: what runs, where to go next
(the console, a token), which backends are in use and where the development secrets are.
Printed only when the logs are readable lines (a TTY, or OURS_LOG_FORMAT=console); never shows
a secret or a password in a URL."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

from config import DEV_SECRETS_FILE, Settings


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _ours() -> str:
    """How this person runs `ours`: the path they started it by, relative when it is short."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "ours" and os.path.exists(argv0):
        rel = os.path.relpath(argv0)
        return rel if not rel.startswith("..") else argv0
    return "ours"


def text(settings: Settings, url: str, version: str) -> str:
    s = settings
    storage = (
        f"PostgreSQL at {_without_credentials(s.database_url)}"
        if s.database_url
        else f"embedded PostgreSQL in {(s.data_dir / 'pg').resolve()}"
    )
    bus = f"Redis at {_without_credentials(s.redis_url)}" if s.redis_url else "in-process bus"
    here = "" if url == f"http://{s.host}:{s.port}" else f" --url {url}"
    lines = [
        f"OURS comms {version} — serving on {url}",
        f"  console      {url}/console/",
        f"  a token      {_ours()} token --user ops --role admin   (paste it into the console)",
        f"  status       {_ours()} status{here}",
        f"  storage      {storage}",
        f"  bus          {bus}",
    ]
    secrets = s.data_dir / DEV_SECRETS_FILE
    if secrets.exists():
        lines.append(
            f"  dev secrets  {secrets.resolve()}  (JWT secret, API key, master key: dev only)"
        )
    lines += ["  docs         README.md, docs/protocol.md  ·  logs below; Ctrl-C stops", ""]
    return "\n".join(lines)
