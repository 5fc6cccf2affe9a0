-- convtree schema: the current, complete DDL in one place.
--
-- The migrations in alembic/ produce exactly this; tests/migration/test_schema.py builds one database from
-- this file and one by migrating, and compares their catalogs.
--
-- Source of truth: `events`, an append-only log guarded by triggers, and `bodies`, the message
-- texts kept apart from their events so that a text can one day be erased while its event, and the
-- event's hash, stay. Everything else (`conversations`) is derived from the log in the same
-- transaction as the events it derives from, and can be rebuilt from it.
--
-- Distribution: every message-level key starts with `family_id`, the id of a conversation's fork
-- family (a conversation and every conversation forked from it, transitively). Appends, the
-- context walk, tree and leaf listings each touch one family only, so on a distributed
-- PostgreSQL (Citus) `events`, `bodies` and `conversations` would be distributed by `family_id`
-- and co-located: every hot query carries `family_id` in its predicates and stays on one shard.
-- Only the tenant-wide feed reads across families.
--
-- Forks: a fork shares its source's `family_id` and references the source's path (root to the
-- message it was forked at, its base) instead of copying it. Every walk that crosses from a fork
-- into its sources (`walk_up`, `message_path`, the parent check) follows parent pointers inside
-- one family, so it stays on the family's shard. Replay (`fold_conversations`) and
-- `convtree rebuild` fold a conversation's own events (by `conversation_id`, within its family,
-- joined and grouped by `family_id` too), so the rebuild's INSERT … SELECT is co-located as well.

-- Allocated by the appender after it has locked the conversation, so that within a conversation
-- sequence order is commit order. Numbers are strictly increasing, not gapless (a refused append
-- leaves a hole).
CREATE SEQUENCE events_seq AS bigint;

CREATE TABLE api_keys (
    key_hash    bytea PRIMARY KEY,                  -- SHA-256 of the key; the key is never stored
    tenant      text NOT NULL CHECK (tenant <> ''),
    name        text NOT NULL CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    -- The key's default for auto-threading on the OpenAI door (a request's Convtree-Auto-Thread
    -- header overrides it).
    auto_thread boolean NOT NULL DEFAULT false
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
    -- A message's run: the unbranched chain it continues (see place_message). Derived by the
    -- database as the row is inserted, like the checks on `depth`, and not part of the hash.
    run_id           uuid,
    parent_run_id    uuid,                          -- the run of the message's parent
    CONSTRAINT events_type_known CHECK (type IN (
        'conversation_created', 'conversation_forked', 'message_appended', 'head_moved',
        'message_redacted', 'turn_failed', 'conversation_updated', 'conversation_deleted', 'message_hidden'
    )),
    CONSTRAINT events_message_columns CHECK (
        (type = 'message_appended') = (message_id IS NOT NULL AND role IS NOT NULL
                                       AND depth IS NOT NULL AND body_sha256 IS NOT NULL)
    ),
    CONSTRAINT events_role_known CHECK (role IN ('system', 'developer', 'user', 'assistant', 'tool')),
    CONSTRAINT events_root_has_depth_zero CHECK ((parent_id IS NULL) = (depth IS NULL OR depth = 0)),
    CONSTRAINT events_not_own_parent CHECK (parent_id <> message_id),
    CONSTRAINT events_digest_length CHECK (octet_length(body_sha256) = 32 AND octet_length(hash) = 32),
    CONSTRAINT events_message_run CHECK ((type = 'message_appended') = (run_id IS NOT NULL)),
    CONSTRAINT events_parent_run CHECK ((parent_id IS NULL) = (parent_run_id IS NULL))
);

