"""Structured JSON logs carrying request, event and user ids; secrets are never written."""

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _scrub(record.getMessage()),
        }
        for name, var in (("request_id", request_id), ("event_id", event_id), ("user_id", user_id)):
            v = var.get()
            if v is not None:
                out[name] = v
        for k, v in record.__dict__.items():
            if k in _RESERVED or k.startswith("_"):
                continue
            out[k] = "[redacted]" if _SECRET_KEYS.search(k) and k != "key_id" else _scrub(v)
        if record.exc_info:
            out["exc"] = _scrub(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "engineio.server", "socketio.server", "asyncio", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
