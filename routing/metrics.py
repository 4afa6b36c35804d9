"""The router's Prometheus metrics (on the server's registry, served at GET /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from server.metrics import REGISTRY

NOTIFICATIONS = Counter(
    "ours_notifications_total",
    "Notifications routed, by kind and outcome (added, filtered)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "ours_deliveries_total",
    "Delivery outcomes by channel, state and reason",
    ["channel", "state", "reason"],
    registry=REGISTRY,
)
SEND_SECONDS = Histogram(
    "ours_channel_send_seconds", "Time of one provider send", ["channel"], registry=REGISTRY
)
