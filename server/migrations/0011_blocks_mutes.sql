-- Blocks between users and muted conversations (messaging/blocks_store.py).
-- A block is one row per direction: either direction counts as a block between the two users.
CREATE TABLE user_blocks (
    blocker_id  text        NOT NULL,
    blocked_id  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
CREATE INDEX user_blocks_blocked ON user_blocks (blocked_id);

-- A member's mute of a conversation: no push/email/SMS/Telegram for its messages while
-- `until` is null (until unmuted) or ahead; leaving the conversation ends it (cascade).
CREATE TABLE conversation_mutes (
    conversation_id uuid    NOT NULL,
    user_id     text        NOT NULL,
    until       timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id),
    FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversation_members (conversation_id, user_id) ON DELETE CASCADE
);
CREATE INDEX conversation_mutes_user ON conversation_mutes (user_id);
