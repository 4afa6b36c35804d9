-- Reactions on messages (messaging/reactions.py): one row per member, message and emoji (a
-- second reaction with the same emoji is the same row). They go with their message (deleted or
-- tombstoned: messaging/expression_store.py) and with their user (erasure).
CREATE TABLE message_reactions (
    message_id  uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    emoji       text        NOT NULL CHECK (char_length(emoji) BETWEEN 1 AND 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);
CREATE INDEX message_reactions_user ON message_reactions (user_id);
