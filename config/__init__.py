"""Settings: one typed object read from ``OURS_*`` environment variables (and an optional .env).

Unset Redis and database URLs select the embedded default: an in-process bus and a real
PostgreSQL started from the ``pgserver`` package inside ``OURS_DATA_DIR``.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger("ours.config")

DEV_SECRETS_FILE = "dev-secrets.env"


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable and what to do."""


class NothingToRun(ConfigError):
    """A process that has no work in this configuration (`ours worker` without Redis, `ours
    bot` without a token). `ours` exits with EX_CONFIG (78), which process managers can be told
    not to restart (systemd: RestartPreventExitStatus=78)."""

    exit_code = 78


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OURS_", env_file=".env", extra="ignore", frozen=False
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("var")

    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["HS256"])
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    master_key: str | None = None

    redis_url: str | None = None
    #: OURS_REDIS_URL names a seed node of a Redis Cluster (the client finds the others)
    redis_cluster: bool = False
    database_url: str | None = None
    db_pool_size: int = Field(10, ge=1, le=200)

    max_payload_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: check every ack, server event and HTTP answer against the documents (tests; costs CPU)
    check_contract: bool = False
    max_rooms_per_socket: int = Field(100, ge=1, le=10_000)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])

    redis_prefix: str = Field("ours", pattern=r"^[A-Za-z0-9_:{}\-]{1,64}$")
    bus_maxlen: int = Field(1_000_000, ge=1000)
    bus_visibility_timeout_ms: int = Field(30_000, ge=100)
    bus_max_deliveries: int = Field(5, ge=1, le=100)
    # backpressure: POST /v1/events answers 503 + Retry-After while this many published events
    # wait for fan-out (sampled every second)
    max_backlog: int = Field(20_000, ge=100, le=10_000_000)
    # backpressure from the sockets: while many websocket connections have a backlog the
    # kernel has not taken, fan-out holds (at most this long per event, then cuts off those
    # still backed up) and POST /v1/events answers 503 + Retry-After at once
    backpressure_wait_s: float = Field(2.0, ge=0, le=60)
    # admission control: POST /v1/events answers 503 + Retry-After while the events fan-out
    # delivers had waited longer than this since their publish
    fanout_max_delay_s: float = Field(0.25, gt=0, le=60)
    run_consumers: bool | None = None  # serve runs the bus consumers unless this is false

    master_key_previous: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # providers: each is reached through one base URL (tests point them at local fakes)
    fcm_project_id: str | None = None
    fcm_credentials_file: Path | None = None  # service-account JSON
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = "https://oauth2.googleapis.com/token"
    resend_api_key: str | None = None
    resend_base_url: str = "https://api.resend.com"
    email_from: str = "OURS <notifications@ours.example>"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    telegram_bot_token: str | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_webhook_secret: str | None = None
    telegram_mode: Literal["polling", "webhook"] = "polling"
    # Telegram bot (bots/): alert rules as a JSON list (default: tip > 10 HRS, purchase,
    # error spike) and the public URL `ours bot` registers in webhook mode
    telegram_alert_rules: str | None = None
    telegram_webhook_url: str | None = None
    livekit_url: str | None = None  # e.g. http://livekit:7880 (RoomService, Twirp)
    livekit_ws_url: str | None = None  # what clients connect to, e.g. wss://livekit.example
    livekit_api_key: str | None = None
    livekit_api_secret: str | None = None
    cloudflare_account_id: str | None = None
    cloudflare_api_token: str | None = None
    cloudflare_base_url: str = "https://api.cloudflare.com/client/v4"
    cloudflare_webhook_secret: str | None = None
    cloudflare_signing_key_id: str | None = None
    cloudflare_signing_key_pem: str | None = None  # base64 PEM (Stream signing keys)
    # media (issue 7): Cloudflare Notifications (live input connected/disconnected) send the
    # destination's secret in `cf-webhook-auth` instead of a Webhook-Signature
    cloudflare_notification_secret: str | None = None
    # message attachments (issue 20): images go to Cloudflare Images (same account and API
    # token); their signed delivery URLs need the account hash and the Images URL signing key
    cloudflare_images_account_hash: str | None = None
    cloudflare_images_signing_key: str | None = None

    recovery_window_s: float = Field(120.0, ge=1, le=3600)
    # presence: a device expires `ttl` after its last refresh/heartbeat (two missed 30 s
    # heartbeats); connected sockets are refreshed every `refresh`; offline waits `grace`
    presence_ttl_s: float = Field(60.0, ge=1, le=3600)
    presence_refresh_s: float = Field(15.0, ge=0.1, le=600)
    presence_grace_s: float = Field(3.0, ge=0, le=60)

    # rate limits (token buckets; seed 003): per user and per IP each minute, connection
    # attempts per IP, and per-event/route overrides as JSON, e.g. {"message:send": 60}
    rate_user_per_min: int = Field(100, ge=1, le=1_000_000)
    rate_ip_per_min: int = Field(200, ge=1, le=1_000_000)
    rate_connect_per_min: int = Field(60, ge=1, le=1_000_000)
    rate_api_key_per_min: int = Field(60_000, ge=1, le=10_000_000)  # platform backend calls
    # provider webhooks (signed): one bucket per webhook route instead of the sender's IP's
    rate_webhook_per_min: int = Field(60_000, ge=1, le=10_000_000)
    rate_limits: dict[str, int] = Field(default_factory=dict)
    trust_forwarded_for: bool = False  # take the client IP from X-Forwarded-For (behind a proxy)

    # notification router (routing/)
    router_email_window_s: float = Field(3600, gt=0)  # at most one email per user per window
    router_email_gather_s: float = Field(900, ge=0)  # a new email batch collects this long
    router_aggregate_window_s: float = Field(3600, ge=0)  # "Ana and 12 others" window
    router_max_attempts: int = Field(5, ge=1, le=50)  # provider attempts before a dead letter
    router_retry_base_s: float = Field(2.0, gt=0)  # first retry delay (doubles, jittered)
    router_max_devices: int = Field(20, ge=1, le=100)  # push tokens kept per user
    # outward channels' pace (routing/channels/): FCM requests in flight at once per process,
    # Resend and Twilio requests started per second (their documented default limits)
    push_concurrency: int = Field(128, ge=1, le=4096)
    resend_rate: float = Field(2.0, gt=0, le=1000)
    twilio_rate: float = Field(1.0, gt=0, le=1000)

    scheduler_poll_interval: float = Field(0.5, gt=0, le=60)
    shutdown_timeout: float = Field(10.0, gt=0, le=120)
    log_level: str = "INFO"
    # auto: readable lines when stderr is a terminal, JSON otherwise (production, CI, files)
    log_format: Literal["auto", "console", "json"] = "auto"
    # every node's heartbeat row (server/nodes.py); a node silent for 3 of them is "gone"
    node_heartbeat_s: float = Field(2.0, ge=0.1, le=300)
    admin_ui_password: str | None = None
    # console (issue 10): what the Socket.IO Admin UI sees; development lists every socket and
    # event at a cost on every emit
    admin_ui_mode: Literal["production", "development"] = "production"

    @field_validator(
        "api_keys", "cors_origins", "jwt_algorithms", "master_key_previous", mode="before"
    )
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, v: list[str]) -> list[str]:
        allowed = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"}
        bad = [a for a in v if a not in allowed]
        if bad:
            raise ValueError(f"unsupported algorithm(s) {bad}; choose from {sorted(allowed)}")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v or None

    @field_validator("database_url")
    @classmethod
    def _pg_scheme(cls, v: str | None) -> str | None:
        if v and not v.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return v or None

    @field_validator("master_key")
    @classmethod
    def _master_key_len(cls, v: str | None) -> str | None:
        if v and len(bytes.fromhex(v)) != 32:
            raise ValueError("must be 64 hex characters (32 bytes)")
        return v

    @model_validator(mode="after")
    def _keys(self) -> Settings:
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise ValueError("OURS_JWT_SECRET must be at least 32 characters (RFC 7518 3.2)")
        if self.jwt_public_key and not any(a[:2] in ("RS", "ES") for a in self.jwt_algorithms):
            self.jwt_algorithms = ["RS256", "ES256"]
        return self

    @model_validator(mode="after")
    def _cluster(self) -> Settings:
        if self.redis_cluster and not self.redis_url:
            raise ValueError("OURS_REDIS_CLUSTER needs OURS_REDIS_URL (a node of the cluster)")
        if self.redis_cluster and ("{" in self.redis_prefix or "}" in self.redis_prefix):
            # a brace in every key would make the prefix every key's hash tag: one slot for all
            raise ValueError(
                "OURS_REDIS_PREFIX must not contain { or } with OURS_REDIS_CLUSTER (the server"
                " places its own hash tags)"
            )
        return self

    @property
    def bus_stream(self) -> str:
        return f"{self.redis_prefix}:events"

    @property
    def sio_channel(self) -> str:
        return f"{self.redis_prefix}:sio"

    @property
    def embedded_db(self) -> bool:
        return self.database_url is None

    @property
    def embedded_bus(self) -> bool:
        return self.redis_url is None


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise ConfigError naming the bad variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            var = f"OURS_{field.upper()}" if field != "settings" else "OURS_* settings"
            lines.append(f"{var}: {err['msg']}")
        raise ConfigError("bad configuration:\n  " + "\n  ".join(lines)) from None
    _fill_dev_secrets(settings)
    return settings