-- A message by its id: parent checks, the walk up a fork's base path, and the step from a run to the
-- run above it when reading a context (message_path).
CREATE UNIQUE INDEX events_message ON events (family_id, message_id);
-- One root per family.
CREATE UNIQUE INDEX events_one_root ON events (family_id) WHERE type = 'message_appended' AND parent_id IS NULL;
-- A run's messages by depth: the context reads each run on its path with one range scan. A
-- message's first child in its own conversation is the next message of its run: one probe by
-- (family, the message's run, its depth + 1).
CREATE INDEX events_runs ON events (family_id, run_id, depth) WHERE type = 'message_appended';
-- The first message of every run, by the run and depth it branches from: the branches that leave
-- a stretch of a path, which are its messages' siblings. A message's other children (later ones,
-- and those of forks) are the runs starting under it: one probe by (family, the message's run, its
-- depth + 1). With events_runs, every child of a message is found by two probes, so no index keeps
-- children by their parent's id (revision 0017 dropped events_children, 70 B a message).
CREATE INDEX events_branches ON events (family_id, parent_run_id, depth) WHERE run_id = message_id;
-- A conversation's events in order: tree listings, replay, audit, per-conversation feed.
CREATE INDEX events_conversation ON events (conversation_id, seq);
-- A tenant's feed in order.
CREATE INDEX events_tenant ON events (tenant, seq);
-- A conversation's marks in the projection the Conversations API reads (service/app/items.py): its
-- tombstone, and the messages hidden from it.
CREATE INDEX events_marks ON events (conversation_id, type, seq) WHERE type IN ('conversation_deleted', 'message_hidden');

CREATE TABLE bodies (
    family_id   uuid NOT NULL,
    message_id  uuid NOT NULL,
    content     text NOT NULL,
    PRIMARY KEY (family_id, message_id),
    -- The message's own random key: its event records SHA-256(digest_key || content), so the
    -- digest that stays after an erasure, which deletes this row, confirms no guess of the
    -- content. NULL for a message written before digests were keyed (its event records a plain
    -- SHA-256 of the content).
    digest_key  bytea CONSTRAINT bodies_digest_key_length CHECK (octet_length(digest_key) = 32)
);

-- Large binary parts of message bodies (a base64 image, audio or file of 16 KiB and more:
-- service/domain/stored.py), kept once per tenant by the SHA-256 of their text. A body holds a
-- reference to its part in its place, `{"blob_sha256": "<hex>"}`, and its event's digest covers
-- that reference: the chain proves the part through the digest it names. Never changed; deleted by
-- an erasure when no body of the tenant refers to it any more.
CREATE TABLE blobs (
    tenant  text NOT NULL,
    sha256  bytea NOT NULL CONSTRAINT blobs_digest_length CHECK (octet_length(sha256) = 32),
    data    text NOT NULL,
    PRIMARY KEY (tenant, sha256)
);

-- Which body refers to which blob: a body's references are found without reading it, and an
-- erasure (which deletes the body, and with it these rows) finds the blobs nobody else refers to.
CREATE TABLE body_blobs (
    family_id   uuid NOT NULL,
    message_id  uuid NOT NULL,
    tenant      text NOT NULL,
    sha256      bytea NOT NULL,
    PRIMARY KEY (family_id, message_id, sha256),
    CONSTRAINT body_blobs_body FOREIGN KEY (family_id, message_id) REFERENCES bodies ON DELETE CASCADE,
    CONSTRAINT body_blobs_blob FOREIGN KEY (tenant, sha256) REFERENCES blobs
);
CREATE INDEX body_blobs_by_blob ON body_blobs (tenant, sha256);

-- Auto-threading's index (service/domain/threads.py): each message written since revision 0012,
-- with its path digest (SHA-256 of its parent's path digest and what it says), so that the
-- conversation a resent history continues is found by one index probe per sent message, whatever
-- the number of conversations. Written by the statement that writes the message (the part
-- write_events of queries.sql); a message whose parent has no digest gets none. An erasure deletes
-- the rows of the erased message and of every message under it: a digest would confirm a guess of
-- the erased text. A row names its message by its event's number (the message's family, id and
-- conversation are the event's), and is tenant-wide like the feed: find_thread reads across the
-- tenant's families. Revision 0017 narrowed it from 311 to 163 B a message (figure 4).
CREATE TABLE message_paths (
    seq          bigint PRIMARY KEY,  -- the message's event: the latest of equal paths is continued
    tenant       text NOT NULL,
    path_digest  bytea NOT NULL CONSTRAINT message_paths_digest_length CHECK (octet_length(path_digest) = 32)
);
-- A path's key in message_paths_lookup: the hash of its tenant and the first 8 bytes of its digest,
-- in one bigint (xor), so that an entry is 16 bytes with its seq whatever the tenant's name, 52 with
-- a short name and the whole digest. Two keys of a tenant's paths are equal once in 2^64 pairs, so
-- a probe reads one row; find_thread compares the tenant and the whole digest on the row.
CREATE FUNCTION path_key(p_tenant text, p_digest bytea) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended(p_tenant, 0) # ('x' || encode(substr(p_digest, 1, 8), 'hex'))::bit(64)::bigint
$$;
-- The tenant's paths by key, latest first: find_thread.
CREATE INDEX message_paths_lookup ON message_paths (path_key(tenant, path_digest), seq);

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
    -- A fork: the conversation and message it was forked from. It sees the path root→base (the
    -- message, `base_depth` deep) and then its own messages; nothing of the path is copied.
    forked_from_conversation_id  uuid,
    forked_from_message_id       uuid,
    base_depth                   integer CHECK (base_depth >= 0),
    CONSTRAINT conversations_fork_complete CHECK (
        (forked_from_conversation_id IS NULL) = (forked_from_message_id IS NULL)
        AND (forked_from_message_id IS NULL) = (base_depth IS NULL)
    ),
    PRIMARY KEY (tenant, conversation_id)
);

-- Newest first, keyset-paginated by the creation event's sequence number.
CREATE INDEX conversations_listing ON conversations (tenant, created_seq);

-- A request that carried an Idempotency-Key, stored in the transaction that carried it out: a
-- retry finds the original response, or waits on the row lock while the original is in flight.
-- A turn (turn, regeneration, chat completion) stores no response: its reply is recorded later, by
-- another transaction. Its row names the reply instead (the latest attempt at it), with the
-- conversation it was written in and the message it answers; a retry reads the outcome from the log.
CREATE TABLE idempotency_keys (
    tenant       text NOT NULL,
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,                    -- SHA-256 of method, path and body
    status       smallint,
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    conversation_id  uuid,
    user_message_id  uuid,
    reply_id         uuid,
    PRIMARY KEY (tenant, key)
);

-- Replies being generated right now: one row per turn, inserted in the transaction that records
-- its user message and deleted in the one that records its outcome (the reply, or `turn_failed`).
-- NOT derived from the log and not rebuilt from it: it is the service's record of work in flight,
-- shared by every server process, so that any of them refuses a turn under a reply that does not
-- exist yet (409 parent-still-generating) and none leaves a turn without an outcome. The process
-- generating a reply (`owner`) renews its lease (`expires_at`) while it streams; a row whose lease
-- ran out belongs to a process that died, and any process closes it out with `turn_failed`.
CREATE TABLE pending_replies (
    family_id        uuid NOT NULL,
    reply_id         uuid NOT NULL,                 -- the reply's id, announced when the turn began
    tenant           text NOT NULL,
    conversation_id  uuid NOT NULL,
    user_message_id  uuid NOT NULL,                 -- the message being replied to
    provider         text NOT NULL,
    model            text NOT NULL,
    actor            text NOT NULL,                 -- who asked, recorded on a `turn_failed` closing it out
    request_id       text,
    owner            uuid NOT NULL,                 -- the server process generating it
    started_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    cancel_requested boolean NOT NULL DEFAULT false, -- asked from any process; the owner reads it with each checkpoint and renewal
    PRIMARY KEY (family_id, reply_id)
);

-- Is a reply to this message pending (a turn retried, a turn under the head)?
CREATE INDEX pending_replies_parent ON pending_replies (family_id, user_message_id);
-- A process renewing its leases, and the sweep looking for expired ones.
CREATE INDEX pending_replies_owner ON pending_replies (owner);
CREATE INDEX pending_replies_expiry ON pending_replies (expires_at);

-- A reply's progress while it is generated (service/app/turn/relay.py): the pieces received so
-- far, written by the reply's owner under its lease in batches (checkpoints, numbered from 0), so
-- that a reply whose owner dies is recorded with the text it had streamed (record.close_expired),
-- and a background response's stream can be resumed from any process. NOT derived from the log:
-- deleted with the reply's pending row (or with its response, for a background response, whose
-- stream stays resumable). `pieces` is JSON never read by SQL; chunk 0 also holds `started`, what
-- the reply's record needs beside its text (its generation so far, its form), as JSON.
CREATE TABLE reply_chunks (
    family_id   uuid NOT NULL,
    reply_id    uuid NOT NULL,
    chunk       integer NOT NULL CONSTRAINT reply_chunks_chunk CHECK (chunk >= 0),
    pieces      bytea NOT NULL,
    started     bytea,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (family_id, reply_id, chunk)
);

