-- Every query convtree runs, named. Loaded once by service/store/queries.py.
-- Parameters only ($1…$n); callers choose between fixed queries, never build SQL.

-- name: find_api_key
SELECT tenant, name FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL;

-- name: insert_api_key
INSERT INTO api_keys (key_hash, tenant, name) VALUES ($1, $2, $3);

-- name: revoke_api_keys
UPDATE api_keys SET revoked_at = now() WHERE tenant = $1 AND name = $2 AND revoked_at IS NULL;

-- name: count_api_keys
SELECT count(*) FROM api_keys WHERE revoked_at IS NULL;

-- name: list_api_keys
SELECT tenant, name, created_at, revoked_at FROM api_keys ORDER BY created_at;

-- name: has_schema_revision
SELECT to_regclass('alembic_version') IS NOT NULL;

-- name: schema_revision
SELECT version_num FROM alembic_version;

-- name: begin_create
SELECT now, seqs FROM begin_create($1, $2, $3);

-- name: begin_write
SELECT family_id, head_id, message_count, leaf_count, last_seq, last_hash, now, seqs, base_id, base_depth
  FROM begin_write($1, $2, $3);

-- name: begin_append
-- begin_write, and in the same round trip the messages $4 (and, with $5, the head) as find_nodes
-- sees them: one row per message found, or one row with no message.
-- Each message's digest key comes with it (a retry compares its content with the digest).
SELECT w.family_id, w.head_id, w.message_count, w.leaf_count, w.last_seq, w.last_hash, w.now, w.seqs,
       w.base_id, w.base_depth,
       w.node_id, w.node_conversation_id, w.node_parent_id, w.node_role, w.node_depth, w.node_body_sha256,
       w.node_payload, w.node_visible, w.node_has_children, b.digest_key AS node_digest_key
  FROM begin_write($1, $2, $3, $4, $5) w
  LEFT JOIN bodies b ON b.family_id = w.family_id AND b.message_id = w.node_id;

-- name: find_nodes
SELECT n.message_id, n.conversation_id, n.parent_id, n.role, n.depth, n.body_sha256, n.payload,
       n.visible, n.has_children, b.digest_key
  FROM find_nodes($1, $2, $3, $4, $5) n
  LEFT JOIN bodies b ON b.family_id = $1 AND b.message_id = n.message_id;

-- name: find_root
SELECT e.message_id, e.role, e.body_sha256, b.digest_key
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
 WHERE e.family_id = $1 AND e.type = 'message_appended' AND e.parent_id IS NULL;

-- name: insert_conversation
WITH new_events AS (
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT s, $1, $2, $3, t, m, p, r, d, b, pl::json, $4, $5, $6, h
      FROM unnest($7::bigint[], $8::text[], $9::uuid[], $10::uuid[], $11::text[], $12::int[],
                  $13::bytea[], $14::text[], $15::bytea[]) AS u(s, t, m, p, r, d, b, pl, h)
), new_bodies AS (
    INSERT INTO bodies (family_id, message_id, content, digest_key)
    SELECT $3, m, c, k FROM unnest($16::uuid[], $17::text[], $18::bytea[]) AS u(m, c, k)
)
INSERT INTO conversations (tenant, conversation_id, family_id, title, metadata, head_id,
                           message_count, leaf_count, created_seq, created_at, updated_at,
                           last_seq, last_hash,
                           forked_from_conversation_id, forked_from_message_id, base_depth)
VALUES ($1, $2, $3, $19, $20::json, $21, $22, $23, $24, $6, $6, $25, $26, $27, $28, $29);

-- name: append_events
WITH new_events AS (
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT s, $1, $2, $3, t, m, p, r, d, b, pl::json, $4, $5, $6, h
      FROM unnest($7::bigint[], $8::text[], $9::uuid[], $10::uuid[], $11::text[], $12::int[],
                  $13::bytea[], $14::text[], $15::bytea[]) AS u(s, t, m, p, r, d, b, pl, h)
), new_bodies AS (
    INSERT INTO bodies (family_id, message_id, content, digest_key)
    SELECT $3, m, c, k FROM unnest($16::uuid[], $17::text[], $18::bytea[]) AS u(m, c, k)
)
UPDATE conversations
   SET head_id = $19, message_count = $20, leaf_count = $21, updated_at = $6,
       last_seq = $22, last_hash = $23
 WHERE tenant = $1 AND conversation_id = $2;

