"""/notifications: real-time notification delivery to the user's own room (`user:{id}`).
`hours.*`, `user.*` and `storefront.*` events are fanned out here."""

from __future__ import annotations

from namespaces.base import Namespace


class NotificationsNamespace(Namespace):
    pass
