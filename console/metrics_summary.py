"""This process's Prometheus metrics, read back from the registry as plain JSON numbers for the
operator view: connections, events, fan-out latency buckets, consumer lag, dead letters."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry

FANOUT_GROUP = "fanout"  # the bus consumer group of server/fanout.py (see server/node.py)


def summary(registry: CollectorRegistry, namespaces: list[str]) -> dict[str, Any]:
    """Current values; counters and the histogram stay cumulative (the page takes deltas).

    `events.by_type` counts the events this process's fan-out consumer handled, by type: every
    event on the bus (HTTP, sockets, webhooks, scheduler) passes it once. `events.published` is
    only what came in over POST /v1/events.
    """
    connections: dict[str, float] = dict.fromkeys(namespaces, 0.0)
    published: dict[str, float] = defaultdict(float)
    duplicates = 0.0
    consumed: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_type: dict[str, float] = defaultdict(float)  # every bus event passes the fan-out once
    socket_events: dict[str, float] = defaultdict(float)
    socket_errors = 0.0
    http: dict[str, float] = defaultdict(float)
    lag: dict[str, float] = {}
    dead_letters = 0.0
    buckets: list[tuple[float | None, float]] = []  # cumulative, le None is +Inf
    latency = {"count": 0.0, "sum": 0.0}

    for family in registry.collect():
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "ours_connections":
                connections[labels["namespace"]] = value
            elif name == "ours_events_published_total":
                if labels["result"] == "duplicate":
                    duplicates += value
                else:
                    published[labels["type"]] += value
            elif name == "ours_events_consumed_total":
                consumed[labels["group"]][labels["result"]] += value
                if labels["group"] == FANOUT_GROUP:
                    by_type[labels["type"]] += value
            elif name == "ours_socket_events_total":
                socket_events[f"{labels['namespace']} {labels['event']}"] += value
                if labels["result"] != "ok":
                    socket_errors += value
            elif name == "ours_http_requests_total":
                http[labels["status"][:1] + "xx"] += value
            elif name == "ours_consumer_lag":
                lag[labels["group"]] = value
            elif name == "ours_dead_letters":
                dead_letters = value
            elif name == "ours_fanout_latency_seconds_bucket":
                le = float(labels["le"])
                buckets.append((le if math.isfinite(le) else None, value))
            elif name == "ours_fanout_latency_seconds_count":
                latency["count"] = value
            elif name == "ours_fanout_latency_seconds_sum":
                latency["sum"] = value

    return {
        "ts": time.time(),
        "connections": connections,
        "events": {
            "published": dict(published),
            "by_type": dict(by_type),
            "duplicates": duplicates,
            "consumed": {g: dict(r) for g, r in consumed.items()},
        },
        "socket_events": {"by_event": dict(socket_events), "errors": socket_errors},
        "http": dict(http),
        "fanout_latency": {"buckets": buckets, **latency},
        "consumer_lag": lag,
        "dead_letters": dead_letters,
    }
