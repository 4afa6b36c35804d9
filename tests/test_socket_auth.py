"""Connect auth: JWT verified on every connect, refusals carry a code, user room joined."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.conftest import JWT_SECRET
from tests.helpers import ServerHandle, connect, connect_error

NAMESPACES = ["/feed", "/live", "/notifications", "/messages", "/presence"]


async def test_valid_token_connects_to_all_five_namespaces(server: ServerHandle) -> None:
    token = server.token("42")
    clients = [await connect(server.url, ns, token) for ns in NAMESPACES]
    # every socket is in user:42: an event for that user reaches /notifications
    status, _ = await server.publish(
        {
            "type": "user.followed",
            "subjects": ["user:42"],
            "payload": {"follower_id": "7", "followee_id": "42"},
        }
    )
    assert status == 202
    notif = clients[2]
    got = await notif.wait_for("user.followed")
    assert got[0]["payload"] == {"follower_id": "7", "followee_id": "42"}
    for c in clients:
        await c.close()


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (None, "unauthorized"),
        ({}, "unauthorized"),
        ({"token": ""}, "unauthorized"),
        ({"token": 12}, "unauthorized"),
        ({"token": "not-a-jwt"}, "unauthorized"),
        (
            {
                "token": jwt.encode(
                    {"sub": "1", "exp": time.time() + 3600}, "wrong-secret-xxxxxxxxxxx"
                )
            },
            "unauthorized",
        ),
        ({"token": jwt.encode({"sub": "1", "exp": time.time() - 60}, JWT_SECRET)}, "token_expired"),
        ({"token": jwt.encode({"sub": "1"}, JWT_SECRET)}, "unauthorized"),  # no exp
        ({"token": jwt.encode({"exp": time.time() + 3600}, JWT_SECRET)}, "unauthorized"),  # no sub
        (
            {
                "token": jwt.encode(
                    {"sub": "1", "exp": time.time() + 3600, "role": "god"}, JWT_SECRET
                )
            },
            "unauthorized",
        ),
        (
            {
                "token": jwt.encode(
                    {"sub": "1", "exp": time.time() + 3600}, JWT_SECRET, algorithm="HS512"
                )
            },
            "unauthorized",
        ),
    ],
    ids=[
        "no-auth",
        "empty",
        "empty-token",
        "number",
        "garbage",
        "wrong-key",
        "expired",
        "no-exp",
        "no-sub",
        "bad-role",
        "wrong-alg",
    ],
)
async def test_bad_tokens_get_connect_error_with_code(
    server: ServerHandle, auth: object, code: str
) -> None:
    err = await connect_error(server.url, "/feed", auth)
    assert err is not None
    assert err["code"] == code
    assert err["message"]


def _alg_none_token() -> str:
    import base64
    import json

    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return (
        b64({"alg": "none", "typ": "JWT"})
        + "."
        + b64({"sub": "1", "exp": time.time() + 3600})
        + "."
    )


async def test_alg_none_is_refused(server: ServerHandle) -> None:
    err = await connect_error(server.url, "/messages", {"token": _alg_none_token()})
    assert err["code"] == "unauthorized"


async def test_user_id_comes_from_token_not_payload(server: ServerHandle) -> None:
    """A client cannot join another user's room by naming it."""
    c = await connect(server.url, "/feed", server.token("alice"))
    ack = await c.call("room:join", {"room": "user:bob"})
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    assert (await c.call("room:join", {"room": "user:alice"}))["ok"] is True
    await c.close()


async def test_sub_must_be_room_safe(server: ServerHandle) -> None:
    token = jwt.encode({"sub": "auth0|123", "exp": time.time() + 3600}, JWT_SECRET)
    err = await connect_error(server.url, "/feed", {"token": token})
    assert err["code"] == "unauthorized" and "sub" in err["message"]
