-- Cluster membership (server/nodes.py): one heartbeat row per running node (`ours serve`,
-- `ours worker`, `ours bot`), rewritten every OURS_NODE_HEARTBEAT_S; `stopped_at` is set by a clean stop;
-- a row older than three heartbeats is a node that died. Rows unseen for an hour are pruned.
CREATE TABLE nodes (
    id          text        PRIMARY KEY,
    role        text        NOT NULL CHECK (role IN ('serve', 'worker', 'bot')),
    host        text        NOT NULL,
    pid         int         NOT NULL,
    version     text        NOT NULL,
    url         text,
    started_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL,
    stopped_at  timestamptz,
    stats       jsonb       NOT NULL DEFAULT '{}'
);
