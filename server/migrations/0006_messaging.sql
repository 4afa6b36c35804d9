-- Conversations (1:1 and circles of at most 150), members, encrypted messages.
CREATE TABLE conversations (
    id          uuid        PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('direct', 'group')),
    title       text,
    owner_id    text,
    pair_key    text        UNIQUE,           -- direct: "<a>|<b>" sorted, one per pair
    last_seq    bigint      NOT NULL DEFAULT 0,
    wrapped_key bytea       NOT NULL,         -- data key wrapped by the master key
    key_id      text        NOT NULL,         -- which master key wrapped it
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversation_members (
    conversation_id uuid   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    role        text        NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    joined_at   timestamptz NOT NULL DEFAULT now(),
    joined_seq  bigint      NOT NULL DEFAULT 0,  -- history is visible after this seq
    delivered_seq bigint    NOT NULL DEFAULT 0,
    read_seq    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX conversation_members_user ON conversation_members (user_id);

CREATE TABLE messages (
    id          uuid        PRIMARY KEY,
    conversation_id uuid    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq         bigint      NOT NULL,
    sender_id   text        NOT NULL,
    client_msg_id text      NOT NULL,
    kind        text        NOT NULL DEFAULT 'text' CHECK (kind IN ('text', 'tip', 'note')),
    body        bytea,                           -- AES-256-GCM, AAD = conversation|message
    reply_to    uuid,
    tip_amount  numeric(14, 2),
    created_at  timestamptz NOT NULL DEFAULT now(),
    edited_at   timestamptz,
    deleted_at  timestamptz,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, sender_id, client_msg_id)
);

-- Scheduled messages ("love notes"): sent by a scheduler job at deliver_at, once.
CREATE TABLE scheduled_messages (
    id          uuid        PRIMARY KEY,
    conversation_id uuid    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sender_id   text        NOT NULL,
    body        bytea       NOT NULL,
    deliver_at  timestamptz NOT NULL,
    state       text        NOT NULL DEFAULT 'scheduled'
                CHECK (state IN ('scheduled', 'sent', 'cancelled')),
    message_id  uuid,
    seq         bigint,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scheduled_messages_sender ON scheduled_messages (sender_id, deliver_at);

-- HOURS: double-entry ledger. Every transfer writes two entries that sum to zero; user
-- balances never go below zero (CHECK); the system mint may.
CREATE TABLE hours_accounts (
    account     text        PRIMARY KEY,          -- "user:<id>" or "system:mint"
    balance     numeric(14, 2) NOT NULL DEFAULT 0,
    CONSTRAINT hours_no_overdraft CHECK (account LIKE 'system:%' OR balance >= 0)
);
CREATE TABLE hours_transfers (
    id          uuid        PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('tip', 'grant')),
    from_account text       NOT NULL,
    to_account  text        NOT NULL,
    amount      numeric(14, 2) NOT NULL CHECK (amount > 0),
    idem_key    text        NOT NULL UNIQUE,
    conversation_id uuid,
    message_id  uuid,
    actor_id    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ledger_entries (
    id          bigserial   PRIMARY KEY,
    transfer_id uuid        NOT NULL REFERENCES hours_transfers (id),
    account     text        NOT NULL,
    amount      numeric(14, 2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_account ON ledger_entries (account, id);
