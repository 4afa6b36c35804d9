"""RouterFeature ("router"): wires the notification router into the node.

Services: `router` (bus consumer and `notify()` for other features), `inbox` (what users do),
`dispatcher` (sends queued deliveries), `digests` (scheduler job `routing.digest`),
`store` (SQL). `clock` is the one source of "now" for routing decisions; tests replace it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from routing.channels.base import OutboundChannel
from routing.channels.email import EmailChannel
from routing.channels.in_app import InAppChannel
from routing.channels.push import PushChannel
from routing.channels.sms import SmsChannel
from routing.channels.telegram import TelegramChannel
from routing.digests import Digests
from routing.dispatch import Dispatcher, RetryPolicy
from routing.inbox import Inbox
from routing.priorities import Channel
from routing.router import Router, RouterOptions
from routing.store import DIGEST_JOB, RouterStore
from server.feature import Feature

if TYPE_CHECKING:
    from server.node import Node


def utcnow() -> datetime:
    return datetime.now(UTC)


class RouterFeature(Feature):
    name = "router"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        s = node.settings
        self.clock: Callable[[], datetime] = utcnow
        self.store = RouterStore(node.storage)
        self.in_app = InAppChannel(node.fanout)
        self.email = EmailChannel(s)
        self.channels: dict[Channel, OutboundChannel] = {
            Channel.PUSH: PushChannel(s, self.store),
            Channel.EMAIL: self.email,
            Channel.SMS: SmsChannel(s),
            Channel.TELEGRAM: TelegramChannel(node),
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
        self.digests = Digests(self.store, self.email, self.now)
        node.bus.subscribe("router", self.router.handle)
        node.scheduler.register(DIGEST_JOB, self.digests.run)

    def now(self) -> datetime:
        return self.clock()

    def routes(self, app: web.Application) -> None:
        from routing.http import add_routes

        add_routes(app)

    async def start(self) -> None:
        for channel in self.channels.values():
            await channel.start()
        # send only where consumers run (not in `ours publish` and other one-shot commands)
        if getattr(self.node, "consuming", self.node.consumes):
            self.dispatcher.start()

    async def stop(self) -> None:
        await self.dispatcher.close()
        for channel in self.channels.values():
            await channel.close()
