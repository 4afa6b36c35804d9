"""The features this server is built from, in start order (one line each)."""

from __future__ import annotations

from server.feature import Feature


def feature_classes() -> list[type[Feature]]:
    from server.messaging.feature import MessagingFeature

    return [MessagingFeature]
