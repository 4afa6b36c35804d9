"""Prometheus metrics (prometheus-client), served at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge(
    "ours_connections", "Connected sockets per namespace", ["namespace"], registry=REGISTRY
)
SOCKET_EVENTS = Counter(
    "ours_socket_events_total",
    (
        "Client socket events handled; result is ok or the error code, an unknown name is "
        "event=unknown"
    ),
    ["namespace", "event", "result"],
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "ours_events_published_total",
    "POST /v1/events publishes, by type and result (new or duplicate)",
    ["type", "result"],
    registry=REGISTRY,
)
EVENTS_CONSUMED = Counter(
    "ours_events_consumed_total",
    "Handler runs by consumer group and event type; result is ok or error",
    ["group", "type", "result"],
    registry=REGISTRY,
)
CONSUMER_SECONDS = Histogram(
    "ours_consumer_seconds",
    "Time to handle one event, per consumer group",
    ["group"],
    registry=REGISTRY,
)
FANOUT_LATENCY = Histogram(
    "ours_fanout_latency_seconds",
    "From an event's ts (its publish time) to its emit on the sockets' rooms",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SLOW_CONSUMERS = Counter(
    "ours_slow_consumer_disconnects_total",
    (
        "Sockets cut off because they could not take what they were sent (websocket: over 1 MiB "
        "unsent, or still backed up when a fan-out hold ended; polling: 5,000 queued packets)"
    ),
    ["transport"],
    registry=REGISTRY,
)
FANOUT_HOLDS = Counter(
    "ours_fanout_holds_total",
    (
        "Times fan-out held back for many websocket connections with an unsent backlog to drain "
        "(backpressure, docs/architecture.md)"
    ),
    registry=REGISTRY,
)
EVENTS_REFUSED = Counter(
    "ours_events_refused_total",
    (
        "Publishes (POST /v1/events) refused with 503 + Retry-After because fan-out was past "
        "its capacity (admission control, docs/operations.md)"
    ),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "ours_consumer_lag",
    (
        "Events not yet handled per consumer group (sampled every second; on Redis the "
        "cluster-wide value)"
    ),
    ["group"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "ours_dead_letters", "Dead letters (sampled every 5 s, counted up to 10,000)", registry=REGISTRY
)
HTTP_REQUESTS = Counter(
    "ours_http_requests_total",
    "HTTP requests by method, route (its pattern) and status, Socket.IO polling included",
    ["method", "route", "status"],
    registry=REGISTRY,
)
PUBSUB_MESSAGES = Counter(
    "ours_pubsub_received_messages",
    (
        "Messages this node's listener received from Redis pub/sub (the channels of its rooms "
        "and the shared one)"
    ),
    registry=REGISTRY,
)
PUBSUB_BYTES = Counter(
    "ours_pubsub_received_bytes",
    "Payload bytes of the messages this node's listener received from Redis pub/sub",
    registry=REGISTRY,
)
PUBSUB_CHANNELS = Gauge(
    "ours_pubsub_channels",
    "Redis pub/sub channels this node is subscribed to (one per room with a socket here, plus "
    "the shared one)",
    registry=REGISTRY,
)
