-- Durable scheduled jobs: one row per job; `key` makes scheduling idempotent.
CREATE TABLE jobs (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL,
    key         text        NOT NULL UNIQUE,
    run_at      timestamptz NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}',
    state       text        NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    attempts    int         NOT NULL DEFAULT 0,
    last_error  text,
    locked_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('pending', 'running');

-- Append-only audit log of admin and moderator actions.
CREATE TABLE audit_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_id    text        NOT NULL,
    actor_role  text        NOT NULL,
    action      text        NOT NULL,
    target      text,
    reason      text,
    details     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_actor ON audit_log (actor_id, at DESC);
CREATE INDEX audit_target ON audit_log (target, at DESC);
CREATE INDEX audit_action ON audit_log (action, at DESC);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
