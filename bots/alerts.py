"""Real-time alerts to admins who turned them on (`/alerts on`). Rules are data: an event rule
matches a bus event by type and an optional `field > gt` test; an error-rate rule watches the
node's 5xx / internal share. The defaults (seed 004): a tip over 10 HRS, any purchase, an
error spike. `OURS_TELEGRAM_ALERT_RULES` (a JSON list of rules) replaces them.

Each alert goes to each chat at most once (`bot_alerts_sent`, keyed by event id and rule), so
the bus may redeliver freely; a send that failed is released and the event retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bots.health import Health
from bots.reports import fmt_hours, fmt_money
from bots.sender import Priority, TelegramSender
from bots.store import BotStore
from server.events import EVENT_TYPES, Event

log = logging.getLogger("ours.bot.alerts")

Name = Annotated[str, Field(pattern=r"^[a-z0-9_.-]{1,40}$")]
Text = Annotated[str, Field(min_length=1, max_length=1000)]


class EventRule(BaseModel):
    """Alert on a bus event of `event_type` (when `field` > `gt`, if given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["event"] = "event"
    name: Name
    event_type: str
    field: Annotated[str, Field(max_length=40)] | None = None
    gt: Decimal | None = None
    text: Text

    def matches(self, event: Event) -> bool:
        if event.type != self.event_type:
            return False
        if self.field is None or self.gt is None:
            return True
        try:
            return Decimal(str(event.payload.get(self.field))) > self.gt
        except InvalidOperation:
            return False

    def render(self, event: Event) -> str:
        return self.text.format_map(_Fields(event_fields(event)))


class ErrorRateRule(BaseModel):
    """Alert when a node's errors in `window_s` reach `min_errors` and `min_ratio`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["error_rate"]
    name: Name
    window_s: int = Field(60, ge=10, le=3600)
    min_errors: int = Field(5, ge=1)
    min_ratio: float = Field(0.05, gt=0, le=1)
    cooldown_s: int = Field(600, ge=10)
    text: Text

    def render(self, errors: int, requests: int) -> str:
        ratio = errors / requests if requests else 0.0
        fields = {
            "errors": str(errors),
            "requests": str(requests),
            "ratio": f"{ratio:.1%}",
            "window_s": str(self.window_s),
        }
        return self.text.format_map(_Fields(fields))


Rule = Annotated[EventRule | ErrorRateRule, Field(discriminator="kind")]
RULES = TypeAdapter(list[Rule])

DEFAULT_RULES: list[EventRule | ErrorRateRule] = [
    EventRule(
        name="big_tip",
        event_type="hours.tipped",
        field="amount",
        gt=Decimal(10),
        text="💸 Tip over 10 HRS: {amount_hours} HRS from @{from_user} to @{to_user}",
    ),
    EventRule(
        name="purchase",
        event_type="storefront.purchased",
        text="🛒 Purchase: {money} — @{buyer_id} bought {product_id} from @{seller_id}"
        " (order {order_id})",
    ),
    ErrorRateRule(
        kind="error_rate",
        name="error_spike",
        window_s=60,
        min_errors=5,
        min_ratio=0.05,
        cooldown_s=600,
        text="🚨 Error spike: {errors} of {requests} requests failed ({ratio})"
        " in the last {window_s} s",
    ),
]


def load_rules(raw: str | None) -> list[EventRule | ErrorRateRule]:
    """The rules from JSON (OURS_TELEGRAM_ALERT_RULES), or the defaults; ValueError if bad."""
    if not raw:
        return list(DEFAULT_RULES)
    try:
        rules = RULES.validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"OURS_TELEGRAM_ALERT_RULES: {exc.errors()[0]['msg']}") from None
    for rule in rules:
        if isinstance(rule, EventRule) and rule.event_type not in EVENT_TYPES:
            raise ValueError(f"OURS_TELEGRAM_ALERT_RULES: unknown event type {rule.event_type!r}")
    if len({r.name for r in rules}) != len(rules):
        raise ValueError("OURS_TELEGRAM_ALERT_RULES: rule names must be unique")
    return rules


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def event_fields(event: Event) -> dict[str, str]:
    fields = {k: str(v) for k, v in event.payload.items() if not isinstance(v, list | dict)}
    fields["type"] = event.type
    fields["actor"] = event.actor or "?"
    if "amount" in event.payload:
        fields["amount_hours"] = fmt_hours(Decimal(str(event.payload["amount"])))
    if "amount_cents" in event.payload:
        fields["money"] = fmt_money(
            int(event.payload["amount_cents"]), str(event.payload.get("currency", "USD"))
        )
    return fields


class Alerts:
    def __init__(
        self,
        store: BotStore,
        sender: TelegramSender,
        rules: list[EventRule | ErrorRateRule],
        node_id: str,
    ) -> None:
        self.store = store
        self.sender = sender
        self.event_rules = [r for r in rules if isinstance(r, EventRule)]
        self.rate_rules = [r for r in rules if isinstance(r, ErrorRateRule)]
        self.node_id = node_id
        self._fired: dict[str, float] = {}  # rate rule -> monotonic time it last fired

    async def on_event(self, event: Event) -> None:
        """Bus consumer `bot-alerts`."""
        matched = [r for r in self.event_rules if r.matches(event)]
        if not matched:
            return
        chats = await self.store.alert_chats()
        failed = 0
        for rule in matched:
            failed += await self.deliver(
                f"{event.id}:{rule.name}", rule.name, rule.render(event), chats
            )
        if failed:
            raise RuntimeError(f"{failed} alert(s) not delivered; the bus will retry")

    async def on_health(self, health: Health) -> None:
        """Called on every health beat: fire error-rate rules (once per cooldown per node)."""
        for rule in self.rate_rules:
            requests, errors = health.window(rule.window_s)
            if errors < rule.min_errors or not requests or errors / requests < rule.min_ratio:
                continue
            now = time.monotonic()
            if now - self._fired.get(rule.name, -1e18) < rule.cooldown_s:
                continue
            self._fired[rule.name] = now
            key = f"{rule.name}:{self.node_id}:{int(time.time() // rule.cooldown_s)}"
            chats = await self.store.alert_chats()
            await self.deliver(key, rule.name, rule.render(errors, requests), chats)

    async def deliver(self, key: str, rule: str, text: str, chats: list[int]) -> int:
        """Send `text` to each chat not yet alerted for `key`; return how many failed."""
        claimed = [c for c in chats if await self.store.claim_alert(key, c, rule)]
        if not claimed:
            return 0
        results = await asyncio.gather(
            *(self.sender.send(c, text, priority=Priority.ALERT) for c in claimed)
        )
        failed = 0
        for chat, result in zip(claimed, results, strict=True):
            if result.status == "failed":
                failed += 1
                await self.store.release_alert(key, chat)
        log.info("alert sent", extra={"rule": rule, "chats": len(claimed), "failed": failed})
        return failed


def rules_summary(rules: list[EventRule | ErrorRateRule]) -> list[str]:
    """One line per rule for /help and /alerts."""
    out = []
    for r in rules:
        if isinstance(r, EventRule):
            cond = f" with {r.field} > {r.gt}" if r.field and r.gt is not None else ""
            out.append(f"{r.event_type}{cond}")
        else:
            out.append(
                f"error rate ≥ {r.min_ratio:.0%} (≥ {r.min_errors} errors in {r.window_s} s)"
            )
    return out
