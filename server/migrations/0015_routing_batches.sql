-- Notification routing in batches (routing/): the compact delivery log of what the router
-- skipped at planning time, and the platform's audiences.

-- Skipped at planning time (no address, not configured, switched off, over the cap, ...):
-- one row per event and set of (channel -> reason, detail) shared by many recipients, instead
-- of one `deliveries` row per recipient and channel. Immutable once written; the log routes
-- and the export read them back as one skipped delivery per recipient and channel.
CREATE TABLE delivery_skips (
    id          bigserial   PRIMARY KEY,
    event_id    uuid        NOT NULL,
    priority    text        NOT NULL,
    skips       jsonb       NOT NULL,  -- {"email": ["no_address", "no email address"], ...}
    user_ids    text[]      NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX delivery_skips_event ON delivery_skips (event_id);
CREATE INDEX delivery_skips_users ON delivery_skips USING gin (user_ids);

-- An audience: a recipient list the platform registers (e.g. a creator's followers) and names
-- in an event (`audience` of POST /v1/events) instead of listing the recipients.
CREATE TABLE audiences (
    id          text        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE audience_members (
    audience_id text        NOT NULL REFERENCES audiences (id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    PRIMARY KEY (audience_id, user_id)
);
CREATE INDEX audience_members_user ON audience_members (user_id);

-- The audience an event names (opaque to the core; the router expands it).
ALTER TABLE events ADD COLUMN audience text;
