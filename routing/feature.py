"""RouterFeature ("router"): wires the notification router into the node.

Services: `router` (bus consumer and `notify()` for other features), `inbox` (what users do),
`audiences` (the platform's recipient lists),
`dispatcher` (sends queued deliveries), `digests` (scheduler job `routing.digest`),
`store` (SQL, one part per concept). `clock` is the one source of "now" for routing
decisions; tests replace it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from routing.audiences import Audiences
from routing.channels.base import OutboundChannel
from routing.channels.email import EmailChannel
from routing.channels.in_app import InAppChannel
from routing.channels.push import PushChannel
from routing.channels.sms import SmsChannel
from routing.channels.telegram import TelegramChannel, TelegramOutbox
from routing.digests import Digests
from routing.dispatch import Dispatcher, RetryPolicy
from routing.inbox import Inbox
from routing.preferences import PreferencesUpdate
from routing.priorities import Channel
from routing.router import Router, RouterOptions
from routing.store import RouterStore
from routing.store.digests import DIGEST_JOB
from server.clock import Clock, SystemClock
from server.feature import Feature
from server.personal_data import Erasure

if TYPE_CHECKING:
    from server.node import Node


class RouterFeature(Feature):
    name = "router"

    def __init__(self, node: Node, *, telegram: TelegramOutbox) -> None:
        super().__init__(node)
        s = node.settings
        self.clock: Clock = SystemClock()
        self.store = RouterStore(node.storage)
        self.in_app = InAppChannel(node.fanout)
        self.email = EmailChannel(s)
        self.channels: dict[Channel, OutboundChannel] = {
            Channel.PUSH: PushChannel(s, self.store.devices),
            Channel.EMAIL: self.email,
            Channel.SMS: SmsChannel(s),
            Channel.TELEGRAM: TelegramChannel(telegram),
        }
        self.dispatcher = Dispatcher(
            self.store,
            self.channels,
            self.now,
            retry=RetryPolicy(max_attempts=s.router_max_attempts, base=s.router_retry_base_s),
            poll_interval=s.scheduler_poll_interval,
        )
        self.router = Router(
            self.store,
            self.in_app,
            self.channels,
            self.dispatcher,
            self.now,
            RouterOptions(
                aggregate_window=timedelta(seconds=s.router_aggregate_window_s),
                email_window=timedelta(seconds=s.router_email_window_s),
                email_gather=timedelta(seconds=s.router_email_gather_s),
            ),
        )
        self.inbox = Inbox(self.store, self.in_app, self.now, s.router_max_devices)
        self.digests = Digests(self.store.prefs, self.store.digests, self.email, self.now)
        self.audiences = Audiences(self.store.audiences)
        #: for other features (activity's match notifications): `Router.notify`
        self.notify = self.router.notify
        node.bus.subscribe("router", self.router.handle, many=self.router.handle_many)
        node.scheduler.register(DIGEST_JOB, self.digests.run)

    def now(self) -> datetime:
        return self.clock.now()

    # -- for other features (activity's match notifications) --------------------------------

    async def kind_enabled(self, user_id: str, kind: str) -> bool:
        """Whether `user_id` wants notifications of `kind` (their preferences)."""
        prefs = await self.inbox.preferences(user_id)
        return bool(prefs["types"].get(kind, False))

    async def set_kind_enabled(self, user_id: str, kind: str, on: bool) -> None:
        await self.inbox.set_preferences(user_id, PreferencesUpdate(types={kind: on}))

    def routes(self, app: web.Application) -> None:
        from routing.http import add_routes

        add_routes(app, self.inbox, self.audiences)

    async def start(self) -> None:
        for channel in self.channels.values():
            await channel.start()
        # send only where consumers run (not in `ours publish` and other one-shot commands)
        if self.node.consuming:
            self.dispatcher.start()

    async def export_user(self, user_id: str) -> dict[str, Any]:
        """Notifications, preferences, devices (no tokens), the delivery log."""
        return await self.store.export_user(user_id)

    async def erase_user(self, erasure: Erasure) -> None:
        await self.store.erase_user(erasure)

    async def stop(self) -> None:
        await self.dispatcher.close()
        for channel in self.channels.values():
            await channel.close()
