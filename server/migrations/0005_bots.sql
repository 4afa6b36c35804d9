-- Telegram bot (issue 8): linked chats, one-time link codes, chats that blocked the bot,
-- once-markers for briefs and alerts, the users the bus has seen, node health heartbeats.

-- A platform user linked to one private Telegram chat (and a chat to one user).
CREATE TABLE telegram_links (
    user_id     text        PRIMARY KEY,
    chat_id     bigint      NOT NULL UNIQUE,
    role        text        NOT NULL,              -- the token's role when the link was made
    tz          text        NOT NULL DEFAULT 'UTC', -- IANA zone of the daily brief
    alerts      boolean     NOT NULL DEFAULT false,
    linked_at   timestamptz NOT NULL DEFAULT now()
);

-- One-time link codes (only their SHA-256 is stored); valid 10 minutes.
CREATE TABLE telegram_link_codes (
    code_hash   bytea       PRIMARY KEY,
    user_id     text        NOT NULL,
    role        text        NOT NULL,
    tz          text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX telegram_link_codes_expiry ON telegram_link_codes (expires_at);

-- Chats that answered 403 (blocked the bot); nothing is sent there until they write again.
CREATE TABLE telegram_blocked_chats (
    chat_id     bigint      PRIMARY KEY,
    blocked_at  timestamptz NOT NULL DEFAULT now(),
    reason      text
);

-- The daily brief went out to this user for this local date (sent at most once).
CREATE TABLE bot_briefs_sent (
    user_id     text        NOT NULL,
    local_date  date        NOT NULL,
    chat_id     bigint      NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, local_date)
);

-- An alert (event id, or rule + window for metric rules) went to this chat.
CREATE TABLE bot_alerts_sent (
    alert_key   text        NOT NULL,
    chat_id     bigint      NOT NULL,
    rule        text        NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_key, chat_id)
);
CREATE INDEX bot_alerts_sent_at ON bot_alerts_sent (sent_at);

-- Users seen in events (actor and the payload's user fields): the brief's user counts.
CREATE TABLE bot_users (
    user_id     text        PRIMARY KEY,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL
);
CREATE INDEX bot_users_first_seen ON bot_users (first_seen);
CREATE INDEX bot_users_last_seen ON bot_users (last_seen);

-- Each serving node's health every few seconds, so /status sums all nodes.
CREATE TABLE bot_node_stats (
    node_id     text        PRIMARY KEY,
    connections jsonb       NOT NULL,   -- {namespace: sockets}
    users       int         NOT NULL,   -- distinct users connected to this node
    requests    bigint      NOT NULL,   -- HTTP requests + socket events in the error window
    errors      bigint      NOT NULL,   -- of which 5xx / internal
    updated_at  timestamptz NOT NULL
);
