"""The one error vocabulary shared by socket acks and HTTP responses."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


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


def field_errors(exc: Any) -> list[dict[str, str]]:
    """pydantic ValidationError -> [{field, message}] without echoing input values."""
    out = []
    for e in exc.errors(include_url=False, include_input=False):
        out.append({"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]})
    return out


def ok(data: Any = None) -> dict[str, Any]:
    return {"ok": True, "data": data}


def fail(err: ApiError) -> dict[str, Any]:
    return {"ok": False, "error": err.body()}