-- Replay runs (service/app/replay_runs): a recorded path sent again, turn by turn, to another
-- model, its new replies written into a fork or as a branch. NOT derived from the log: it is the
-- service's record of work to do, shared by every server process. A run is claimed by one process
-- at a time (`owner`, under a lease it renews, `lease_until`); one whose lease ran out is claimed
-- again by any process and goes on after its last recorded turn (`turns_done`, advanced in the
-- transaction that writes the turn, so a turn is written once whatever dies when).
CREATE TABLE replay_runs (
    tenant           text NOT NULL,
    run_id           uuid NOT NULL,
    batch_id         uuid,                          -- the batch it was started with, if any
    source_conversation_id  uuid NOT NULL,
    target_conversation_id  uuid NOT NULL,          -- where the new turns are written: a fork, or the source
    anchor_id        uuid,                          -- the message the first new turn goes under (NULL: the root)
    destination      text NOT NULL CONSTRAINT replay_runs_destination CHECK (destination IN ('fork', 'branches')),
    plan             bytea NOT NULL,                -- the target and the turns to replay, as JSON (never read by SQL)
    status           text NOT NULL CONSTRAINT replay_runs_status
                         CHECK (status IN ('queued', 'running', 'finished', 'failed', 'stopped', 'cancelled')),
    turns_total      integer NOT NULL CHECK (turns_total > 0),
    turns_done       integer NOT NULL DEFAULT 0 CHECK (turns_done >= 0 AND turns_done <= turns_total),
    prompt_tokens    bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    error            text,                          -- why it ended early, as a stable snake_case kind
    detail           text,
    actor            text NOT NULL,                 -- who started it: the actor of every event it writes
    request_id       text,
    owner            uuid,                          -- the server process running it
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id)                          -- chosen by convtree (uuid4), never by a caller
);

-- The runs waiting for a process (queued, or running under a lease that may have run out).
CREATE INDEX replay_runs_open ON replay_runs (created_at) WHERE status IN ('queued', 'running');
-- A tenant's runs under a lease (the bound on runs per tenant counts them at each claim).
CREATE INDEX replay_runs_running ON replay_runs (tenant) WHERE status = 'running';
-- A batch's runs.
CREATE INDEX replay_runs_batch ON replay_runs (tenant, batch_id) WHERE batch_id IS NOT NULL;
-- A conversation's runs, newest first: those that replay it, and the one that wrote it.
CREATE INDEX replay_runs_source ON replay_runs (tenant, source_conversation_id, created_at DESC, run_id DESC);
CREATE INDEX replay_runs_target ON replay_runs (tenant, target_conversation_id, created_at DESC, run_id DESC);

-- The Responses API's responses (service/app/responses): what a response was asked with, which
-- only the request knows (model, instructions, tools, sampling, metadata, store, ...), beside the
-- log that holds what it says. A response is one turn: its input messages (`input_ids`, in order,
-- the last one the turn's) and the reply, whose id is the response's (`resp_<hex of response_id>`).
-- Its status, output, usage and error are read from the log (the reply and its generation, a
-- turn_failed event, pending_replies), never copied here: a process dying mid-reply cannot leave
-- this row saying otherwise than the log. Written in the transaction that writes the turn.
CREATE TABLE responses (
    tenant           text NOT NULL,
    response_id      uuid NOT NULL,              -- the reply's message id
    family_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,              -- the conversation its messages are written in
    parent_id        uuid,                       -- the message its input went under (NULL: a new conversation's root)
    input_ids        uuid[] NOT NULL CONSTRAINT responses_input CHECK (cardinality(input_ids) > 0),
    previous_response_id uuid,                   -- as the request named it
    in_conversation  boolean NOT NULL,           -- the request named the conversation (`conversation`)
    model            text NOT NULL,              -- as requested
    request          bytea NOT NULL,             -- the request's fields a Response echoes, as JSON (never read by SQL)
    store            boolean NOT NULL,           -- false: neither retrieved nor continued
    deleted_at       timestamptz,                -- DELETE: its messages are redacted, it is neither retrieved nor continued
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, response_id)
);
-- A response's children (`next_response_ids`): the responses whose input went under its reply.
CREATE INDEX responses_children ON responses (tenant, parent_id) WHERE parent_id IS NOT NULL;

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
CREATE TRIGGER bodies_immutable BEFORE UPDATE ON bodies
    FOR EACH ROW EXECUTE FUNCTION reject_change();
CREATE TRIGGER bodies_no_truncate BEFORE TRUNCATE ON bodies
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
CREATE TRIGGER blobs_immutable BEFORE UPDATE ON blobs
    FOR EACH ROW EXECUTE FUNCTION reject_change();
CREATE TRIGGER body_blobs_immutable BEFORE UPDATE ON body_blobs
    FOR EACH ROW EXECUTE FUNCTION reject_change();

-- A payload as the SQL below reads it. `json` keeps any escape JSON allows, but PostgreSQL's text
-- can hold neither U+0000 nor half a surrogate pair, and `->` / `->>` de-escape every string of a
-- payload to read any one field: a single `\u0000` or lone `\ud800` anywhere in it (refused at the
-- API since revision 0005, but a log may hold some from before) would fail every function, trigger
-- and index that reads the payload. Read through this function, each such escape is plain text,
-- the six characters it is written with, so no stored event can break a read; the stored payload,
-- which the hash covers, is never changed. `convtree doctor` lists the events that hold one. Every
-- field the database reads from a payload is read through here; a payload without `\u` is returned
-- as it is.
CREATE FUNCTION readable_payload(p_payload json) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(p_payload::text, '\u') = 0 THEN p_payload
                ELSE regexp_replace(
                    p_payload::text,
                    -- an escape not itself escaped (an even run of backslashes before it) that is
                    -- \u0000, a high surrogate with no low one after it, or a low one with no high one before
                    '(?<!\\)((?:\\\\)*)(\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2})',
                    '\1\\\2', 'gi')::json END
$$;

-- Redaction and erasure. A `message_redacted` event names its target in its payload
-- ({"message_id", "reason", "erase"}); this index finds a message's redactions with one probe.
-- Every read that serves content joins `message_redaction` and withholds a redacted message's
-- content; nothing is derived or copied, so there is nothing to rebuild.
CREATE INDEX events_redactions ON events (family_id, ((readable_payload(payload)->>'message_id')::uuid), seq)
    WHERE type = 'message_redacted';

-- A message's latest redaction (no row: not redacted). Erasure can only follow a redaction, never
-- be undone, so the latest one says whether the body was erased.
CREATE FUNCTION message_redaction(p_family uuid, p_message uuid)
RETURNS TABLE (redacted_at timestamptz, redacted_by text, redaction_reason text, redaction_erased boolean)
LANGUAGE sql STABLE AS $$
    SELECT r.created_at, r.actor, readable_payload(r.payload)->>'reason',
           coalesce((readable_payload(r.payload)->>'erase')::boolean, false)
      FROM events r
     WHERE r.family_id = p_family AND r.type = 'message_redacted'
       AND (readable_payload(r.payload)->>'message_id')::uuid = p_message
     ORDER BY r.seq DESC
     LIMIT 1
$$;

-- Right to erasure: a body may be deleted once the log holds an erasing redaction of its message
-- (written earlier in the same transaction by the eraser). The event, its digest and the chain
-- stay, so the conversation still verifies; nothing may ever change a body.
CREATE FUNCTION guard_body_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM message_redaction(OLD.family_id, OLD.message_id) r WHERE r.redaction_erased) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'bodies is append-only: DELETE is allowed only for a body erased by a message_redacted event'
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER bodies_erasable BEFORE DELETE ON bodies
    FOR EACH ROW EXECUTE FUNCTION guard_body_delete();

