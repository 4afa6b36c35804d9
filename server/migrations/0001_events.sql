-- The event log: every published event, once (the id is the idempotency key).
CREATE TABLE events (
    id          uuid PRIMARY KEY,
    type        text        NOT NULL,
    actor       text,
    subjects    text[]      NOT NULL DEFAULT '{}',
    payload     jsonb       NOT NULL,
    ts          timestamptz NOT NULL,
    logged_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_type_ts ON events (type, ts DESC);
CREATE INDEX events_ts ON events (ts DESC);

-- Which consumer finished which event (in-process bus; Redis keeps its own markers).
CREATE TABLE consumer_done (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    done_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Events a consumer gave up on after N attempts (in-process bus; Redis uses a DLQ stream).
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    envelope    jsonb       NOT NULL,
    error       text        NOT NULL,
    attempts    int         NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, event_id)
);
