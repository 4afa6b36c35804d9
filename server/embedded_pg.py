"""The embedded default database: a real PostgreSQL from the `pgserver` package in the data dir."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("ours.storage")


async def start(data_dir: Path) -> tuple[str, Any]:
    """Start (or attach to) the PostgreSQL in `data_dir/pg`; return (dsn, handle).

    Several processes on one data dir share one server; it stops when the last one leaves."""
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver

    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = await asyncio.to_thread(pgserver.get_server, pgdata, cleanup_mode="stop")
    uri = server.get_uri()
    log.info("embedded postgresql ready", extra={"pgdata": str(pgdata)})
    return uri, server


async def stop(handle: Any) -> None:
    if handle is not None:
        await asyncio.to_thread(handle.cleanup)