-- The chain from a message up to its ancestor `p_top_depth` deep (both included), nearest first:
-- one index probe per level. Planner settings are fixed as for message_path, for the same reason.
CREATE FUNCTION walk_up(p_family uuid, p_message uuid, p_top_depth integer)
RETURNS TABLE (
    seq bigint, conversation_id uuid, message_id uuid, parent_id uuid, role text, depth integer,
    payload json, actor text, request_id text, created_at timestamptz
)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    WITH RECURSIVE up AS (
        SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth,
               e.payload, e.actor, e.request_id, e.created_at
          FROM events e
         WHERE e.family_id = p_family AND e.message_id = p_message AND e.depth >= p_top_depth
        UNION ALL
        -- LATERAL ... LIMIT 1: the parent is looked up once per level, by its key. A plain join
        -- leaves the planner free to scan the family once per level instead (what it picks on a
        -- never-analyzed table, where the generic plan under-estimates the family's size).
        SELECT parent.seq, parent.conversation_id, parent.message_id, parent.parent_id, parent.role,
               parent.depth, parent.payload, parent.actor, parent.request_id, parent.created_at
          FROM up
         CROSS JOIN LATERAL (
               SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth,
                      e.payload, e.actor, e.request_id, e.created_at
                 FROM events e
                WHERE e.family_id = p_family AND e.message_id = up.parent_id
                LIMIT 1
         ) parent
         WHERE up.depth > p_top_depth
    )
    SELECT up.seq, up.conversation_id, up.message_id, up.parent_id, up.role, up.depth,
           up.payload, up.actor, up.request_id, up.created_at
      FROM up
$$;

-- The ancestor of a message at a given depth (the message itself at its own depth; NULL deeper).
CREATE FUNCTION ancestor_at(p_family uuid, p_message uuid, p_depth integer) RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT w.message_id FROM walk_up(p_family, p_message, p_depth) w WHERE w.depth = p_depth
$$;

-- Whether a message is on a fork's inherited path: root to the base (`p_base`, `p_base_depth`
-- deep; NULL for a conversation that is not a fork). A walk up from the base to the message's
-- depth, so O(base depth − message depth), and no walk at all for a message deeper than the base.
CREATE FUNCTION on_base_path(p_family uuid, p_base uuid, p_base_depth integer, p_message uuid, p_depth integer)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_base IS NULL OR p_depth > p_base_depth THEN false
                ELSE coalesce(ancestor_at(p_family, p_base, p_depth) = p_message, false) END
$$;

-- A message's body as every read serves it, with the message's latest redaction: a redacted
-- message's content (and its digest key) is withheld here, once, for every query that serves
-- messages. Always one row (NULLs for a message with no body and no redaction).
CREATE FUNCTION served_body(p_family uuid, p_message uuid)
RETURNS TABLE (
    content text, digest_key bytea,
    redacted_at timestamptz, redacted_by text, redaction_reason text, redaction_erased boolean
)
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.redacted_at IS NULL THEN b.content END,
           CASE WHEN r.redacted_at IS NULL THEN b.digest_key END,
           r.redacted_at, r.redacted_by, r.redaction_reason, r.redaction_erased
      FROM (SELECT 1) AS one
      LEFT JOIN bodies b ON b.family_id = p_family AND b.message_id = p_message
      LEFT JOIN LATERAL message_redaction(p_family, p_message) r ON true
$$;

-- Tree integrity and layout, for every message inserted.
--
-- Integrity: a message's parent exists, is visible in the message's conversation and is one level
-- up. Visible: the conversation's own message or, in a fork, one on the path it inherited (root to
-- its base). The walk that checks the second case runs only when the parent lives in another
-- conversation. Rows are never changed, and a parent must exist before its child, so a cycle cannot
-- form.
--
-- Layout: the tree is cut into runs, unbranched chains read with one range scan of events_runs.
-- A message continues its parent's run when it is the parent's first child in the parent's own
-- conversation; any other message (a root, a later sibling, a fork's message under an inherited
-- one) starts a run of its own, named by its id. A path from a message to the root is then the
-- message's run down to it, then its run's parent run down to where it was left, and so on: as
-- many range scans as the path has branch points, each message read in index order. Whether a
-- child is the first is decided under the conversation's row lock (begin_write), which every
-- writer of a conversation's messages holds, so two appends cannot both continue a run; children
-- in other conversations never continue one, so forks need no lock of their source.
CREATE FUNCTION place_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parent_conversation uuid;
    parent_depth integer;
    parent_run uuid;
    base uuid;
