"""/feed: live feed updates. Clients join zone:, content: and live: rooms; `content.*` and
`governance.*` events are fanned out here."""

from __future__ import annotations

from namespaces.base import RoomsNamespace


class FeedNamespace(RoomsNamespace):
    pass
