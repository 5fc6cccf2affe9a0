"""Create the event store: the append-only log, message bodies, conversation summaries, keys.

Revision ID: 0001
Revises:
"""

from service.store.migrate import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
CREATE SEQUENCE events_seq AS bigint;

CREATE TABLE api_keys (
    key_hash    bytea PRIMARY KEY,                  -- SHA-256 of the key; the key is never stored
    tenant      text NOT NULL CHECK (tenant <> ''),
    name        text NOT NULL CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE events (
    seq              bigint PRIMARY KEY,
    tenant           text NOT NULL,
    conversation_id  uuid NOT NULL,
    family_id        uuid NOT NULL,
    type             text NOT NULL,
    message_id       uuid,
    parent_id        uuid,
    role             text,
    depth            integer,
    body_sha256      bytea,
    payload          json NOT NULL,                 -- json, not jsonb: the hashed text is kept as is
    actor            text NOT NULL,
    request_id       text,
    created_at       timestamptz NOT NULL,
    hash             bytea NOT NULL,                -- SHA-256(previous event's hash || canonical encoding)
    CONSTRAINT events_type_known CHECK (type IN (
        'conversation_created', 'conversation_forked', 'message_appended', 'head_moved',
        'message_redacted', 'turn_failed'
    )),
    CONSTRAINT events_message_columns CHECK (
        (type = 'message_appended') = (message_id IS NOT NULL AND role IS NOT NULL
                                       AND depth IS NOT NULL AND body_sha256 IS NOT NULL)
    ),
    CONSTRAINT events_role_known CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    CONSTRAINT events_root_has_depth_zero CHECK ((parent_id IS NULL) = (depth IS NULL OR depth = 0)),
    CONSTRAINT events_not_own_parent CHECK (parent_id <> message_id),
    CONSTRAINT events_digest_length CHECK (octet_length(body_sha256) = 32 AND octet_length(hash) = 32)
);

-- The walk from a message to the root: one index probe per level.
CREATE UNIQUE INDEX events_message ON events (family_id, message_id);
-- One root per family.
CREATE UNIQUE INDEX events_one_root ON events (family_id) WHERE type = 'message_appended' AND parent_id IS NULL;
-- Children and siblings of a message, in the order they were written.
CREATE INDEX events_children ON events (conversation_id, parent_id, seq) WHERE type = 'message_appended';
-- A conversation's events in order: tree listings, replay, audit, per-conversation feed.
CREATE INDEX events_conversation ON events (conversation_id, seq);
-- A tenant's feed in order.
CREATE INDEX events_tenant ON events (tenant, seq);

CREATE TABLE bodies (
    family_id   uuid NOT NULL,
    message_id  uuid NOT NULL,
    content     text NOT NULL,
    PRIMARY KEY (family_id, message_id)
);

CREATE TABLE conversations (
    tenant           text NOT NULL,
    conversation_id  uuid NOT NULL,
    family_id        uuid NOT NULL,
    title            text,
    metadata         json NOT NULL,
    head_id          uuid,
    message_count    integer NOT NULL CHECK (message_count >= 0),
    leaf_count       integer NOT NULL CHECK (leaf_count >= 0),
    created_seq      bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    last_seq         bigint NOT NULL,
    last_hash        bytea NOT NULL,
    PRIMARY KEY (tenant, conversation_id)
);

-- Newest first, keyset-paginated by the creation event's sequence number.
CREATE INDEX conversations_listing ON conversations (tenant, created_seq);

-- A request that carried an Idempotency-Key, stored in the transaction that carried it out: a
-- retry finds the original response, or waits on the row lock while the original is in flight.
CREATE TABLE idempotency_keys (
    tenant       text NOT NULL,
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,                    -- SHA-256 of method, path and body
    status       smallint,
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key)
);

-- Immutability: the log and the message texts are never changed or removed.
CREATE FUNCTION reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
CREATE TRIGGER bodies_immutable BEFORE UPDATE OR DELETE ON bodies
    FOR EACH ROW EXECUTE FUNCTION reject_change();
CREATE TRIGGER bodies_no_truncate BEFORE TRUNCATE ON bodies
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();

-- Tree integrity: a message's parent exists, lives in the same conversation and is one level up.
-- Rows are never changed, and a parent must exist before its child, so a cycle cannot form.
CREATE FUNCTION check_message_parent() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parent_conversation uuid;
    parent_depth integer;
BEGIN
    IF NEW.type <> 'message_appended' OR NEW.parent_id IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT e.conversation_id, e.depth INTO parent_conversation, parent_depth
      FROM events e
     WHERE e.family_id = NEW.family_id AND e.message_id = NEW.parent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent message % does not exist', NEW.parent_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF parent_conversation <> NEW.conversation_id THEN
        RAISE EXCEPTION 'parent message % is not in conversation %', NEW.parent_id, NEW.conversation_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.depth <> parent_depth + 1 THEN
        RAISE EXCEPTION 'depth % does not follow parent depth %', NEW.depth, parent_depth
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_parent_exists BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION check_message_parent();

-- The path from a message to the root, root first, with each message's place among its siblings
-- in `conversation`. Planner settings are fixed for this function so the walk stays a chain of
-- index probes (O(depth)) even on a table that was never analyzed, whose statistics would
-- otherwise invite a hash join against the whole table at every level.
CREATE FUNCTION message_path(p_family uuid, p_conversation uuid, p_message uuid)
RETURNS TABLE (
    seq bigint, conversation_id uuid, message_id uuid, parent_id uuid, role text, depth integer,
    payload json, actor text, request_id text, created_at timestamptz, content text,
    sibling_count bigint, sibling_position bigint
)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    WITH RECURSIVE path AS (
        SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth,
               e.payload, e.actor, e.request_id, e.created_at
          FROM events e
         WHERE e.family_id = p_family AND e.message_id = p_message
        UNION ALL
        SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth,
               e.payload, e.actor, e.request_id, e.created_at
          FROM path
          JOIN events e ON e.family_id = p_family AND e.message_id = path.parent_id
    )
    SELECT p.seq, p.conversation_id, p.message_id, p.parent_id, p.role, p.depth,
           p.payload, p.actor, p.request_id, p.created_at, b.content,
           CASE WHEN p.parent_id IS NULL THEN 1 ELSE
               (SELECT count(*) FROM events s
                 WHERE s.conversation_id = p_conversation AND s.parent_id = p.parent_id
                   AND s.type = 'message_appended') END,
           CASE WHEN p.parent_id IS NULL THEN 1 ELSE
               (SELECT count(*) FROM events s
                 WHERE s.conversation_id = p_conversation AND s.parent_id = p.parent_id
                   AND s.type = 'message_appended' AND s.seq <= p.seq) END
      FROM path p
      LEFT JOIN bodies b ON b.family_id = p_family AND b.message_id = p.message_id
     ORDER BY p.depth
$$;

-- The first step of every write to a conversation, in this order: a shared lock on the tenant's
-- feed (a feed reader takes it exclusively to learn which sequence numbers are final), then the
-- conversation's row, then `p_count` sequence numbers. Taking the tenant lock first everywhere
-- keeps lock order fixed, so writers and readers cannot deadlock.
CREATE FUNCTION begin_write(p_tenant text, p_conversation uuid, p_count integer)
RETURNS TABLE (
    family_id uuid, head_id uuid, message_count integer, leaf_count integer,
    last_seq bigint, last_hash bytea, now timestamptz, seqs bigint[]
)
LANGUAGE plpgsql AS $$
DECLARE
    c conversations%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_tenant, 0));
    SELECT * INTO c FROM conversations
     WHERE conversations.tenant = p_tenant AND conversations.conversation_id = p_conversation
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Numbers are drawn only now, with the row locked: a conversation's events are numbered in
    -- the order they commit.
    RETURN QUERY SELECT c.family_id, c.head_id, c.message_count, c.leaf_count, c.last_seq, c.last_hash,
                        now(), ARRAY(SELECT nextval('events_seq') FROM generate_series(1, p_count));
END;
$$;

-- The same first step for a conversation that does not exist yet: the tenant's feed lock, then a
-- lock on the new conversation's id, so that two requests creating the same id run one after the
-- other and the second finds the first.
CREATE FUNCTION begin_create(p_tenant text, p_conversation uuid, p_count integer)
RETURNS TABLE (now timestamptz, seqs bigint[])
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_tenant, 0));
    PERFORM pg_advisory_xact_lock(hashtextextended(p_tenant || '/' || p_conversation::text, 0));
    RETURN QUERY SELECT now(), ARRAY(SELECT nextval('events_seq') FROM generate_series(1, p_count));
END;
$$;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
