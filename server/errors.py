"""The one error vocabulary shared by socket acks and HTTP responses."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError
from redis.exceptions import (
    ClusterError,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server import logs

M = TypeVar("M", bound=BaseModel)


class Code(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_EVENT = "unknown_event"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


HTTP_STATUS = {
    Code.BAD_REQUEST: 400,
    Code.UNAUTHORIZED: 401,
    Code.TOKEN_EXPIRED: 401,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.CONFLICT: 409,
    Code.PAYLOAD_TOO_LARGE: 413,
    Code.RATE_LIMITED: 429,
    Code.UNKNOWN_EVENT: 400,
    Code.UNAVAILABLE: 503,
    Code.INTERNAL: 500,
}


class ApiError(Exception):
    """A refusal with a code the client can act on; becomes an error ack or an HTTP error."""

    def __init__(self, code: Code, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.details is not None:
            err["details"] = self.details
            if isinstance(self.details, dict) and "retry_after" in self.details:
                err["retry_after"] = self.details["retry_after"]
        return err


#: what a client is told to wait before retrying while a dependency is down (Retry-After)
RETRY_AFTER_S = 1

#: a Redis Cluster without a node for a slot, as redis-py's cluster client says it: not
#: RedisErrors (it raises them before any command is sent)
_CLUSTER_UNREACHABLE = (SlotNotCoveredError, RedisClusterUnreachableError)

#: Redis did not answer: a server unreachable, timing out or still loading; on a cluster also
#: CLUSTERDOWN / MASTERDOWN and TRYAGAIN while a primary fails over or slots move, and
#: ClusterError when redirections ran out mid-failover
REDIS_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    TryAgainError,
    *_CLUSTER_UNREACHABLE,
)

#: whatever a call to Redis can raise (a RedisError, a socket's OSError, the cluster client's
#: slot errors, which are not RedisErrors): what a loop that retries Redis catches
REDIS_ERRORS = (RedisError, OSError, *_CLUSTER_UNREACHABLE)

_POSTGRES_DOWN = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, restarting, not yet up
    asyncpg.InterfaceError,  # a pooled connection that died with its server
)


def dependency_down(exc: BaseException) -> tuple[str, ApiError] | None:
    """(which, an `unavailable` refusal) when `exc` says a dependency did not answer — Redis
    unreachable, timing out or still loading, or a cluster failing over (`REDIS_DOWN`);
    PostgreSQL unreachable, restarting or its connection gone; a refused socket — or None for
    anything else (a bug: `internal`). HTTP answers it 503 + Retry-After, a socket event gets it
    as its error ack."""
    if isinstance(exc, REDIS_DOWN):
        which = "redis"
    elif isinstance(exc, _POSTGRES_DOWN):
        which = "postgresql"
    elif isinstance(exc, OSError):
        which = "a dependency"
    else:
        return None
    return which, ApiError(
        Code.UNAVAILABLE,
        f"{which} is unavailable; retry in {RETRY_AFTER_S}s",
        {"retry_after": RETRY_AFTER_S},
    )


def refusal_for_outage(exc: BaseException, log: logging.Logger) -> ApiError | None:
    """`dependency_down`, said in the log at most every 10 s per dependency (a warning, no
    traceback): the refusal to answer with, or None when `exc` is a bug to log in full."""
    down = dependency_down(exc)
    if down is None:
        return None
    which, refusal = down
    if logs.now_and_then(f"down:{which}"):
        log.warning(
            "dependency unavailable; answering `unavailable`",
            extra={"dependency": which, "error": f"{type(exc).__name__}: {exc}"},
        )
    return refusal


def log_failure(log: logging.Logger, what: str, exc: BaseException, **extra: Any) -> None:
    """A background pass that failed (a consumer, a loop, a flush): a dependency that is
    down is said now and then, without a traceback; anything else is a bug, logged in full."""
    if refusal_for_outage(exc, log) is None:
        log.error(what, exc_info=exc, extra=extra)


def field_errors(exc: Any) -> list[dict[str, str]]:
    """pydantic ValidationError -> [{field, message}] without echoing input values."""
    out = []
    for e in exc.errors(include_url=False, include_input=False):
        out.append({"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]})
    return out


def validate(
    model: type[M], raw: Any, what: str = "body", *, prefix: str = "", object_only: bool = False
) -> M:
    """Validate `raw` with `model` or raise ApiError(bad_request) naming each bad field (the
    one validate-and-raise of HTTP bodies, socket payloads and events). `prefix` is put before
    each field name (`payload.` for an event's payload); with `object_only`, anything but a
    JSON object is refused before validation."""
    if object_only and not isinstance(raw, dict):
        raise ApiError(Code.BAD_REQUEST, f"{what} must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "field": prefix + e["field"]} for e in field_errors(exc)]
        raise ApiError(Code.BAD_REQUEST, f"invalid {what}", errors) from None


def ok(data: Any = None) -> dict[str, Any]:
    return {"ok": True, "data": data}


def fail(err: ApiError) -> dict[str, Any]:
    return {"ok": False, "error": err.body()}