BEGIN
    IF NEW.type <> 'message_appended' THEN
        NEW.run_id := NULL;
        NEW.parent_run_id := NULL;
        RETURN NEW;
    END IF;
    IF NEW.parent_id IS NULL THEN
        NEW.run_id := NEW.message_id;
        NEW.parent_run_id := NULL;
        RETURN NEW;
    END IF;
    SELECT e.conversation_id, e.depth, e.run_id INTO parent_conversation, parent_depth, parent_run
      FROM events e
     WHERE e.family_id = NEW.family_id AND e.message_id = NEW.parent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent message % does not exist', NEW.parent_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF parent_conversation <> NEW.conversation_id THEN
        -- The base comes from the log (a fork's first event), not from `conversations`, so the
        -- rule holds for every writer of the log, an import included.
        SELECT CASE WHEN f.type = 'conversation_forked'
                    THEN (readable_payload(f.payload)->>'source_message_id')::uuid END
          INTO base
          FROM events f
         WHERE f.family_id = NEW.family_id AND f.conversation_id = NEW.conversation_id
         ORDER BY f.seq
         LIMIT 1;
        IF base IS NULL OR ancestor_at(NEW.family_id, base, parent_depth) IS DISTINCT FROM NEW.parent_id THEN
            RAISE EXCEPTION 'parent message % is not in conversation %', NEW.parent_id, NEW.conversation_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    IF NEW.depth <> parent_depth + 1 THEN
        RAISE EXCEPTION 'depth % does not follow parent depth %', NEW.depth, parent_depth
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.parent_run_id := parent_run;
    -- The parent's first child in its own conversation, if it has one, continues its run: one
    -- probe of events_runs by its whole key, so the plan kept for the trigger cannot drift into a
    -- scan of the table, whatever the statistics were when it was made.
    IF parent_conversation = NEW.conversation_id
       AND NOT EXISTS (SELECT 1 FROM events c
                        WHERE c.family_id = NEW.family_id AND c.run_id = parent_run
                          AND c.depth = NEW.depth AND c.type = 'message_appended') THEN
        NEW.run_id := parent_run;
    ELSE
        NEW.run_id := NEW.message_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_place_message BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION place_message();

-- The path from a message to the root, as seen by conversation `p_conversation` as of event
-- `p_upto`, with each message's latest redaction if any (the caller withholds a redacted message's
-- content); no rows unless the message itself is visible there then. A fork (base `p_base`,
-- `p_base_depth` deep; NULLs otherwise) sees its own messages and the path root→base it inherited:
-- the walk follows parent pointers through the family, so it crosses into the sources by itself.
--
-- Rows with `on_path` are the path (unordered: the caller orders them by depth), each with its place
-- among its siblings as if its parent had no child of the conversation's own off the path: the
-- conversation's own children of a parent come in the order written, after the one inherited child
-- when the parent is inherited and above the base (older than any of the fork's). The other rows
-- are those children off the path, where there are any (seq, conversation_id, message_id,
-- parent_id and depth only), from which the caller corrects the places of their siblings on it.
--
-- The path is read by runs (place_message): one range scan of events_runs per run on it, and the
-- children off it with one range scan of events_branches per run (and a probe where it left a
-- run), so the cost follows the path's length and its branch points, never the rest of the tree.
--
-- Planner settings are fixed for this function so every step stays an index scan even on a table
-- that was never analyzed, whose statistics would otherwise invite a scan of the whole table.
-- PL/pgSQL, not SQL: PostgreSQL before 18 plans a SQL function's query again at every call, which
-- for this one costs more than reading a short path; PL/pgSQL keeps the plan for the session.
-- No JIT: on analyzed tables the planner's cost for a deep path passes the JIT thresholds, and
-- compiling the query took 600 ms where running it takes 2.
CREATE FUNCTION message_path(
    p_family uuid, p_conversation uuid, p_message uuid, p_base uuid, p_base_depth integer, p_upto bigint
)
RETURNS TABLE (
    seq bigint, conversation_id uuid, message_id uuid, parent_id uuid, role text, depth integer,
    payload json, created_at timestamptz, content text,
    redacted_at timestamptz, redacted_by text, redaction_reason text, redaction_erased boolean,  -- message_redaction
    sibling_count integer, sibling_position integer, on_path boolean
)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH RECURSIVE runs AS (
        -- The leaf's run down to the leaf, if the conversation sees the leaf (CASE, not OR: the
        -- walk up the base path runs only for another conversation's message).
        SELECT e.run_id, e.depth AS bottom, e.conversation_id, true AS is_leaf
          FROM events e
         WHERE e.family_id = p_family AND e.message_id = p_message
           AND CASE WHEN e.conversation_id = p_conversation THEN e.seq <= p_upto
                    ELSE on_base_path(p_family, p_base, p_base_depth, e.message_id, e.depth) END
        UNION ALL
        -- Then the run above, down to the message where this run branched off it. LATERAL ...
        -- LIMIT 1: each step is one probe by key, whatever the planner guesses.
        SELECT above.run_id, above.depth, above.conversation_id, false
          FROM runs r
         CROSS JOIN LATERAL (SELECT t.parent_id FROM events t
                              WHERE t.family_id = p_family AND t.message_id = r.run_id LIMIT 1) top
         CROSS JOIN LATERAL (SELECT a.run_id, a.depth, a.conversation_id FROM events a
                              WHERE a.family_id = p_family AND a.message_id = top.parent_id LIMIT 1) above
    ), shape AS (
        -- Runs never cross conversations, and a fork's inherited part is the top of any path in it:
        -- a message is inherited when it is at most `inherited_to` deep.
        SELECT coalesce(max(r.bottom) FILTER (WHERE r.conversation_id <> p_conversation), -1) AS inherited_to,
               -- Whether the family has a redaction at all: almost none has, and then no message
               -- of the path needs looking up in events_redactions.
               EXISTS (SELECT 1 FROM events x WHERE x.family_id = p_family AND x.type = 'message_redacted')
                   AS redactions
          FROM runs r
    ), path AS (
        SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload, e.created_at,
               -- The parent is inherited and above the base: the inherited child comes first.
               CASE WHEN e.depth - 1 <= s.inherited_to AND e.depth - 1 < p_base_depth THEN 1 ELSE 0 END
                   AS inherited_sibling,
               s.redactions
          FROM shape s, runs r
          -- LATERAL ... OFFSET 0: each run is read by its key once the runs are known. Pulled up
          -- into a plain join, the scan could be turned inside out: the whole family read, each row
          -- matched against the runs.
         CROSS JOIN LATERAL (SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth,
                                    e.payload, e.created_at
                               FROM events e
                              WHERE e.family_id = p_family AND e.run_id = r.run_id AND e.depth <= r.bottom
                                AND e.type = 'message_appended'
                             OFFSET 0) e
    )
    SELECT p.seq, p.conversation_id, p.message_id, p.parent_id, p.role, p.depth, p.payload, p.created_at,
           -- A correlated probe, not a join: a join leaves the planner free to scan the family's
           -- bodies once per run on a never-analyzed table.
           (SELECT b.content FROM bodies b WHERE b.family_id = p_family AND b.message_id = p.message_id),
           CASE WHEN p.redactions THEN (SELECT r.redacted_at FROM message_redaction(p_family, p.message_id) r) END,
           CASE WHEN p.redactions THEN (SELECT r.redacted_by FROM message_redaction(p_family, p.message_id) r) END,
           CASE WHEN p.redactions THEN (SELECT r.redaction_reason FROM message_redaction(p_family, p.message_id) r) END,
           CASE WHEN p.redactions THEN (SELECT r.redaction_erased FROM message_redaction(p_family, p.message_id) r) END,
           CASE WHEN p.parent_id IS NULL THEN 1
                ELSE p.inherited_sibling + (p.conversation_id = p_conversation)::integer END,
           CASE WHEN p.parent_id IS NULL OR p.conversation_id <> p_conversation THEN 1
                ELSE p.inherited_sibling + 1 END,
           true
      FROM path p
    UNION ALL
    -- The conversation's own children of path messages: the runs starting under them ...
    SELECT b.seq, b.conversation_id, b.message_id, b.parent_id, NULL, b.depth, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, false
      FROM runs r
     CROSS JOIN LATERAL (SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.depth
                           FROM events e
                          WHERE e.family_id = p_family AND e.parent_run_id = r.run_id
                            AND e.run_id = e.message_id
                            AND e.depth <= r.bottom + CASE WHEN r.is_leaf THEN 0 ELSE 1 END
                         OFFSET 0) b
     -- Filtered outside the scan, so that its only usable index is events_branches: with these in
     -- it, the planner could prefer a scan of the conversation's children instead.
     WHERE b.conversation_id = p_conversation AND b.seq <= p_upto
    UNION ALL
    -- ... and, where the path left a run, the run's next message: the branch point's first child.
    SELECT c.seq, c.conversation_id, c.message_id, c.parent_id, NULL, c.depth, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, false
      FROM runs r
     CROSS JOIN LATERAL (SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.depth
                           FROM events e
                          WHERE NOT r.is_leaf AND e.family_id = p_family AND e.run_id = r.run_id
                            AND e.depth = r.bottom + 1 AND e.type = 'message_appended'
                          LIMIT 1) c
     WHERE c.conversation_id = p_conversation AND c.seq <= p_upto;
END;
$$;

-- The first step of every write to a conversation, in this order: a shared lock on the tenant's
-- feed (a feed reader takes it exclusively to learn which sequence numbers are final), then the
-- conversation's row, then `p_count` sequence numbers. Taking the tenant lock first everywhere
-- keeps lock order fixed, so writers and readers cannot deadlock.
CREATE FUNCTION begin_write(
    p_tenant text, p_conversation uuid, p_count integer,
    p_ids uuid[] DEFAULT '{}', p_with_head boolean DEFAULT false
)
RETURNS TABLE (
    family_id uuid, head_id uuid, message_count integer, leaf_count integer,
    last_seq bigint, last_hash bytea, now timestamptz, seqs bigint[],
    base_id uuid, base_depth integer,  -- a fork's base (the message it was forked at); NULL otherwise
    -- The messages `p_ids` (and, with `p_with_head`, the head) as find_nodes sees them, read with
    -- the row locked, so an append decides on state no other writer can change before it commits.
    node_id uuid, node_conversation_id uuid, node_parent_id uuid, node_role text, node_depth integer,
    node_body_sha256 bytea, node_payload json, node_visible boolean, node_has_children boolean
)
LANGUAGE plpgsql
-- Planned once per connection: a custom plan was made anew at every call (0009).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    c conversations%ROWTYPE;
    numbers bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_tenant, 0));
    -- Delivered at commit, and only then: wakes the tenant's feed followers (service/store/notify.py).
    -- The payload is a digest, so a tenant name of any length fits NOTIFY's 8000 bytes.
    PERFORM pg_notify('convtree_events', encode(sha256(convert_to(p_tenant, 'UTF8')), 'hex'));
    SELECT * INTO c FROM conversations
     WHERE conversations.tenant = p_tenant AND conversations.conversation_id = p_conversation
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Numbers are drawn only now, with the row locked: a conversation's events are numbered in
    -- the order they commit.
    numbers := ARRAY(SELECT nextval('events_seq') FROM generate_series(1, p_count));
    RETURN QUERY
        SELECT c.family_id, c.head_id, c.message_count, c.leaf_count, c.last_seq, c.last_hash,
               now(), numbers, c.forked_from_message_id, c.base_depth,
               n.message_id, n.conversation_id, n.parent_id, n.role, n.depth, n.body_sha256,
               n.payload, n.visible, n.has_children
          FROM (SELECT 1) AS one
          LEFT JOIN find_nodes(
                   c.family_id, p_conversation,
                   CASE WHEN p_with_head AND c.head_id IS NOT NULL THEN p_ids || c.head_id ELSE p_ids END,
                   c.forked_from_message_id, c.base_depth
               ) AS n ON true;
