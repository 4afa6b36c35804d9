"""/messages: DM delivery. `message.*` events are fanned out here to the user rooms they name."""

from __future__ import annotations

from namespaces.base import Namespace


class MessagesNamespace(Namespace):
    pass