-- name: append_messages_if_unchanged
-- Whole appends, one message each to several conversations (of any tenants), in one statement,
-- for writers that already know those conversations' states (service/app/messages.py): the
-- feed lock of every tenant involved (shared), then each conversation's row, as begin_write takes
-- them; then each message (its event, body and the conversation's new summary, the message as
-- head) is written only if its conversation's last event is still `known_seq` and none is stamped
-- later than it. A row locked by another writer is about to move on: SKIP LOCKED passes it over
-- instead of waiting. Event numbers are drawn under both locks, as begin_write draws them.
-- Returns (tenant, conversation, event number) of each message written; a conversation may appear
-- once at most.
WITH batch AS MATERIALIZED (
    SELECT tenant, conversation_id, family_id, message_id, parent_id, role, depth, body_sha256, payload,
           actor, request_id, created_at, hash, content, message_count, leaf_count, known_seq, digest_key
      FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::int[],
                  $8::bytea[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::bytea[],
                  $14::text[], $15::int[], $16::int[], $17::bigint[], $18::bytea[])
           AS b(tenant, conversation_id, family_id, message_id, parent_id, role, depth, body_sha256,
                payload, actor, request_id, created_at, hash, content, message_count, leaf_count,
                known_seq, digest_key)
), feed AS MATERIALIZED (
    SELECT count(*) AS tenants
      FROM (SELECT pg_advisory_xact_lock_shared(hashtextextended(t.tenant, 0))
              FROM (SELECT DISTINCT tenant FROM batch) AS t) AS locks
), locked AS MATERIALIZED (
    -- Joined to `feed` so that every feed lock is held before a row is locked.
    SELECT c.tenant, c.conversation_id, c.last_seq, c.updated_at
      FROM conversations c, feed
     WHERE (c.tenant, c.conversation_id) IN (SELECT tenant, conversation_id FROM batch)
       FOR UPDATE OF c SKIP LOCKED
), unchanged AS MATERIALIZED (
    SELECT b.tenant, b.conversation_id, b.family_id, b.message_id, b.parent_id, b.role, b.depth,
           b.body_sha256, b.payload, b.actor, b.request_id, b.created_at, b.hash, b.content,
           b.message_count, b.leaf_count, b.digest_key, nextval('events_seq') AS seq
      FROM batch b
      JOIN locked l ON l.tenant = b.tenant AND l.conversation_id = b.conversation_id
     WHERE l.last_seq = b.known_seq AND l.updated_at <= b.created_at
), new_events AS (
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT u.seq, u.tenant, u.conversation_id, u.family_id, 'message_appended', u.message_id,
           u.parent_id, u.role, u.depth, u.body_sha256, u.payload::json, u.actor, u.request_id,
           u.created_at, u.hash
      FROM unchanged u
), new_bodies AS (
    INSERT INTO bodies (family_id, message_id, content, digest_key)
    SELECT u.family_id, u.message_id, u.content, u.digest_key FROM unchanged u
)
UPDATE conversations c
   SET head_id = u.message_id, message_count = u.message_count, leaf_count = u.leaf_count,
       updated_at = u.created_at, last_seq = u.seq, last_hash = u.hash
  FROM unchanged u
 WHERE c.tenant = u.tenant AND c.conversation_id = u.conversation_id
-- Delivered at commit, and only then, as begin_write's: wakes the tenants' feed followers.
RETURNING c.tenant, c.conversation_id, u.seq,
          pg_notify('convtree_events', encode(sha256(convert_to(c.tenant, 'UTF8')), 'hex'));

-- name: get_conversation
SELECT conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_at, updated_at, last_seq,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM conversations
 WHERE tenant = $1 AND conversation_id = $2;

-- name: list_conversations
-- Newest first; $2 is the created_seq of the last conversation of the previous page, or NULL.
SELECT conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_at, updated_at, last_seq, created_seq,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM conversations
 WHERE tenant = $1 AND ($2::bigint IS NULL OR created_seq < $2)
 ORDER BY created_seq DESC
 LIMIT $3;