def _fill_dev_secrets(settings: Settings) -> None:
    """With no JWT key, API key or master key set, generate them once into the data dir."""
    if settings.env == "production":
        missing = []
        if not (settings.jwt_secret or settings.jwt_public_key):
            missing.append("OURS_JWT_SECRET or OURS_JWT_PUBLIC_KEY")
        if not settings.api_keys:
            missing.append("OURS_API_KEYS")
        if not settings.master_key:
            missing.append("OURS_MASTER_KEY")
        if missing:
            raise ConfigError(
                "production needs " + ", ".join(missing) + " (set them in the environment)"
            )
        return
    need = {
        "JWT_SECRET": settings.jwt_secret is None and settings.jwt_public_key is None,
        "API_KEYS": not settings.api_keys,
        "MASTER_KEY": settings.master_key is None,
    }
    if not any(need.values()):
        return
    path = settings.data_dir / DEV_SECRETS_FILE
    stored = _read_env_file(path)
    generated = {
        "JWT_SECRET": secrets.token_urlsafe(32),
        "API_KEYS": "dev_" + secrets.token_urlsafe(24),
        "MASTER_KEY": secrets.token_hex(32),
    }
    changed = False
    for name, wanted in need.items():
        if wanted and name not in stored:
            stored[name] = generated[name]
            changed = True
    if changed:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        body = "".join(f"OURS_{k}={v}\n" for k, v in sorted(stored.items()))
        path.write_text("# generated development secrets; never use in production\n" + body)
        path.chmod(0o600)
        log.warning("generated development secrets", extra={"path": str(path.resolve())})
    if need["JWT_SECRET"]:
        settings.jwt_secret = stored["JWT_SECRET"]
    if need["API_KEYS"]:
        settings.api_keys = [stored["API_KEYS"]]
    if need["MASTER_KEY"]:
        settings.master_key = stored["MASTER_KEY"]


def _read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k.removeprefix("OURS_")] = v
    return out
