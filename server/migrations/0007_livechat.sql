-- Live chat on /live (issue 6): the lives seen on the bus, chat messages, restrictions.

-- One live (video or audio) as `live.started` / `live.ended` announced it. The host may
-- moderate its chat; chat is open while state = 'live'. `event_ts` is the time of the last
-- live.* event applied, so a late, older event never undoes a newer one.
CREATE TABLE lives (
    id          text        PRIMARY KEY,
    host_id     text,
    state       text        NOT NULL CHECK (state IN ('live', 'ended')),
    slow_mode_s integer     NOT NULL DEFAULT 0 CHECK (slow_mode_s BETWEEN 0 AND 3600),
    started_at  timestamptz,
    ended_at    timestamptz,
    event_ts    timestamptz NOT NULL
);

-- Chat messages. `seq` orders a live's chat (history is the last N by seq); a deleted message
-- keeps its row as a tombstone (body NULL) so a client's retry still finds its first send.
-- Trimmed by the `livechat.trim` job: at most N per live, none older than the retention.
CREATE TABLE live_chat_messages (
    id            uuid        PRIMARY KEY,
    seq           bigint      GENERATED ALWAYS AS IDENTITY,
    live_id       text        NOT NULL,
    user_id       text        NOT NULL,
    client_msg_id text        NOT NULL,
    body          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    deleted_by    text,
    UNIQUE (live_id, user_id, client_msg_id)
);
CREATE INDEX live_chat_messages_recent ON live_chat_messages (live_id, seq DESC);
CREATE INDEX live_chat_messages_age ON live_chat_messages (created_at);

-- Who may not chat in a live: banned (until unbanned) or timed out (until `until`).
CREATE TABLE live_chat_restrictions (
    live_id    text        NOT NULL,
    user_id    text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('ban', 'timeout')),
    until      timestamptz,
    by_user    text        NOT NULL,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (live_id, user_id),
    CHECK ((kind = 'ban') = (until IS NULL))
);
CREATE INDEX live_chat_restrictions_until ON live_chat_restrictions (until)
    WHERE kind = 'timeout';
