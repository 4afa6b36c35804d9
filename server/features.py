"""The features this server is built from, in start order (one line each)."""

from __future__ import annotations

from server.feature import Feature


def feature_classes() -> list[type[Feature]]:
    from bots.feature import BotFeature
    from console.feature import ConsoleFeature
    from media.feature import MediaFeature
    from routing.feature import RouterFeature
    from server.messaging.feature import MessagingFeature
    from server.presence_service import PresenceFeature

    return [
        PresenceFeature,
        MediaFeature,
        MessagingFeature,
        BotFeature,
        RouterFeature,
        ConsoleFeature,
    ]
