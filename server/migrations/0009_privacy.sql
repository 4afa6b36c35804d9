-- A user's erasure (issue 9, privacy/): helpers that replace a user id by its pseudonym,
-- and the one narrow way the append-only audit log may change.
--
-- The audit log keeps what moderators and admins did (accountability outlives an account), but
-- not who the erased user was: their id becomes a pseudonym ("erased:" + a keyed hash of the id,
-- privacy/erase.py). Only `audit_log_erase_subject(uid, pseudonym)` may rewrite rows, and
-- the trigger accepts a rewrite only when every column equals the id -> pseudonym substitution
-- of its old value (id, time, action and role unchanged). Deleting rows is refused too.

-- Two kinds of columns. An identifier column (actor, user_id, a room name) names the user when
-- its value is the id or "user:<id>": `privacy_erase_ident`. Prose (a moderator's reason, a
-- notification's text) mentions the id as a whole word (ids are letters, digits, _ . -):
-- `privacy_erase_text`. JSON documents: strings under keys that name people (user_id, actor,
-- recipients, from_user, host_id, ...) are identifiers; any other string only when it is
-- "user:<id>" exactly, so an amount or a content id that happens to equal a numeric user id
-- stays as it is.
CREATE FUNCTION privacy_erase_ident(t text, uid text, ps text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN t = uid THEN ps
        WHEN t = 'user:' || uid THEN 'user:' || ps
        ELSE t
    END
$$;

CREATE FUNCTION privacy_erase_text(t text, uid text, ps text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN t IS NULL OR uid = '' OR position(uid IN t) = 0 THEN t
        ELSE regexp_replace(
            t,
            '(^|[^A-Za-z0-9_.-])' || regexp_replace(uid, '([^A-Za-z0-9])', '\\\1', 'g')
                || '(?![A-Za-z0-9_.-])',
            '\1' || ps,
            'g')
    END
$$;

CREATE FUNCTION privacy_erase_idents(a text[], uid text, ps text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL THEN NULL ELSE ARRAY(
        SELECT privacy_erase_ident(x, uid, ps) FROM unnest(a) WITH ORDINALITY AS u(x, n)
        ORDER BY n) END
$$;

-- Does a JSON key name a person (its string values are user ids)?
CREATE FUNCTION privacy_person_key(k text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT k ~ ('^(actor|actors|by|user|users|owner|host|sender|reader|buyer|seller|voter'
        || '|author|follower|followee|subscriber|creator|member|members|recipient|recipients'
        || '|invitee|inviter|target_user)(_id|_ids)?$')
        OR k ~ '_(user|users|user_id|user_ids)$'
$$;

CREATE FUNCTION privacy_erase_json(j jsonb, uid text, ps text, person boolean DEFAULT false)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF j IS NULL OR uid = '' OR position(uid IN j::text) = 0 THEN
        RETURN j;
    END IF;
    CASE jsonb_typeof(j)
        WHEN 'string' THEN
            IF person OR j #>> '{}' = 'user:' || uid THEN
                RETURN to_jsonb(privacy_erase_ident(j #>> '{}', uid, ps));
            END IF;
            RETURN j;
        WHEN 'array' THEN
            RETURN (SELECT COALESCE(jsonb_agg(privacy_erase_json(e, uid, ps, person) ORDER BY n),
                                    '[]')
                    FROM jsonb_array_elements(j) WITH ORDINALITY AS a(e, n));
        WHEN 'object' THEN
            RETURN (SELECT COALESCE(jsonb_object_agg(
                        privacy_erase_ident(k, uid, ps),
                        privacy_erase_json(v, uid, ps, privacy_person_key(k))), '{}')
                    FROM jsonb_each(j) AS o(k, v));
        ELSE
            RETURN j;
    END CASE;
END $$;

-- Replaces 0002's function: refuse every UPDATE except the erasure substitution.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    erase text := current_setting('ours.erase_subject', true);
    uid text;
    ps text;
BEGIN
    IF TG_OP <> 'UPDATE' OR erase IS NULL OR erase = '' THEN
        RAISE EXCEPTION 'audit_log is append-only';
    END IF;
    uid := split_part(erase, ' ', 1);
    ps := split_part(erase, ' ', 2);
    IF uid = '' OR ps !~ '^erased:[0-9a-f]{16,64}$'
        OR NEW.id IS DISTINCT FROM OLD.id
        OR NEW.at IS DISTINCT FROM OLD.at
        OR NEW.action IS DISTINCT FROM OLD.action
        OR NEW.actor_role IS DISTINCT FROM OLD.actor_role
        OR NEW.actor_id IS DISTINCT FROM privacy_erase_ident(OLD.actor_id, uid, ps)
        OR NEW.target IS DISTINCT FROM privacy_erase_ident(OLD.target, uid, ps)
        OR NEW.reason IS DISTINCT FROM privacy_erase_text(OLD.reason, uid, ps)
        OR NEW.details IS DISTINCT FROM privacy_erase_json(OLD.details, uid, ps)
    THEN
        RAISE EXCEPTION 'audit_log is append-only (only an erasure may replace a user id)';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- The one path that rewrites audit rows: the id -> pseudonym substitution of one user, in the
-- caller's transaction (the setting is transaction-local and cleared before returning).
-- SECURITY DEFINER: the application role needs EXECUTE on this, not UPDATE on audit_log.
CREATE FUNCTION audit_log_erase_subject(uid text, ps text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    n bigint;
BEGIN
    IF uid IS NULL OR uid !~ '^[A-Za-z0-9_.-]{1,64}$' THEN
        RAISE EXCEPTION 'not a user id';
    END IF;
    PERFORM set_config('ours.erase_subject', uid || ' ' || ps, true);
    UPDATE audit_log SET
        actor_id = privacy_erase_ident(actor_id, uid, ps),
        target = privacy_erase_ident(target, uid, ps),
        reason = privacy_erase_text(reason, uid, ps),
        details = privacy_erase_json(details, uid, ps)
    WHERE actor_id = uid
        OR target IN (uid, 'user:' || uid)
        OR reason IS DISTINCT FROM privacy_erase_text(reason, uid, ps)
        OR details IS DISTINCT FROM privacy_erase_json(details, uid, ps);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('ours.erase_subject', '', true);
    RETURN n;
END $$;

-- A SECURITY DEFINER function resolves names only in the schema it was created in.
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION audit_log_erase_subject(text, text) SET search_path = %I, pg_temp',
        current_schema());
END $$;