-- name: get_message
-- A message visible in conversation $3: its own, written by event $6, or on the path a fork
-- inherited (root to its base $4, $5 deep).
SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
       e.actor, e.request_id, e.created_at, CASE WHEN r.redacted_at IS NULL THEN b.content END AS content,
       r.redacted_at, r.redacted_by, r.redaction_reason, r.redaction_erased
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
  LEFT JOIN LATERAL message_redaction(e.family_id, e.message_id) r ON true
 WHERE e.family_id = $1 AND e.message_id = $2
   AND ((e.conversation_id = $3 AND e.seq <= $6) OR on_base_path($1, $4, $5, e.message_id, e.depth));

-- name: list_children
-- The children of message $2 (depth $5) visible in conversation $3 up to event $6: its own and,
-- when $2 is inherited ($4: the fork's base, passed only then), the next message on the inherited
-- path, found by a walk up from the base (it is older than any of the fork's, so first).
SELECT w.seq, w.conversation_id, w.message_id, w.parent_id, w.role, w.depth, w.payload,
       w.actor, w.request_id, w.created_at, CASE WHEN r.redacted_at IS NULL THEN b.content END AS content,
       r.redacted_at, r.redacted_by, r.redaction_reason, r.redaction_erased
  FROM walk_up($1, $4, $5 + 1) w
  LEFT JOIN bodies b ON b.family_id = $1 AND b.message_id = w.message_id
  LEFT JOIN LATERAL message_redaction($1, w.message_id) r ON true
 WHERE w.depth = $5 + 1 AND w.parent_id = $2
UNION ALL
-- The conversation's own children are read with events_children alone: their family is checked
-- outside the scan (OFFSET 0 keeps it there), so events_runs, which leads with the family too,
-- cannot serve it. On a never-analyzed table the planner costs both alike and may otherwise read
-- the whole family.
SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
       e.actor, e.request_id, e.created_at, CASE WHEN r.redacted_at IS NULL THEN b.content END AS content,
       r.redacted_at, r.redacted_by, r.redaction_reason, r.redaction_erased
  FROM (SELECT e.seq, e.conversation_id, e.family_id, e.message_id, e.parent_id, e.role, e.depth,
               e.payload, e.actor, e.request_id, e.created_at
          FROM events e
         WHERE e.conversation_id = $3 AND e.parent_id = $2 AND e.type = 'message_appended' AND e.seq <= $6
        OFFSET 0) e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
  LEFT JOIN LATERAL message_redaction(e.family_id, e.message_id) r ON true
 WHERE e.family_id = $1
 ORDER BY seq;

-- name: list_messages
-- Every message visible in conversation $2 in the order written: a fork's inherited path (root to
-- its base $3; all of it older than the fork), then the conversation's own up to event $4.
SELECT w.seq, w.conversation_id, w.message_id, w.parent_id, w.role, w.depth, w.payload,
       w.actor, w.request_id, w.created_at, CASE WHEN r.redacted_at IS NULL THEN b.content END AS content,
       r.redacted_at, r.redacted_by, r.redaction_reason, r.redaction_erased
  FROM walk_up($1, $3, 0) w
  LEFT JOIN bodies b ON b.family_id = $1 AND b.message_id = w.message_id
  LEFT JOIN LATERAL message_redaction($1, w.message_id) r ON true
UNION ALL
SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
       e.actor, e.request_id, e.created_at, CASE WHEN r.redacted_at IS NULL THEN b.content END AS content,
       r.redacted_at, r.redacted_by, r.redaction_reason, r.redaction_erased
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
  LEFT JOIN LATERAL message_redaction(e.family_id, e.message_id) r ON true
 WHERE e.family_id = $1 AND e.conversation_id = $2 AND e.type = 'message_appended' AND e.seq <= $4
 ORDER BY seq;

-- name: list_leaves
-- Branch tips of conversation $2 up to event $4: its own messages with no child of its own by then,
-- and a fork's base $3 until the fork writes under it (the inherited messages above the base never
-- are: each has the next message on the path as a child).
-- One pass, no join: every candidate tip comes with its place, every own message's parent comes
-- as a bare id, and a tip is an id that no row names as a parent. A probe of events for each
-- message's children can be planned as a scan of the family per message when the table was never
-- analyzed (the estimate is then one row), which makes the listing quadratic in the tree's size;
-- grouping is linear (or n log n sorted) whatever the statistics say.
SELECT k.id AS message_id, max(k.depth) AS depth, max(k.seq) AS seq, max(k.created_at) AS created_at
  FROM (SELECT e.message_id AS id, e.depth, e.seq, e.created_at
          FROM events e
         WHERE e.family_id = $1 AND e.message_id = $3
        UNION ALL
        SELECT e.message_id, e.depth, e.seq, e.created_at
          FROM events e
         WHERE e.family_id = $1 AND e.conversation_id = $2 AND e.type = 'message_appended' AND e.seq <= $4
        UNION ALL
        SELECT e.parent_id, NULL, NULL, NULL
          FROM events e
         WHERE e.family_id = $1 AND e.conversation_id = $2 AND e.type = 'message_appended' AND e.seq <= $4
       ) k
 GROUP BY k.id
