"""Push under concurrency (many recipients' sends in flight at once against the fake FCM):
429 Retry-After honoured per delivery, UNREGISTERED tokens pruned, each token sent once; the
access token refreshed ahead of its expiry; the pacer of the rate-limited channels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp

from routing.channels.base import Pacer
from routing.channels.push import PushChannel
from routing.dispatch import RetryPolicy
from routing.priorities import Channel
from tests.test_routing_env import *  # noqa: F403 (the env fixtures)
from tests.test_routing_env import Env

LIVE = {"live_id": "l1", "host_id": "host", "title": "Late set"}


async def live_to(env: Env, users: list[str]) -> str:
    return await env.publish("live.started", LIVE, [f"user:{u}" for u in users], actor="host")


def push_channel(env: Env) -> PushChannel:
    channel = env.feature.channels[Channel.PUSH]
    assert isinstance(channel, PushChannel)
    return channel


async def test_429_retry_after_is_honoured_for_each_delivery_under_concurrency(env: Env) -> None:
    users = [f"u{i:02}" for i in range(40)]
    for u in users:
        await env.device(u, f"tok-{u}")
    # backoff far below the Retry-After, so the wait we see is the provider's
    env.feature.dispatcher.retry = RetryPolicy(max_attempts=3, base=0.01)
    env.fcm.latency = 0.02  # answers overlap: the sends are in flight together
    env.fcm.throttle_every = 5
    eid = await live_to(env, users)
    await env.settle()
    assert env.fcm.max_in_flight > 1
    assert len(env.fcm.requests) == 40 and env.fcm.statuses == {200: 32, 429: 8}

    log = {u: (await env.deliveries(eid, u))["push"] for u in users}
    throttled = [u for u, row in log.items() if row["state"] == "queued"]
    assert len(throttled) == 8
    for u in throttled:
        row = log[u]
        assert (row["reason"], row["attempts"]) == ("provider_error", 1)
        assert "FCM 429 QUOTA_EXCEEDED" in row["detail"]
        wait = (datetime.fromisoformat(row["not_before"]) - env.clock()).total_seconds()
        assert 1.0 <= wait <= 1.2  # Retry-After: 1, plus a little spread
    assert all(log[u]["state"] == "sent" for u in users if u not in throttled)

    env.fcm.throttle_every = 0
    env.clock.advance(seconds=0.9)
    await env.settle()
    assert len(env.fcm.requests) == 40  # not before the Retry-After
    env.clock.advance(seconds=0.4)
    await env.settle()
    assert len(env.fcm.requests) == 48
    assert env.fcm.accepted_per_token == {f"tok-{u}": 1 for u in users}  # none lost, none twice
    for u in users:
        row = (await env.deliveries(eid, u))["push"]
        assert (row["state"], row["attempts"]) == ("sent", 2 if u in throttled else 1)


async def test_unregistered_tokens_are_pruned_under_concurrency(env: Env) -> None:
    both = [f"b{i:02}" for i in range(30)]  # a live device and an uninstalled one
    gone = [f"g{i:02}" for i in range(10)]  # only an uninstalled one
    for u in both:
        await env.device(u, f"tok-{u}", "android")
        await env.device(u, f"gone-{u}", "ios")
    for u in gone:
        await env.device(u, f"gone-{u}", "web")
    env.fcm.latency = 0.02
    eid = await live_to(env, both + gone)
    await env.settle()
    assert env.fcm.max_in_flight > 1

    for u in both:
        row = (await env.deliveries(eid, u))["push"]
        assert (row["state"], row["detail"]) == ("sent", "1/2 devices; 1 invalid token(s) pruned")
        assert await env.feature.store.devices.of_user(u) == [(f"tok-{u}", "android")]
    for u in gone:
        row = (await env.deliveries(eid, u))["push"]
        assert (row["state"], row["reason"]) == ("failed", "invalid_token")
        assert await env.feature.store.devices.of_user(u) == []

    # what the benchmark reads back from the fake
    async with aiohttp.ClientSession() as s, s.get(f"{env.fcm.url}/_stats") as r:
        stats = await r.json()
    assert stats["requests"] == 70 and stats["statuses"] == {"200": 30, "404": 40}
    assert stats["per_token"] == {f"tok-{u}": 1 for u in both}

    env.clock.advance(hours=2)
    await env.settle()
    assert len(env.fcm.requests) == 70  # nothing retried


async def test_the_access_token_is_refreshed_before_it_expires(env: Env) -> None:
    await env.device("ana", "tok-a")
    first = await live_to(env, ["ana"])
    await env.settle()
    assert env.fcm.token_requests == 1
    client = push_channel(env).client
    assert client is not None
    old = client.creds.token
    # six minutes left: the next send uses the old token and a refresh starts behind it
    client.creds.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=6)
    assert await client.token() == old
    assert client._refresh is not None
    await client._refresh
    assert env.fcm.token_requests == 2 and client.creds.token != old
    second = await live_to(env, ["ana"])
    await env.settle()
    for eid in (first, second):
        assert (await env.deliveries(eid, "ana"))["push"]["state"] == "sent"
    assert env.fcm.token_requests == 2


def test_pacer_spaces_starts_at_its_rate_and_allows_its_burst_after_a_pause() -> None:
    now = [100.0]
    pace = Pacer(2.0, clock=lambda: now[0])
    assert [pace.reserve() for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]
    now[0] += 10  # idle: the next goes at once, and then every half second again
    assert [pace.reserve() for _ in range(2)] == [0.0, 0.5]

    burst = Pacer(1.0, burst=3, clock=lambda: now[0])
    assert [burst.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]


async def test_a_paced_channel_leases_no_more_than_it_sends_within_half_a_lease(
    env: Env,
) -> None:
    sms = env.feature.channels[Channel.SMS]
    assert sms.rate == 1.0 and sms.concurrency == 4
    dispatcher = env.feature.dispatcher
    claimed: list[int] = []
    real = env.feature.store.outbox.claim_due

    async def spy(channel: str, now: datetime, limit: int, lease_s: float) -> list[object]:
        if channel == "sms":
            claimed.append(limit)
        return list(await real(channel, now, limit, lease_s))

    env.feature.store.outbox.claim_due = spy  # type: ignore[method-assign]
    dispatcher.lease_s = 10.0  # 1/s for half of 10 s: 5 rows, not 4 x 4
    await dispatcher.run_channel(Channel.SMS)
    assert claimed == [5]
