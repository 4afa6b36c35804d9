"""The features this server is built from, in start order (one line each)."""

from __future__ import annotations

from server.feature import Feature


def feature_classes() -> list[type[Feature]]:
    from bots.feature import BotFeature
    from console.feature import ConsoleFeature
    from media.feature import MediaFeature
    from routing.feature import RouterFeature
    from server.activity.feature import ActivityFeature
    from server.livechat.feature import LiveChatFeature
    from server.messaging.feature import MessagingFeature
    from server.presence_service import PresenceFeature
    from server.privacy.feature import PrivacyFeature
    from server.watching import Watching

    return [
        PresenceFeature,
        Watching,
        MediaFeature,
        MessagingFeature,
        LiveChatFeature,
        BotFeature,
        RouterFeature,
        ActivityFeature,
        ConsoleFeature,
        PrivacyFeature,
    ]