END;
$$;

-- begin_write's read without its locks, its numbers or its NOTIFY, for an append written by
-- append_messages_if_unchanged (service/app/messages.py): the conversation's summary as last
-- committed, the time of its last event, and the messages `p_ids` (and, with `p_with_head`, the
-- head) as find_nodes sees them. Nothing is held: that statement writes only if the conversation's
-- last event is still the one read here.
CREATE FUNCTION read_for_append(p_tenant text, p_conversation uuid, p_ids uuid[], p_with_head boolean)
RETURNS TABLE (
    family_id uuid, head_id uuid, message_count integer, leaf_count integer,
    last_seq bigint, last_hash bytea, updated_at timestamptz,
    base_id uuid, base_depth integer,  -- a fork's base (the message it was forked at); NULL otherwise
    node_id uuid, node_conversation_id uuid, node_parent_id uuid, node_role text, node_depth integer,
    node_body_sha256 bytea, node_payload json, node_visible boolean, node_has_children boolean
)
LANGUAGE plpgsql STABLE
-- Planned once per connection, as begin_write: its statements probe by key whatever they are given.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    c conversations%ROWTYPE;
BEGIN
    SELECT * INTO c FROM conversations
     WHERE conversations.tenant = p_tenant AND conversations.conversation_id = p_conversation;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT c.family_id, c.head_id, c.message_count, c.leaf_count, c.last_seq, c.last_hash,
               c.updated_at, c.forked_from_message_id, c.base_depth,
               n.message_id, n.conversation_id, n.parent_id, n.role, n.depth, n.body_sha256,
               n.payload, n.visible, n.has_children
          FROM (SELECT 1) AS one
          LEFT JOIN find_nodes(
                   c.family_id, p_conversation,
                   CASE WHEN p_with_head AND c.head_id IS NOT NULL THEN p_ids || c.head_id ELSE p_ids END,
                   c.forked_from_message_id, c.base_depth
               ) AS n ON true;
