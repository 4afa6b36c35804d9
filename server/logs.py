"""Logs carrying request, event and user ids; secrets are never written.

Two formats of the same fields (`OURS_LOG_FORMAT`): JSON lines for machines (production, CI,
files), one readable line per event for a person at a terminal; `auto` (the default) picks the
readable one when stderr is a TTY, as uvicorn and Centrifugo do.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
user_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_SECRET_KEYS = re.compile(r"(token|secret|password|authorization|api_key|key|cookie)", re.I)
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _JWT.sub("[jwt]", value)
    return value


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ids and `extra` fields, secrets redacted and JWTs masked."""
    out: dict[str, Any] = {}
    for name, var in (("request_id", request_id), ("event_id", event_id), ("user_id", user_id)):
        v = var.get()
        if v is not None:
            out[name] = v
    for k, v in record.__dict__.items():
        if k in _RESERVED or k.startswith("_"):
            continue
        out[k] = "[redacted]" if _SECRET_KEYS.search(k) and k != "key_id" else _scrub(v)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _scrub(record.getMessage()),
            **_context(record),
        }
        if record.exc_info:
            out["exc"] = _scrub(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """`14:03:07 INFO  ours.http  http method=GET path=/health status=200` (local time)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_plain(v)}" for k, v in _context(record).items())
        line = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))} "
            f"{record.levelname:<7} {record.name}  {_scrub(record.getMessage())}"
        )
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + _scrub(self.formatException(record.exc_info))
        return line


def _plain(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if text and " " not in text else orjson.dumps(text).decode()


def console_wanted(fmt: str = "auto") -> bool:
    """Readable lines rather than JSON: asked for, or `auto` with stderr on a terminal."""
    return fmt == "console" or (fmt == "auto" and sys.stderr.isatty())


def setup(level: str = "INFO", fmt: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter() if console_wanted(fmt) else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "engineio.server", "socketio.server", "asyncio", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_last_said: dict[str, float] = {}


def now_and_then(key: str, every_s: float = 10.0) -> bool:
    """True at most once per `every_s` for `key`: a condition that holds for every request
    (a dependency down) is logged once in a while, not once per request."""
    now = time.monotonic()
    if now - _last_said.get(key, -every_s) < every_s:
        return False
    _last_said[key] = now
    return True
