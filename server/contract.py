"""What the server sends, checked against what it declares: a socket event's ack against its
`@handles(ack=...)`, a server event's payload against its `server_event(...)`, an HTTP
response's `data` against its `@operation(data=...)`.

Off in production (a validation per message costs); on with OURS_CHECK_CONTRACT=1, which the
test suite sets for every server it starts, so each test that drives the server also checks
the documents (/v1/openapi.json, /v1/asyncapi.json) against what really goes out. A mismatch
is logged as an error and kept in `VIOLATIONS`; the suite fails on any (tests/conftest.py).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from server import jsonutil

log = logging.getLogger("ours.contract")

#: set by the node from `Settings.check_contract`
ENABLED = False
#: "<kind> <name>: <error>" of every mismatch seen in this process
VIOLATIONS: list[str] = []

_adapters: dict[int, TypeAdapter[Any]] = {}


class Outgoing(BaseModel):
    """Base of the models of what the server sends (ack data, event payloads, HTTP data): a
    field the model does not name is a mismatch, so the documents name every field."""

    model_config = ConfigDict(extra="forbid")


def _adapter(declared: Any) -> TypeAdapter[Any]:
    key = id(declared)
    adapter = _adapters.get(key)
    if adapter is None:
        adapter = _adapters[key] = TypeAdapter(type(None) if declared is None else declared)
    return adapter


def mismatch(declared: Any, data: Any) -> str | None:
    """Why `data` (as it goes out, in JSON) does not match `declared`, or None."""
    try:
        _adapter(declared).validate_json(jsonutil.dumpb(data))
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )[:2000]
    except TypeError as exc:
        return f"not JSON: {exc}"
    return None


def check(kind: str, name: str, declared: Any, data: Any) -> bool:
    """True when checking is off or `data` matches; otherwise logs and records the mismatch."""
    if not ENABLED:
        return True
    why = mismatch(declared, data)
    if why is None:
        return True
    VIOLATIONS.append(f"{kind} {name}: {why}")
    log.error("sent data does not match the contract", extra={"what": f"{kind} {name}", "why": why})
    return False