END;
$$;

-- Messages of a family by id: whether each is visible in a conversation (its own, or on the path a
-- fork inherited: root to its base), and whether it has a child visible there (one of the
-- conversation's own or, for an inherited message above the base, the next one on the path).
-- The children probes are by whole keys, of events_runs and of events_branches; the second checks the
-- conversation outside the scan (OFFSET 0 keeps it there), so events_conversation cannot serve it.
-- On a never-analyzed table the planner may otherwise read the whole conversation for each message,
-- on every append.
CREATE FUNCTION find_nodes(p_family uuid, p_conversation uuid, p_ids uuid[], p_base uuid, p_base_depth integer)
RETURNS TABLE (
    message_id uuid, conversation_id uuid, parent_id uuid, role text, depth integer, body_sha256 bytea,
    payload json, visible boolean, has_children boolean
)
LANGUAGE sql STABLE AS $$
    SELECT e.message_id, e.conversation_id, e.parent_id, e.role, e.depth, e.body_sha256, e.payload,
           -- CASE, not OR: the walk up the base path runs only for another conversation's message.
           CASE WHEN e.conversation_id = p_conversation THEN true
                ELSE on_base_path(p_family, p_base, p_base_depth, e.message_id, e.depth) END,
           -- Its first child in its own conversation continues its run (events_runs); its other
           -- children, in any conversation, start runs under it (events_branches).
           (EXISTS (SELECT 1 FROM events c
                     WHERE e.conversation_id = p_conversation
                       AND c.family_id = p_family AND c.run_id = e.run_id AND c.depth = e.depth + 1
                       AND c.type = 'message_appended')
            OR EXISTS (SELECT 1
                         FROM (SELECT c.conversation_id FROM events c
                                WHERE c.family_id = p_family AND c.parent_run_id = e.run_id
                                  AND c.depth = e.depth + 1 AND c.run_id = c.message_id
                               OFFSET 0) c
                        WHERE c.conversation_id = p_conversation)
            OR coalesce(e.conversation_id <> p_conversation AND e.depth < p_base_depth, false))
      FROM events e
     WHERE e.family_id = p_family AND e.message_id = ANY(p_ids)
$$;

-- The same first step for a conversation that does not exist yet: the tenant's feed lock, then a
-- lock on the new conversation's id, so that two requests creating the same id run one after the
-- other and the second finds the first.
CREATE FUNCTION begin_create(p_tenant text, p_conversation uuid, p_count integer)
RETURNS TABLE (now timestamptz, seqs bigint[])
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_tenant, 0));
    -- Delivered at commit, and only then: wakes the tenant's feed followers (service/store/notify.py).
    -- The payload is a digest, so a tenant name of any length fits NOTIFY's 8000 bytes.
    PERFORM pg_notify('convtree_events', encode(sha256(convert_to(p_tenant, 'UTF8')), 'hex'));
    PERFORM pg_advisory_xact_lock(hashtextextended(p_tenant || '/' || p_conversation::text, 0));
    RETURN QUERY SELECT now(), ARRAY(SELECT nextval('events_seq') FROM generate_series(1, p_count));
END;
$$;

