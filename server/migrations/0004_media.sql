-- Media control plane: LiveKit audio rooms (room + stage state) and Cloudflare Stream media.

-- One audio room. `version` grows with every stage change; every change holds this row's
-- lock (SELECT ... FOR UPDATE), so two processes never lose each other's updates.
CREATE TABLE audio_rooms (
    id            text        PRIMARY KEY,
    host_id       text        NOT NULL,
    title         text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('scheduled', 'live', 'ended')),
    scheduled_for timestamptz,
    version       bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    ended_at      timestamptz
);
CREATE INDEX audio_rooms_host ON audio_rooms (host_id, created_at DESC);
CREATE INDEX audio_rooms_open ON audio_rooms (state) WHERE state <> 'ended';

-- Who is in a room and their place on the stage.
CREATE TABLE audio_members (
    room_id     text        NOT NULL REFERENCES audio_rooms (id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    role        text        NOT NULL
                CHECK (role IN ('host', 'moderator', 'speaker', 'listener')),
    present     boolean     NOT NULL DEFAULT false,  -- joined, not left (socket or LiveKit)
    hand_seq    bigint,                               -- hand raised: position in the queue
    invited     boolean     NOT NULL DEFAULT false,   -- asked to speak, not yet accepted
    muted       boolean     NOT NULL DEFAULT false,   -- muted by the host or a moderator
    removed     boolean     NOT NULL DEFAULT false,   -- removed: may not rejoin this room
    stage_seq   bigint,                               -- order on the stage
    lk_event_at bigint      NOT NULL DEFAULT 0,       -- created_at of the last LiveKit webhook
    joined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX audio_members_queue ON audio_members (room_id, hand_seq) WHERE hand_seq IS NOT NULL;
CREATE SEQUENCE audio_queue_seq;

-- Cloudflare Stream videos created through this server (or first seen in a webhook).
CREATE TABLE media (
    uid             text        PRIMARY KEY,
    creator_id      text,
    kind            text        NOT NULL CHECK (kind IN ('video', 'short')),
    title           text,
    zone            text,
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'ready', 'error')),
    require_signed  boolean     NOT NULL DEFAULT false,
    upload_protocol text        NOT NULL DEFAULT 'basic' CHECK (upload_protocol IN ('basic', 'tus', 'webhook')),
    hls_url         text,
    dash_url        text,
    thumbnail_url   text,
    duration_s      double precision,
    error_reason    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    ready_at        timestamptz
);
CREATE INDEX media_creator ON media (creator_id, created_at DESC);

-- Cloudflare Stream live inputs; the stream key is sealed with the master key (shown once).
CREATE TABLE live_inputs (
    uid            text        PRIMARY KEY,
    creator_id     text        NOT NULL,
    title          text,
    zone           text,
    rtmps_url      text        NOT NULL,
    stream_key     bytea       NOT NULL,
    state          text        NOT NULL DEFAULT 'idle' CHECK (state IN ('idle', 'live')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz
);
CREATE INDEX live_inputs_creator ON live_inputs (creator_id, created_at DESC);

-- Provider webhooks already handled: a replay of the same delivery does nothing.
CREATE TABLE webhook_receipts (
    provider    text        NOT NULL,
    receipt_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, receipt_id)
);
CREATE INDEX webhook_receipts_age ON webhook_receipts (received_at);
