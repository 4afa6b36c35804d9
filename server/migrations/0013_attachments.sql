-- Message attachments (messaging/attachments.py): an image, a voice note or a short video in a
-- message, uploaded straight to Cloudflare (Images for images, Stream for voice and video).
-- A row is created with its upload URL, bound to one message when it is sent (message_id),
-- and deleted with the message or its uploader; the object at Cloudflare is deleted by a
-- durable `messaging.attachment_purge` job scheduled in the same transaction.
CREATE TABLE message_attachments (
    id              uuid        PRIMARY KEY,
    conversation_id uuid        NOT NULL,
    uploader_id     text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('image', 'voice', 'video')),
    provider_uid    text        NOT NULL UNIQUE,   -- the Images id or Stream video uid
    content_type    text        NOT NULL,
    size_bytes      bigint      NOT NULL CHECK (size_bytes > 0),
    name            bytea,                          -- sealed with the conversation's key
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'ready', 'error')),
    playback_url    text,                           -- Stream's HLS URL once ready
    message_id      uuid,                           -- set once, by message:send
    position        smallint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    upload_expires_at timestamptz NOT NULL,
    ready_at        timestamptz
);
CREATE INDEX message_attachments_message ON message_attachments (message_id, position)
    WHERE message_id IS NOT NULL;
CREATE INDEX message_attachments_uploader ON message_attachments (uploader_id, created_at);
CREATE INDEX message_attachments_conversation ON message_attachments (conversation_id);