-- A conversation's summary folded from its own events up to event `p_upto`: the row
-- `conversations` holds once every event through p_upto is written. Replay ("as of") reads it and
-- `convtree rebuild` refills `conversations` from it, so both follow this one definition. The head
-- is the target of the newest event that sets one; a fork counts its inherited path (base_depth + 1
-- messages), and its base is a leaf until the fork writes under it (the messages above the base
-- each have one visible child, the next on the path, so they never are).
-- Set-based: it folds any number of conversations in one pass over their events (narrow rows, so
-- the aggregates stay in memory), then fetches each conversation's first, last and head events and
-- its base by index probes. LIMIT 1 keeps each probe a subquery run per conversation: pulled up
-- into a join, it could be planned as a hash of the whole log, per batch of a rebuild.
CREATE FUNCTION fold_conversations(p_conversations uuid[], p_upto bigint)
RETURNS TABLE (
    tenant text, conversation_id uuid, family_id uuid, title text, metadata json, head_id uuid,
    message_count integer, leaf_count integer, created_seq bigint, created_at timestamptz,
    updated_at timestamptz, last_seq bigint, last_hash bytea,
    forked_from_conversation_id uuid, forked_from_message_id uuid, base_depth integer
)
LANGUAGE sql STABLE AS $$
    WITH log AS MATERIALIZED (
        SELECT e.seq, e.family_id, e.conversation_id, e.type, e.message_id, e.parent_id
          FROM events e
         WHERE e.conversation_id = ANY (p_conversations) AND e.seq <= p_upto
    ), parents AS (
        -- Every message with a child in its own conversation, once.
        SELECT DISTINCT c.family_id, c.conversation_id, c.parent_id
          FROM log c
         WHERE c.type = 'message_appended' AND c.parent_id IS NOT NULL
    ), spans AS (
        SELECT l.family_id, l.conversation_id, min(l.seq) AS first_seq, max(l.seq) AS last_seq,
               max(l.seq) FILTER (WHERE l.type IN ('message_appended', 'head_moved', 'conversation_forked'))
                   AS head_seq,
               count(*) FILTER (WHERE l.type = 'message_appended') AS messages,
               count(*) FILTER (WHERE l.type = 'message_appended' AND p.parent_id IS NULL) AS leaves,
               max(l.seq) FILTER (WHERE l.type = 'conversation_updated') AS metadata_seq
          FROM log l
          LEFT JOIN parents p ON p.family_id = l.family_id AND p.conversation_id = l.conversation_id
                             AND p.parent_id = l.message_id
         GROUP BY l.family_id, l.conversation_id
    )
    SELECT f.tenant, s.conversation_id, s.family_id, f.payload->>'title', coalesce(u.metadata, f.payload->'metadata'),
           CASE h.type WHEN 'message_appended' THEN h.message_id
                       WHEN 'head_moved' THEN (h.payload->>'message_id')::uuid
                       WHEN 'conversation_forked' THEN (h.payload->>'source_message_id')::uuid END,
           (s.messages + coalesce(b.depth + 1, 0))::integer,
           (s.leaves + CASE WHEN b.message_id IS NOT NULL AND bp.parent_id IS NULL THEN 1 ELSE 0 END)::integer,
           s.first_seq, f.created_at, z.created_at, s.last_seq, z.hash,
           CASE WHEN f.type = 'conversation_forked' THEN (f.payload->>'source_conversation_id')::uuid END,
           b.message_id, b.depth
      FROM spans s
     CROSS JOIN LATERAL (SELECT e.tenant, e.type, readable_payload(e.payload) AS payload, e.created_at FROM events e
                          WHERE e.seq = s.first_seq AND e.family_id = s.family_id LIMIT 1) f
     CROSS JOIN LATERAL (SELECT e.created_at, e.hash FROM events e
                          WHERE e.seq = s.last_seq AND e.family_id = s.family_id LIMIT 1) z
      LEFT JOIN LATERAL (SELECT e.type, e.message_id, readable_payload(e.payload) AS payload FROM events e
                          WHERE e.seq = s.head_seq AND e.family_id = s.family_id LIMIT 1) h ON true
      LEFT JOIN LATERAL (SELECT readable_payload(e.payload)->'metadata' AS metadata FROM events e
                          WHERE e.seq = s.metadata_seq AND e.family_id = s.family_id LIMIT 1) u ON true
      LEFT JOIN LATERAL (SELECT e.message_id, e.depth FROM events e
                          WHERE f.type = 'conversation_forked' AND e.family_id = s.family_id
                            AND e.message_id = (f.payload->>'source_message_id')::uuid LIMIT 1) b ON true
      LEFT JOIN parents bp ON bp.family_id = s.family_id AND bp.conversation_id = s.conversation_id
                          AND bp.parent_id = b.message_id
$$;

-- The feed's frontier: the greatest sequence number of `p_tenant` that is final, i.e. no
-- transaction that is still running holds a number at or below it. Every writer holds the tenant's
-- lock shared from before it draws numbers until it commits (begin_write, begin_create); taking it
-- exclusively waits out the writers in flight and holds off new ones (they queue behind it) for
-- one index probe. The read after the lock takes a fresh snapshot (a VOLATILE function's statements
-- each do), so it sees every writer that finished; numbers drawn later are greater (events_seq
-- hands them out in increasing order: it has no per-session cache). Call it as a statement of its
-- own: the lock is released when the statement's transaction ends. `p_lock_timeout` bounds how long
-- the writers queued behind it can be held up by a slow writer ahead (lock_not_available then).
CREATE FUNCTION feed_frontier(p_tenant text, p_lock_timeout text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    frontier bigint;
BEGIN
    -- A snapshot taken before the lock was granted would miss the writers it waited for.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'feed_frontier needs READ COMMITTED, not %', current_setting('transaction_isolation');
    END IF;
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    PERFORM pg_advisory_xact_lock(hashtextextended(p_tenant, 0));
    SELECT coalesce(max(e.seq), 0) INTO frontier FROM events e WHERE e.tenant = p_tenant;
    RETURN frontier;
END;
$$;

-- Least privilege. The tables belong to the role that migrates; the service connects as another
-- role, which may read the log and append to it and keep the tables derived from it, but owns
-- nothing: it cannot update, delete or truncate the log, alter, disable or drop its guards, or
-- change the schema (ALTER TABLE … DISABLE TRIGGER and DROP TRIGGER need the owner,
-- session_replication_role a superuser). Bodies it may delete only as bodies_erasable allows.
-- Roles are cluster-wide and grants per database: `convtree migrate` calls this for its own
-- database after migrating, creating the role (LOGIN, no password) where it does not exist yet.
-- Idempotent: the role's rights on these tables are revoked and granted again, exactly these. A
-- migration that adds a table the service uses redefines this function.
CREATE FUNCTION grant_service_role(p_role text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN', p_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by the migrator of another database of the cluster
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role AND (r.rolsuper OR r.rolbypassrls))
       OR EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                   WHERE r.rolname = p_role AND c.oid IN ('events'::regclass, 'bodies'::regclass)) THEN
        RAISE EXCEPTION 'role % owns the log or is a superuser: it cannot be the service role', p_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('REVOKE ALL ON events, bodies, conversations, idempotency_keys, pending_replies, api_keys, replay_runs, blobs, body_blobs, message_paths, responses, reply_chunks FROM %I', p_role);
    EXECUTE format('REVOKE ALL ON SEQUENCE events_seq FROM %I', p_role);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), p_role);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT ON events TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON bodies TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON blobs TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT ON body_blobs TO %I', p_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE events_seq TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON conversations, api_keys TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys, pending_replies TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON replay_runs TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON message_paths TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON responses TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON reply_chunks TO %I', p_role);
    IF to_regclass('alembic_version') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON alembic_version TO %I', p_role);  -- /readyz reports it
    END IF;
END;
$$;

-- Only an owner may hand out rights; nobody else needs to call it.
REVOKE EXECUTE ON FUNCTION grant_service_role(text) FROM PUBLIC;
