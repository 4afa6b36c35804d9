"""Prometheus metrics (prometheus-client), served at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge(
    "ours_connections", "Connected sockets per namespace", ["namespace"], registry=REGISTRY
)
SOCKET_EVENTS = Counter(
    "ours_socket_events_total",
    "Client socket events handled, by namespace, event and result code",
    ["namespace", "event", "result"],
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "ours_events_published_total",
    "Events published to the bus, by type and result (new/duplicate)",
    ["type", "result"],
    registry=REGISTRY,
)
EVENTS_CONSUMED = Counter(
    "ours_events_consumed_total",
    "Events handled by consumer group, type and result",
    ["group", "type", "result"],
    registry=REGISTRY,
)
CONSUMER_SECONDS = Histogram(
    "ours_consumer_seconds", "Time to handle one event", ["group"], registry=REGISTRY
)
FANOUT_LATENCY = Histogram(
    "ours_fanout_latency_seconds",
    "From event publish time (ts) to emit on the sockets' rooms",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SLOW_CONSUMERS = Counter(
    "ours_slow_consumer_disconnects_total",
    "Sockets disconnected because they could not take what they were sent, by transport",
    ["transport"],
    registry=REGISTRY,
)
FANOUT_HOLDS = Counter(
    "ours_fanout_holds_total",
    "Times fan-out held back because many websocket connections had an unsent backlog",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "ours_consumer_lag", "Events not yet handled per consumer group", ["group"], registry=REGISTRY
)
DEAD_LETTERS = Gauge("ours_dead_letters", "Events in the dead letters", registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "ours_http_requests_total",
    "HTTP requests by route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
