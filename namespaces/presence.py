"""/presence: online status. Every socket is in its own `user:{id}` room."""

from __future__ import annotations

from namespaces.base import Namespace


class PresenceNamespace(Namespace):
    pass
