-- Message search (messaging/search.py): a keyed blind index, no plaintext. Each conversation
-- has its own search key (32 random bytes) wrapped by the master key, like its data key; an
-- index row holds a truncated HMAC of one normalised word (or word prefix) of one message, keyed
-- with that conversation's search key, and the message's seq -- nothing readable.
CREATE TABLE conversation_search_keys (
    conversation_id uuid    PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    wrapped_key bytea       NOT NULL,         -- search key wrapped by the master key
    key_id      text        NOT NULL          -- which master key wrapped it
);

CREATE TABLE message_search (
    conversation_id uuid    NOT NULL,
    term        bigint      NOT NULL,         -- first 8 bytes of HMAC-SHA256(search key, term)
    seq         bigint      NOT NULL,         -- the message (messages.conversation_id, seq)
    PRIMARY KEY (conversation_id, term, seq),
    FOREIGN KEY (conversation_id, seq) REFERENCES messages (conversation_id, seq)
        ON DELETE CASCADE
);
-- a message's rows, for dropping them on edit, delete and erasure
CREATE INDEX message_search_message ON message_search (conversation_id, seq);
