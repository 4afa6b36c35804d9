-- Notification router (routing/): preferences, push devices, the inbox, the delivery log.

-- One document per user (routing.preferences.Preferences); absent row = the defaults.
CREATE TABLE notification_prefs (
    user_id     text        PRIMARY KEY,
    prefs       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- FCM registration tokens; a token belongs to one user (re-registering moves it).
CREATE TABLE push_devices (
    token        text        PRIMARY KEY,
    user_id      text        NOT NULL,
    platform     text        NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_devices_user ON push_devices (user_id, last_seen_at DESC);

-- The inbox: one row per (aggregated) notification. Hidden rows were filtered (type switched
-- off, daily cap) and exist only so the delivery log can say why nothing arrived.
CREATE TABLE notifications (
    id          bigserial   PRIMARY KEY,
    user_id     text        NOT NULL,
    kind        text        NOT NULL,
    priority    text        NOT NULL,
    group_key   text,
    title       text        NOT NULL,
    body        text        NOT NULL,
    data        jsonb       NOT NULL DEFAULT '{}',
    actors      text[]      NOT NULL DEFAULT '{}',
    actor_count int         NOT NULL DEFAULT 0,
    event_count int         NOT NULL DEFAULT 1,
    hidden      boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    read_at     timestamptz
);
CREATE INDEX notifications_inbox ON notifications (user_id, id DESC) WHERE NOT hidden;
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL AND NOT hidden;
CREATE INDEX notifications_group ON notifications (user_id, group_key, updated_at DESC)
    WHERE group_key IS NOT NULL AND read_at IS NULL AND NOT hidden;

-- Which event reached which user (idempotency of the router on event id) and into which
-- notification it went; also what the daily caps count.
CREATE TABLE notification_events (
    event_id        uuid        NOT NULL,
    user_id         text        NOT NULL,
    kind            text        NOT NULL,
    notification_id bigint      REFERENCES notifications (id) ON DELETE CASCADE,
    counted         boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX notification_events_cap ON notification_events (user_id, kind, created_at)
    WHERE counted;
CREATE INDEX notification_events_notification ON notification_events (notification_id);

-- The delivery log and outbox: one row per (event, recipient, channel). Queued rows are sent by
-- the channel's dispatcher when due; rows sharing a batch_key go out as one message (a quiet-
-- hours summary, the hourly email).
CREATE TABLE deliveries (
    id              bigserial   PRIMARY KEY,
    event_id        uuid        NOT NULL,
    user_id         text        NOT NULL,
    channel         text        NOT NULL
                    CHECK (channel IN ('in_app', 'push', 'email', 'sms', 'telegram')),
    notification_id bigint      REFERENCES notifications (id) ON DELETE CASCADE,
    priority        text        NOT NULL,
    state           text        NOT NULL
                    CHECK (state IN ('queued', 'sent', 'delivered', 'failed', 'skipped')),
    reason          text,
    detail          text,
    batch_key       text,
    not_before      timestamptz,
    attempts        int         NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    provider_id     text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    UNIQUE (event_id, user_id, channel)
);
CREATE INDEX deliveries_due ON deliveries (channel, not_before) WHERE state = 'queued';
CREATE INDEX deliveries_batch ON deliveries (user_id, channel, batch_key) WHERE state = 'queued';
CREATE INDEX deliveries_notification ON deliveries (notification_id);
CREATE INDEX deliveries_last_email ON deliveries (user_id, sent_at DESC)
    WHERE channel = 'email' AND state = 'sent';

-- When each user's last digest went out (so the next one holds only what is new).
CREATE TABLE digest_runs (
    user_id      text        PRIMARY KEY,
    mode         text        NOT NULL,
    last_sent_at timestamptz NOT NULL
);