-- Only candidate rows (each has its seq): no own message is its child.
HAVING count(k.seq) = count(*)
 ORDER BY seq;

-- name: message_path
-- Rows come unordered (Tx.message_path sorts them by depth): sorting rows that carry their
-- content in PostgreSQL spills to disk at the default work_mem for a deep path. The rows off the
-- path (`on_path` false) say where a path message's place among its siblings needs correcting.
-- A redacted message's content is withheld here as in every read (message_path finds its redaction).
SELECT p.seq, p.conversation_id, p.message_id, p.parent_id, p.role, p.depth, p.payload, p.created_at,
       CASE WHEN p.redacted_at IS NULL THEN p.content END AS content,
       p.redacted_at, p.redacted_by, p.redaction_reason, p.redaction_erased,
       p.sibling_count, p.sibling_position, p.on_path
  FROM message_path($1, $2, $3, $4, $5, $6) p;

-- name: claim_idempotency_key
-- Waits while another transaction holds the same key; returns a row only if this one claimed it.
INSERT INTO idempotency_keys (tenant, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT (tenant, key) DO NOTHING
RETURNING true;

-- name: find_idempotency_key
-- Locked: retries of one key act on what it came to one at a time (a turn's retry may launch its
-- reply again, and records that in this row).
SELECT fingerprint, status, response, conversation_id, user_message_id, reply_id
  FROM idempotency_keys WHERE tenant = $1 AND key = $2
   FOR UPDATE;

-- name: complete_idempotency_key
UPDATE idempotency_keys SET status = $3, response = $4 WHERE tenant = $1 AND key = $2;

-- name: launch_idempotency_key
UPDATE idempotency_keys SET conversation_id = $3, user_message_id = $4, reply_id = $5
 WHERE tenant = $1 AND key = $2;

-- name: schema_version
SELECT version_num FROM alembic_version;

-- name: grant_service_role
-- Run as the owner, after migrating (service/store/migrate.py), under migration_lock.
SELECT grant_service_role($1);

-- name: migration_lock
-- One migrator at a time, as alembic/env.py holds it: two processes granting at once would both
-- update the same catalog rows ("tuple concurrently updated").
SELECT pg_advisory_xact_lock($1);

-- --- Replay and rebuild (forks, as_of, `convtree rebuild`) --------------------------------------

-- name: conversation_as_of
-- A conversation's summary as it stood after event $3 or, when $3 is NULL, after its newest event
-- stamped at or before $4, folded from the log. No row: it did not exist yet (or is not the tenant's).
SELECT tenant, conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_seq, created_at, updated_at, last_seq, last_hash,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM fold_conversations(
           ARRAY[$2::uuid],
           coalesce($3::bigint, (SELECT max(e.seq) FROM events e
                                  WHERE e.conversation_id = $2 AND e.tenant = $1 AND e.created_at <= $4)))
 WHERE tenant = $1;

-- name: rebuild_conversations_lock
-- Writers wait (and see the rebuilt rows once they may go on); readers keep reading the old rows.
LOCK TABLE conversations IN EXCLUSIVE MODE;

-- name: rebuild_conversations_clear
-- The rows of a batch of conversations, refilled right after in the same savepoint.
DELETE FROM conversations WHERE conversation_id = ANY ($1::uuid[]);

-- name: rebuild_conversations_prune
-- Rows of conversations the log does not hold ($1: every conversation it holds).
DELETE FROM conversations WHERE conversation_id <> ALL ($1::uuid[]);

-- name: rebuild_conversations_plan
-- Every conversation in the log, with its number of events (the rebuild's progress is in events).
SELECT conversation_id AS key, count(*) AS events FROM events GROUP BY conversation_id ORDER BY conversation_id;

-- name: rebuild_conversations_fill
INSERT INTO conversations (tenant, conversation_id, family_id, title, metadata, head_id,
                           message_count, leaf_count, created_seq, created_at, updated_at,
                           last_seq, last_hash,
                           forked_from_conversation_id, forked_from_message_id, base_depth)
SELECT tenant, conversation_id, family_id, title, metadata, head_id,
       message_count, leaf_count, created_seq, created_at, updated_at,
       last_seq, last_hash,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM fold_conversations($1::uuid[], 9223372036854775807);

-- ---------------------------------------------------------------------------------------------
-- History: the event feeds, audit, redaction and erasure, export and import (service/store/history.py).
-- A conversation's events are always selected by family_id and conversation_id together: a
-- conversation id is unique only within its tenant, a family id everywhere.
-- ---------------------------------------------------------------------------------------------

-- name: conversation_events
SELECT seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,
       body_sha256, payload, actor, request_id, created_at, hash
  FROM events
 WHERE family_id = $1 AND conversation_id = $2 AND seq > $3
 ORDER BY seq
 LIMIT $4;

-- name: feed_frontier
-- A statement of its own: the tenant lock it takes ends with it (see feed_frontier in schema.sql).
SELECT feed_frontier($1, $2);

-- name: tenant_events
-- Only up to the frontier $3: past it, an earlier number may still be in flight.
SELECT seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,
       body_sha256, payload, actor, request_id, created_at, hash
  FROM events
 WHERE tenant = $1 AND seq > $2 AND seq <= $3
 ORDER BY seq
 LIMIT $4;

-- name: audit_events
-- Each event with the digest of its message's body as it is stored now (NULL: no body), computed
-- here as body_digest computes it (UTF-8 bytes, after the body's key if it has one), so the bodies
-- themselves never leave the server.
SELECT e.seq, e.tenant, e.conversation_id, e.family_id, e.type, e.message_id, e.parent_id, e.role,
       e.depth, e.body_sha256, e.payload, e.actor, e.request_id, e.created_at, e.hash,
       sha256(coalesce(b.digest_key, '') || convert_to(b.content, 'UTF8')) AS body_digest
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
 WHERE e.family_id = $1 AND e.conversation_id = $2
 ORDER BY e.seq;

-- name: audit_summary
-- The conversation's summary row as stored; the audit compares it with conversation_as_of's fold.
SELECT tenant, conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_seq, created_at, updated_at, last_seq, last_hash,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM conversations
 WHERE tenant = $1 AND conversation_id = $2;

-- name: export_events
-- A page of the export, after event $3. A redacted message's content is withheld from exports as
-- from every other read.
SELECT e.seq, e.tenant, e.conversation_id, e.family_id, e.type, e.message_id, e.parent_id, e.role,
       e.depth, e.body_sha256, e.payload, e.actor, e.request_id, e.created_at, e.hash,
       CASE WHEN r.redacted_at IS NULL THEN b.content END AS content,
       CASE WHEN r.redacted_at IS NULL THEN b.digest_key END AS digest_key
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
  LEFT JOIN LATERAL message_redaction(e.family_id, e.message_id) r ON e.type = 'message_appended'
 WHERE e.family_id = $1 AND e.conversation_id = $2 AND e.seq > $3
 ORDER BY e.seq
 LIMIT $4;

-- name: find_redaction
SELECT redacted_at, redacted_by, redaction_reason, redaction_erased FROM message_redaction($1, $2);

-- name: find_body
SELECT content FROM bodies WHERE family_id = $1 AND message_id = $2;

-- name: erase_body
-- Allowed by the bodies_erasable trigger only after the erasing event is written.
DELETE FROM bodies WHERE family_id = $1 AND message_id = $2;

-- name: vacuum_bodies
-- The tables that hold message content (bodies, and stored responses that quoted it): an erased
-- body's dead row is removed from the table's pages. Outside a transaction; the tables' owner only.
VACUUM (ANALYZE) bodies, idempotency_keys;

-- name: vacuum_full_bodies
-- The same tables rewritten into new files and the old files deleted, so an erased body's bytes
-- are in no data file of the database (they may stay in WAL and backups until those expire).
-- Holds each table's ACCESS EXCLUSIVE lock while it is rewritten: every append waits.
VACUUM (FULL, ANALYZE) bodies, idempotency_keys;

-- name: body_tables_size
SELECT coalesce(sum(pg_total_relation_size(c)), 0)::bigint
  FROM unnest(ARRAY['bodies'::regclass, 'idempotency_keys'::regclass]) AS c;

-- name: find_quoting_responses
-- Stored responses of the tenant that may quote a message: they contain its id or its content
-- ($2, $3: both as they appear inside a JSON string, which is how responses are stored).
SELECT key, response
  FROM idempotency_keys
 WHERE tenant = $1 AND response IS NOT NULL
   AND (position($2::bytea IN response) > 0 OR ($3::bytea IS NOT NULL AND position($3::bytea IN response) > 0));

-- name: replace_response
UPDATE idempotency_keys SET response = $3 WHERE tenant = $1 AND key = $2;

-- name: fork_base
-- The message a fork was taken at, if conversation $3 of tenant $4 (in family $1) shows it, and the
-- path root→base (message id, depth) it would inherit.
SELECT w.message_id, w.depth
  FROM walk_up($1, $2, 0) w
 WHERE EXISTS (SELECT 1 FROM events e
                 JOIN conversations c ON c.tenant = $4 AND c.conversation_id = $3
                WHERE e.family_id = $1 AND e.message_id = $2 AND e.type = 'message_appended'
                  AND (e.conversation_id = $3
                       OR on_base_path($1, c.forked_from_message_id, c.base_depth, e.message_id, e.depth)));

-- name: import_events
-- Events keep what their hashes cover (actor, request id, time, payload text) and get this
-- database's numbers, tenant and family.
WITH new_events AS (
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT s, $1, $2, $3, t, m, p, r, d, b, pl::json, a, q, c, h
      FROM unnest($4::bigint[], $5::text[], $6::uuid[], $7::uuid[], $8::text[], $9::int[],
                  $10::bytea[], $11::text[], $12::bytea[], $13::text[], $14::text[], $15::timestamptz[])
           AS u(s, t, m, p, r, d, b, pl, h, a, q, c)
)
INSERT INTO bodies (family_id, message_id, content, digest_key)
SELECT $3, m, c, k FROM unnest($16::uuid[], $17::text[], $18::bytea[]) AS u(m, c, k);

-- name: import_summary
-- The imported conversation's summary, folded from its events by the one definition rebuild and
-- replay use (a conversation id may exist in other tenants: the family picks this one).
INSERT INTO conversations (tenant, conversation_id, family_id, title, metadata, head_id,
                           message_count, leaf_count, created_seq, created_at, updated_at,
                           last_seq, last_hash,
                           forked_from_conversation_id, forked_from_message_id, base_depth)
SELECT f.tenant, f.conversation_id, f.family_id, f.title, coalesce(f.metadata, '{}'::json), f.head_id,
       f.message_count, f.leaf_count, f.created_seq, f.created_at, f.updated_at,
       f.last_seq, f.last_hash,
       f.forked_from_conversation_id, f.forked_from_message_id, f.base_depth
  FROM fold_conversations(ARRAY[$2]::uuid[], $4) f
 WHERE f.family_id = $3 AND f.tenant = $1
RETURNING last_hash;

-- name: ping
-- The feed listener's idle probe: a dead connection is otherwise silent.
SELECT 1;

-- ---------------------------------------------------------------------------------------------
-- Turns: replies in flight (pending_replies, schema.sql), for service/store/pending.py.
-- ---------------------------------------------------------------------------------------------

-- name: register_pending_reply
-- Registers reply $2 as pending and, in the same round trip, returns the replies already pending
-- that are message $12 or answer it (the new row is not among them: one statement, one snapshot).
WITH registered AS (
    INSERT INTO pending_replies (family_id, reply_id, tenant, conversation_id, user_message_id, provider,
                                 model, actor, request_id, owner, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))
)
SELECT reply_id, user_message_id
  FROM pending_replies
 WHERE $12::uuid IS NOT NULL AND family_id = $1 AND (reply_id = $12 OR user_message_id = $12);

-- name: is_pending_reply
SELECT EXISTS (SELECT 1 FROM pending_replies WHERE family_id = $1 AND reply_id = $2);

-- name: finish_pending_reply
-- Only the owner closes its reply, and only while the row is there: a swept row means the reply
-- was already closed out with turn_failed and must not appear after all.
DELETE FROM pending_replies
 WHERE family_id = $1 AND reply_id = $2 AND owner = $3
RETURNING reply_id;

-- name: expire_pending_reply
DELETE FROM pending_replies
 WHERE family_id = $1 AND reply_id = $2 AND expires_at < now()
RETURNING reply_id;

-- name: renew_pending_leases
-- Only the replies a task of owner $1 is still working on ($3): a row its task left behind (it
-- died, or gave up) runs out and is closed out by the sweep, however busy the process is.
UPDATE pending_replies SET expires_at = now() + make_interval(secs => $2)
 WHERE owner = $1 AND reply_id = ANY($3::uuid[]);

-- name: expired_pending_replies
SELECT family_id, reply_id, tenant, conversation_id, user_message_id, provider, model, actor, request_id
  FROM pending_replies
 WHERE expires_at < now()
 ORDER BY expires_at
 LIMIT $1;

-- name: append_turn
-- append_events and register_pending_reply in one round trip, for a turn whose reply was launched
-- before it is registered (service/app/turns.py): the turn's messages with the conversation's new
-- summary ($1-$23 as append_events), and its reply $24, answering message $25, registered as
-- pending; returns the replies already pending that are message $30 or answer it.
WITH new_events AS (
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT s, $1, $2, $3, t, m, p, r, d, b, pl::json, $4, $5, $6, h
      FROM unnest($7::bigint[], $8::text[], $9::uuid[], $10::uuid[], $11::text[], $12::int[],
                  $13::bytea[], $14::text[], $15::bytea[]) AS u(s, t, m, p, r, d, b, pl, h)
), new_bodies AS (
    INSERT INTO bodies (family_id, message_id, content, digest_key)
    SELECT $3, m, c, k FROM unnest($16::uuid[], $17::text[], $18::bytea[]) AS u(m, c, k)
), new_summary AS (
    UPDATE conversations
       SET head_id = $19, message_count = $20, leaf_count = $21, updated_at = $6,
           last_seq = $22, last_hash = $23
     WHERE tenant = $1 AND conversation_id = $2
), registered AS (
    INSERT INTO pending_replies (family_id, reply_id, tenant, conversation_id, user_message_id, provider,
                                 model, actor, request_id, owner, expires_at)
    VALUES ($3, $24, $1, $2, $25, $26, $27, $4, $5, $28, now() + make_interval(secs => $29))
)
SELECT reply_id, user_message_id
  FROM pending_replies
 WHERE $30::uuid IS NOT NULL AND family_id = $3 AND (reply_id = $30 OR user_message_id = $30);

-- ---------------------------------------------------------------------------------------------
-- Doctor (service/app/doctor.py): what the database holds that convtree no longer accepts.
-- ---------------------------------------------------------------------------------------------

-- name: unreadable_payloads
-- Events whose payload holds an escape PostgreSQL text cannot hold (\u0000, a lone surrogate),
-- stored before the API refused them: the SQL reads them through readable_payload, which spells
-- such an escape out, so these are the events whose text reads differently there. A whole scan
-- of the log, once, by an operator.
SELECT seq, tenant, conversation_id, type
  FROM events
 WHERE strpos(payload::text, '\u') > 0 AND readable_payload(payload)::text <> payload::text
 ORDER BY seq;

-- ---------------------------------------------------------------------------------------------
-- Replay runs (replay_runs, schema.sql), for service/store/replays.py.
-- ---------------------------------------------------------------------------------------------

-- name: insert_replay_run
-- A new run, queued for whichever process claims it first.
INSERT INTO replay_runs (tenant, run_id, batch_id, source_conversation_id, target_conversation_id, anchor_id,
                         destination, plan, status, turns_total, actor, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $11)
RETURNING created_at, updated_at;

-- name: get_replay_run
-- A run of tenant $1, as its caller and its worker read it.
SELECT tenant, run_id, batch_id, source_conversation_id, target_conversation_id, anchor_id, destination, plan, status,
       turns_total, turns_done, prompt_tokens, completion_tokens, error, detail, actor, request_id,
       created_at, updated_at
  FROM replay_runs
 WHERE tenant = $1 AND run_id = $2;

-- name: list_batch_replay_runs
-- The runs of batch $2, in the order they were started.
SELECT tenant, run_id, batch_id, source_conversation_id, target_conversation_id, anchor_id, destination, plan, status,
       turns_total, turns_done, prompt_tokens, completion_tokens, error, detail, actor, request_id,
       created_at, updated_at
  FROM replay_runs
 WHERE tenant = $1 AND batch_id = $2
 ORDER BY created_at, run_id;

-- name: claim_replay_run
-- The oldest run no live process holds (queued, or running under a lease that ran out), claimed by
-- owner $1 for $2 seconds, unless its tenant already has $3 runs under a live lease. One run per
-- statement, so the bound holds within a process; two processes claiming for one tenant at the
-- same instant may each take one.
WITH candidate AS (
    SELECT r.tenant, r.run_id
      FROM replay_runs r
     WHERE r.status IN ('queued', 'running')
       AND (r.lease_until IS NULL OR r.lease_until < now())
       AND (SELECT count(*) FROM replay_runs o
             WHERE o.tenant = r.tenant AND o.status = 'running' AND o.lease_until >= now()) < $3
     ORDER BY r.created_at
     LIMIT 1
       FOR UPDATE SKIP LOCKED
)
UPDATE replay_runs r
   SET status = 'running', owner = $1, lease_until = now() + make_interval(secs => $2), updated_at = now()
  FROM candidate c
 WHERE r.tenant = c.tenant AND r.run_id = c.run_id
RETURNING r.tenant, r.run_id;

-- name: renew_replay_leases
-- Only the runs a task of owner $1 is still working on ($3).
UPDATE replay_runs SET lease_until = now() + make_interval(secs => $2)
 WHERE owner = $1 AND status = 'running' AND run_id = ANY($3::uuid[]);

-- name: advance_replay_run
-- Turn $4 of run $2 is being written, in this transaction, by owner $3: counted, with its tokens,
-- only if the owner still holds the run and turn $4 - 1 was the last one written. No row: the run
-- was cancelled or claimed by another process, and the turn must not be written.
UPDATE replay_runs
   SET turns_done = $4, prompt_tokens = prompt_tokens + $5, completion_tokens = completion_tokens + $6,
       status = CASE WHEN $4 = turns_total THEN 'finished' ELSE status END,
       lease_until = now() + make_interval(secs => $7), updated_at = now()
 WHERE tenant = $1 AND run_id = $2 AND owner = $3 AND status = 'running' AND turns_done = $4 - 1
RETURNING status;

-- name: end_replay_run
-- Run $2 ends early with status $4 (failed, stopped) and why, if owner $3 still holds it.
UPDATE replay_runs SET status = $4, error = $5, detail = $6, updated_at = now()
 WHERE tenant = $1 AND run_id = $2 AND owner = $3 AND status = 'running';

-- name: release_replay_run
-- Owner $3 stops working on run $2 without ending it (the server is shutting down): any process
-- may claim it at once and go on from its last written turn.
UPDATE replay_runs SET owner = NULL, lease_until = NULL, updated_at = now()
 WHERE tenant = $1 AND run_id = $2 AND owner = $3 AND status = 'running';

-- name: cancel_replay_run
-- Waits for the turn being written (its transaction holds the row): the run ends after it.
UPDATE replay_runs SET status = 'cancelled', updated_at = now()
 WHERE tenant = $1 AND run_id = $2 AND status IN ('queued', 'running')
RETURNING run_id;

-- name: conversations_by_metadata
-- Conversations of tenant $1 whose metadata holds the JSON object $2, oldest first, at most $3.
-- Read through readable_payload: no stored metadata can fail the cast.
SELECT conversation_id
  FROM conversations
 WHERE tenant = $1 AND readable_payload(metadata)::jsonb @> $2::jsonb
 ORDER BY created_seq
 LIMIT $3;
