-- Activity streams (seed 000, issue 9): opt-in per user, entries kept 24 hours, then deleted by
-- the `activity.purge` job. `hash` is the similarity key (activity/similarity.py): what
-- people share is grouped by equality on it, so "how many others today" is one index lookup.

-- A row = the user opted in (opting out deletes the row and every entry of theirs).
CREATE TABLE activity_optins (
    user_id     text        PRIMARY KEY,
    opted_in_at timestamptz NOT NULL
);

CREATE TABLE activity_entries (
    id          uuid        PRIMARY KEY,
    user_id     text        NOT NULL,
    kind        text        NOT NULL,
    text        text        NOT NULL,
    hash        text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX activity_entries_similar ON activity_entries (hash, expires_at);
CREATE INDEX activity_entries_user ON activity_entries (user_id, created_at DESC);
CREATE INDEX activity_entries_expiry ON activity_entries (expires_at);
