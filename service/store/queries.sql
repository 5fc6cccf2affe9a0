-- Every query convtree runs, named, each opened by a line saying what it is for. Loaded once by
-- service/store/queries.py, which compiles the `:name` parameters to PostgreSQL's $1…$n (a `::type`
-- is a cast, never a parameter): callers pass them by name. Parameters only; callers choose between
-- fixed queries, never build SQL.

-- name: find_api_key
-- The tenant, name and auto-threading default of a key that is not revoked, by the key's digest.
SELECT tenant, name, auto_thread FROM api_keys WHERE key_hash = :key_hash AND revoked_at IS NULL;

-- name: insert_api_key
-- A new key, stored by its digest only.
INSERT INTO api_keys (key_hash, tenant, name) VALUES (:key_hash, :tenant, :name);

-- name: revoke_api_keys
-- Revokes every key of the tenant with that name (its status counts them).
UPDATE api_keys SET revoked_at = now() WHERE tenant = :tenant AND name = :name AND revoked_at IS NULL;

-- name: set_api_key_auto_thread
-- The auto-threading default of every key of the tenant with that name that is not revoked.
UPDATE api_keys SET auto_thread = :auto_thread WHERE tenant = :tenant AND name = :name AND revoked_at IS NULL;

-- name: count_api_keys
-- How many keys are not revoked (a fresh service has none).
SELECT count(*) FROM api_keys WHERE revoked_at IS NULL;

-- name: list_api_keys
-- Every key, revoked or not, oldest first (never the key itself).
SELECT tenant, name, created_at, revoked_at, auto_thread FROM api_keys ORDER BY created_at;

-- name: has_schema_revision
-- Whether the database was migrated at all (alembic's table exists).
SELECT to_regclass('alembic_version') IS NOT NULL;

-- name: schema_revision
-- The migration the database is at.
SELECT version_num FROM alembic_version;

-- name: begin_create
-- The first step of a creation (begin_create in schema.sql): locks, and the event numbers drawn.
SELECT now, seqs FROM begin_create(:tenant, :conversation_id, :count);

-- name: begin_write
-- The first step of a write (begin_write in schema.sql): the locked summary and the event numbers drawn.
SELECT family_id, head_id, message_count, leaf_count, last_seq, last_hash, now, seqs, base_id, base_depth
  FROM begin_write(:tenant, :conversation_id, :count);

-- name: begin_append
-- begin_write, and in the same round trip the messages :ids (and, :with_head, the head) as
-- find_nodes sees them: one row per message found, or one row with no message.
-- Each message's digest key comes with it (a retry compares its content with the digest), and its
-- path digest (a new message's is made from it).
SELECT w.family_id, w.head_id, w.message_count, w.leaf_count, w.last_seq, w.last_hash, w.now, w.seqs,
       w.base_id, w.base_depth,
       -- find_nodes' columns, each prefixed node_ (store/rows.py cuts the row there)
       w.node_id AS node_message_id, w.node_conversation_id, w.node_parent_id, w.node_role, w.node_depth,
       w.node_body_sha256, w.node_payload, w.node_visible, w.node_has_children, b.digest_key AS node_digest_key,
       -- A probe by key for each message (a join may scan the family's paths: tests/integration/test_listing_plans.py):
       -- its event's number, then its path's row by that number.
       (SELECT p.path_digest FROM events e JOIN message_paths p ON p.seq = e.seq
         WHERE e.family_id = w.family_id AND e.message_id = w.node_id) AS node_path_digest
  FROM begin_write(:tenant, :conversation_id, :count, :ids, :with_head) w
  LEFT JOIN bodies b ON b.family_id = w.family_id AND b.message_id = w.node_id;

-- name: read_append
-- begin_append's read without its lock, its numbers or its NOTIFY (read_for_append in schema.sql),
-- for an append the grouped statement writes only if the conversation's last event is still the
-- one read: one row per message found, one row with no message, or no row (no such conversation).
SELECT r.family_id, r.head_id, r.message_count, r.leaf_count, r.last_seq, r.last_hash, r.updated_at,
       r.base_id, r.base_depth,
       -- find_nodes' columns, each prefixed node_ (store/rows.py cuts the row there)
       r.node_id AS node_message_id, r.node_conversation_id, r.node_parent_id, r.node_role, r.node_depth,
       r.node_body_sha256, r.node_payload, r.node_visible, r.node_has_children, b.digest_key AS node_digest_key,
       -- A probe by key: the message's event's number, then its path's row by that number.
       (SELECT p.path_digest FROM events e JOIN message_paths p ON p.seq = e.seq
         WHERE e.family_id = r.family_id AND e.message_id = r.node_id) AS node_path_digest
  FROM read_for_append(:tenant, :conversation_id, :ids, :with_head) r
  LEFT JOIN bodies b ON b.family_id = r.family_id AND b.message_id = r.node_id;

-- name: find_nodes
-- Messages of a family by id as a decision sees them (find_nodes in schema.sql), with their digest
-- keys and path digests.
SELECT n.message_id, n.conversation_id, n.parent_id, n.role, n.depth, n.body_sha256, n.payload,
       n.visible, n.has_children, b.digest_key,
       -- A probe by key for each message (a join may scan the family's paths: tests/integration/test_listing_plans.py):
       -- its event's number, then its path's row by that number.
       (SELECT p.path_digest FROM events e JOIN message_paths p ON p.seq = e.seq
         WHERE e.family_id = :family_id AND e.message_id = n.message_id) AS path_digest
  FROM find_nodes(:family_id, :conversation_id, :ids, :base_id, :base_depth) n
  LEFT JOIN bodies b ON b.family_id = :family_id AND b.message_id = n.message_id;

-- name: find_root
-- The family's root message: its role and body digest (a retried creation compares its system message).
SELECT e.message_id, e.role, e.body_sha256, b.digest_key
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
 WHERE e.family_id = :family_id AND e.type = 'message_appended' AND e.parent_id IS NULL;

-- part: write_events
-- Sealed events and their messages' bodies, written as given: every writer of the log (a creation,
-- an append, the grouped append, a turn, an import) includes this part, so the log's columns are
-- listed once. The statement defines, before it, the steps `event_rows` (seq, tenant,
-- conversation_id, family_id, type, message_id, parent_id, role, depth, body_sha256, payload as
-- text, actor, request_id, created_at, hash, path_digest) and `body_rows` (family_id, message_id,
-- content, digest_key); an event's run is derived by place_message as it is inserted, and a message
-- with a path digest is indexed in message_paths. Written in the
-- statement, not through a function: a PL/pgSQL call cost the grouped append ~40 µs a statement.
new_events AS (
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT e.seq, e.tenant, e.conversation_id, e.family_id, e.type, e.message_id, e.parent_id, e.role,
           e.depth, e.body_sha256, e.payload::json, e.actor, e.request_id, e.created_at, e.hash
      FROM event_rows e
), new_bodies AS (
    INSERT INTO bodies (family_id, message_id, content, digest_key)
    SELECT b.family_id, b.message_id, b.content, b.digest_key
      FROM body_rows b
), new_paths AS (
    INSERT INTO message_paths (seq, tenant, path_digest)
    SELECT e.seq, e.tenant, e.path_digest
      FROM event_rows e
     WHERE e.path_digest IS NOT NULL
)

-- part: write_event_arrays
-- write_events from one array per column (:seqs ... :path_digests for the events, :body_family_ids ...
-- :digest_keys for the bodies), each event (and each body) at the same index in every array.
event_rows AS (
    SELECT *
      FROM unnest(:seqs::bigint[], :tenants::text[], :conversation_ids::uuid[], :family_ids::uuid[],
                  :types::text[], :message_ids::uuid[], :parent_ids::uuid[], :roles::text[],
                  :depths::int[], :body_sha256s::bytea[], :payloads::text[], :actors::text[],
                  :request_ids::text[], :created_ats::timestamptz[], :hashes::bytea[],
                  :path_digests::bytea[])
           AS e(seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,
                body_sha256, payload, actor, request_id, created_at, hash, path_digest)
), body_rows AS (
    SELECT *
      FROM unnest(:body_family_ids::uuid[], :body_ids::uuid[], :contents::text[], :digest_keys::bytea[])
           AS b(family_id, message_id, content, digest_key)
),
-- include: write_events

-- name: store_blobs
-- The large binary parts of bodies just written (:link_ids, :link_digests: which body refers to
-- which part), each kept once per tenant (:blob_digests, :blob_datas), in the write's transaction.
WITH new_blobs AS (
    INSERT INTO blobs (tenant, sha256, data)
    SELECT :tenant::text, d.sha256, d.data
      FROM unnest(:blob_digests::bytea[], :blob_datas::text[]) AS d(sha256, data)
    ON CONFLICT (tenant, sha256) DO NOTHING
)
INSERT INTO body_blobs (family_id, message_id, tenant, sha256)
SELECT :family_id::uuid, l.message_id, :tenant::text, l.sha256
  FROM unnest(:link_ids::uuid[], :link_digests::bytea[]) AS l(message_id, sha256);

-- name: find_blobs
-- The parts the bodies of messages :message_ids (of family :family_id) refer to: a read puts them
-- back into the bodies. Only a body's own references are served.
SELECT DISTINCT l.sha256, b.data
  FROM body_blobs l
  JOIN blobs b ON b.tenant = l.tenant AND b.sha256 = l.sha256
 WHERE l.family_id = :family_id AND l.message_id = ANY(:message_ids::uuid[]);

-- part: conversation_row
-- A new conversation's summary: the statement that ends every creation (insert_conversation, create_turn).
INSERT INTO conversations (tenant, conversation_id, family_id, title, metadata, head_id,
                           message_count, leaf_count, created_seq, created_at, updated_at,
                           last_seq, last_hash,
                           forked_from_conversation_id, forked_from_message_id, base_depth)
SELECT :tenant::text, :conversation_id::uuid, :family_id::uuid, :title::text, :metadata::json,
       :head_id::uuid, :message_count::int, :leaf_count::int, :created_seq::bigint,
       :created_at::timestamptz, :created_at::timestamptz, :last_seq::bigint, :last_hash::bytea,
       :forked_from_conversation_id::uuid, :forked_from_message_id::uuid, :base_depth::int

-- name: insert_conversation
-- A new conversation (or fork): its events and bodies (the part write_events), then its summary.
WITH
-- include: write_event_arrays
-- include: conversation_row
;

-- name: append_events
-- Events of one locked conversation and their bodies (the part write_events), and the conversation's
-- new summary.
WITH
-- include: write_event_arrays
UPDATE conversations
   SET head_id = :head_id, message_count = :message_count, leaf_count = :leaf_count,
       updated_at = :updated_at, last_seq = :last_seq, last_hash = :last_hash
 WHERE tenant = :tenant AND conversation_id = :conversation_id;

-- name: append_messages_if_unchanged
-- Whole appends, one message each to several conversations (of any tenants), in one statement,
-- for writers that already know those conversations' states (service/app/messages.py): the
-- feed lock of every tenant involved (shared), then each conversation's row, as begin_write takes
-- them; then each message (its event and body by the part write_events, and the conversation's new
-- summary, the message as head) is written only if its conversation's last event is still
-- `known_seq` and none is stamped later than it. A row locked by another writer is about to move
-- on: SKIP LOCKED passes it over instead of waiting. Event numbers are drawn under both locks, as
-- begin_write draws them. A message with an Idempotency-Key (:keys, NULL for none) is written only
-- if its key is claimed by the same statement: the key's row is stored with its fingerprint and
-- the 201 response, :response_heads || the event number || :response_tails (the answer's JSON, made
-- before the number was drawn); a key already taken writes nothing (its writer replays it the
-- locked way). Returns (tenant, conversation, event number) of each message written; a
-- conversation may appear once at most. One array per column, a message at the same index in each.
WITH batch AS MATERIALIZED (
    SELECT tenant, conversation_id, family_id, message_id, parent_id, role, depth, body_sha256, payload,
           actor, request_id, created_at, hash, content, message_count, leaf_count, known_seq, digest_key,
           key, fingerprint, response_head, response_tail, path_digest
      FROM unnest(:tenants::text[], :conversation_ids::uuid[], :family_ids::uuid[], :message_ids::uuid[],
                  :parent_ids::uuid[], :roles::text[], :depths::int[], :body_sha256s::bytea[],
                  :payloads::text[], :actors::text[], :request_ids::text[], :created_ats::timestamptz[],
                  :hashes::bytea[], :contents::text[], :message_counts::int[], :leaf_counts::int[],
                  :known_seqs::bigint[], :digest_keys::bytea[], :keys::text[], :fingerprints::bytea[],
                  :response_heads::bytea[], :response_tails::bytea[], :path_digests::bytea[])
           AS b(tenant, conversation_id, family_id, message_id, parent_id, role, depth, body_sha256,
                payload, actor, request_id, created_at, hash, content, message_count, leaf_count,
                known_seq, digest_key, key, fingerprint, response_head, response_tail, path_digest)
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
           b.message_count, b.leaf_count, b.digest_key, b.key, b.fingerprint, b.response_head,
           b.response_tail, b.path_digest, nextval('events_seq') AS seq
      FROM batch b
      JOIN locked l ON l.tenant = b.tenant AND l.conversation_id = b.conversation_id
     WHERE l.last_seq = b.known_seq AND l.updated_at <= b.created_at
), claimed AS (
    INSERT INTO idempotency_keys (tenant, key, fingerprint, status, response)
    SELECT u.tenant, u.key, u.fingerprint, 201,
           u.response_head || convert_to(u.seq::text, 'UTF8') || u.response_tail
      FROM unchanged u
     WHERE u.key IS NOT NULL
    ON CONFLICT (tenant, key) DO NOTHING
    RETURNING tenant, key
), going AS MATERIALIZED (
    SELECT u.*
      FROM unchanged u
     WHERE u.key IS NULL OR (u.tenant, u.key) IN (SELECT c.tenant, c.key FROM claimed c)
), event_rows AS (
    -- A message's path digest was made from its parent's as its writer remembered it: written only
    -- if the parent's is still stored. An erasure above the parent (through another conversation,
    -- too: a fork's source) removes the digests of every message under the erased one.
    SELECT u.seq, u.tenant, u.conversation_id, u.family_id, 'message_appended'::text AS type, u.message_id,
           u.parent_id, u.role, u.depth, u.body_sha256, u.payload, u.actor, u.request_id, u.created_at, u.hash,
           CASE WHEN u.parent_id IS NULL
                  OR EXISTS (SELECT 1 FROM events e JOIN message_paths p ON p.seq = e.seq
                              WHERE e.family_id = u.family_id AND e.message_id = u.parent_id)
                THEN u.path_digest END AS path_digest
      FROM going u
), body_rows AS (
    SELECT u.family_id, u.message_id, u.content, u.digest_key FROM going u
),
-- include: write_events
UPDATE conversations c
   SET head_id = u.message_id, message_count = u.message_count, leaf_count = u.leaf_count,
       updated_at = u.created_at, last_seq = u.seq, last_hash = u.hash
  FROM going u
 WHERE c.tenant = u.tenant AND c.conversation_id = u.conversation_id
-- Delivered at commit, and only then, as begin_write's: wakes the tenants' feed followers.
RETURNING c.tenant, c.conversation_id, u.seq,
          pg_notify('convtree_events', encode(sha256(convert_to(c.tenant, 'UTF8')), 'hex'));

-- name: find_thread
-- Auto-threading (service/domain/threads.py): of the path digests :digests (a sent history's prefixes,
-- shortest first), the longest that names a path of the tenant, and the message it ends at, in the
-- conversation that wrote it (the latest, where equal paths were written more than once). One probe
-- of message_paths_lookup per digest (by its key, path_key; the tenant and the whole digest compared
-- on the row), longest first, stopping at the first found: the digests are sorted before the join, so that the
-- LIMIT stops the loop (a client resending its history has all but its last message or two stored:
-- two or three probes). The message is its event's, by number.
SELECT d.n, m.conversation_id, m.message_id
  FROM (SELECT u.digest, u.n
          FROM unnest(:digests::bytea[]) WITH ORDINALITY AS u(digest, n)
         ORDER BY u.n DESC) d
 CROSS JOIN LATERAL (SELECT e.conversation_id, e.message_id
                       FROM events e
                      -- A probe by key, the event's number, once the path is found.
                      WHERE e.seq = (SELECT p.seq
                                       FROM message_paths p
                                      WHERE path_key(p.tenant, p.path_digest) = path_key(:tenant, d.digest)
                                        AND p.tenant = :tenant AND p.path_digest = d.digest
                                      ORDER BY p.seq DESC
                                      LIMIT 1)) m
 ORDER BY d.n DESC
 LIMIT 1;

-- name: get_conversation
-- A conversation's summary row (and the family and fork base its messages are read with).
SELECT conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_at, updated_at, last_seq, created_seq,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM conversations
 WHERE tenant = :tenant AND conversation_id = :conversation_id;

-- name: list_conversations
-- A page of the tenant's conversations, newest first; :before_seq is the created_seq of the last
-- conversation of the previous page, or NULL.
SELECT conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_at, updated_at, last_seq, created_seq,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM conversations
 WHERE tenant = :tenant AND (:before_seq::bigint IS NULL OR created_seq < :before_seq)
 ORDER BY created_seq DESC
 LIMIT :limit;

-- name: get_message
-- A message visible in conversation :conversation_id: its own, written by event :upto, or on the
-- path a fork inherited (root to its base :base_id, :base_depth deep); its body as served_body serves it.
SELECT m.seq, m.conversation_id, m.message_id, m.parent_id, m.role, m.depth, m.payload,
       m.actor, m.request_id, m.created_at,
       s.content, s.redacted_at, s.redacted_by, s.redaction_reason, s.redaction_erased
  FROM events m
  LEFT JOIN LATERAL served_body(m.family_id, m.message_id) s ON true
 WHERE m.family_id = :family_id AND m.message_id = :message_id
   AND ((m.conversation_id = :conversation_id AND m.seq <= :upto)
        OR on_base_path(:family_id, :base_id, :base_depth, m.message_id, m.depth));

-- name: list_children
-- The children of message :parent_id (:depth deep) visible in conversation :conversation_id up to
-- event :upto: its own and, when the parent is inherited (:base_id: the fork's base, passed only
-- then), the next message on the inherited path, found by a walk up from the base (it is older than
-- any of the fork's, so first).
SELECT m.seq, m.conversation_id, m.message_id, m.parent_id, m.role, m.depth, m.payload,
       m.actor, m.request_id, m.created_at,
       s.content, s.redacted_at, s.redacted_by, s.redaction_reason, s.redaction_erased
  FROM (SELECT w.seq, w.conversation_id, w.message_id, w.parent_id, w.role, w.depth, w.payload,
               w.actor, w.request_id, w.created_at
          FROM walk_up(:family_id, :base_id, :depth + 1) w
         WHERE w.depth = :depth + 1 AND w.parent_id = :parent_id
        UNION ALL
        -- The conversation's own children: the next message of the parent's run (its first child
        -- in its own conversation, events_runs) and the runs starting under it (events_branches),
        -- each probed by its whole key; the conversation is checked outside the scans (OFFSET 0
        -- keeps it there), so events_conversation cannot serve them. On a never-analyzed table the
        -- planner may otherwise read the whole conversation.
        SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
               e.actor, e.request_id, e.created_at
          FROM events p
         CROSS JOIN LATERAL (
               SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth,
                      e.payload, e.actor, e.request_id, e.created_at
                 FROM events e
                WHERE e.family_id = :family_id AND e.run_id = p.run_id AND e.depth = :depth + 1
                  AND e.type = 'message_appended'
               UNION ALL
               SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth,
                      e.payload, e.actor, e.request_id, e.created_at
                 FROM events e
                WHERE e.family_id = :family_id AND e.parent_run_id = p.run_id AND e.depth = :depth + 1
                  AND e.run_id = e.message_id
               OFFSET 0) e
         WHERE p.family_id = :family_id AND p.message_id = :parent_id
           AND e.conversation_id = :conversation_id AND e.seq <= :upto) m
  LEFT JOIN LATERAL served_body(:family_id, m.message_id) s ON true
 ORDER BY m.seq;

-- name: list_messages
-- Every message visible in conversation :conversation_id in the order written: a fork's inherited
-- path (root to its base :base_id; all of it older than the fork), then the conversation's own up
-- to event :upto.
SELECT m.seq, m.conversation_id, m.message_id, m.parent_id, m.role, m.depth, m.payload,
       m.actor, m.request_id, m.created_at,
       s.content, s.redacted_at, s.redacted_by, s.redaction_reason, s.redaction_erased
  FROM (SELECT w.seq, w.conversation_id, w.message_id, w.parent_id, w.role, w.depth, w.payload,
               w.actor, w.request_id, w.created_at
          FROM walk_up(:family_id, :base_id, 0) w
        UNION ALL
        SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
               e.actor, e.request_id, e.created_at
          FROM events e
         WHERE e.family_id = :family_id AND e.conversation_id = :conversation_id
           AND e.type = 'message_appended' AND e.seq <= :upto) m
  LEFT JOIN LATERAL served_body(:family_id, m.message_id) s ON true
 ORDER BY m.seq;

-- name: list_leaves
-- Branch tips of conversation :conversation_id up to event :upto: its own messages with no child of its own by then,
-- and a fork's base :base_id until the fork writes under it (the inherited messages above the base never
-- are: each has the next message on the path as a child).
-- One pass, no join: every candidate tip comes with its place, every own message's parent comes
-- as a bare id, and a tip is an id that no row names as a parent. A probe of events for each
-- message's children can be planned as a scan of the family per message when the table was never
-- analyzed (the estimate is then one row), which makes the listing quadratic in the tree's size;
-- grouping is linear (or n log n sorted) whatever the statistics say.
SELECT k.id AS message_id, max(k.depth) AS depth, max(k.seq) AS seq, max(k.created_at) AS created_at
  FROM (SELECT e.message_id AS id, e.depth, e.seq, e.created_at
          FROM events e
         WHERE e.family_id = :family_id AND e.message_id = :base_id
        UNION ALL
        SELECT e.message_id, e.depth, e.seq, e.created_at
          FROM events e
         WHERE e.family_id = :family_id AND e.conversation_id = :conversation_id AND e.type = 'message_appended' AND e.seq <= :upto
        UNION ALL
        SELECT e.parent_id, NULL, NULL, NULL
          FROM events e
         WHERE e.family_id = :family_id AND e.conversation_id = :conversation_id AND e.type = 'message_appended' AND e.seq <= :upto
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
  FROM message_path(:family_id, :conversation_id, :message_id, :base_id, :base_depth, :upto) p;

-- name: message_path_served
-- message_path's rows as a context read serves them. A message on the path that says nothing but a
-- string (its event's payload is the empty '{"metadata":{}}': no name, no tool call, no generation,
-- no metadata), is not redacted and is not a tool message comes with `tail`: its view's JSON from
-- `,"metadata"` to the end, as msgspec writes a views.PathMessage (the fields in their order,
-- created_at in UTC with microseconds unless they are 0), and neither its payload nor its time;
-- convtree writes the rest (role and content, whose escaping is cheaper in msgspec than in
-- PostgreSQL). Every other row comes as message_path serves it, for the typed view. Only ids,
-- numbers and that time go into `tail`: no stored string is cut or quoted here.
SELECT p.seq, p.conversation_id, p.message_id, p.parent_id, p.role, p.depth,
       CASE WHEN NOT k.served THEN p.payload END AS payload,
       CASE WHEN NOT k.served THEN p.created_at END AS created_at,
       CASE WHEN p.redacted_at IS NULL THEN p.content END AS content,
       p.redacted_at, p.redacted_by, p.redaction_reason, p.redaction_erased,
       p.sibling_count, p.sibling_position, p.on_path,
       CASE WHEN k.served THEN convert_to(
           ',"metadata":{},"id":"' || p.message_id::text || '","conversation_id":"' || p.conversation_id::text
           || '","parent_message_id":' || coalesce('"' || p.parent_id::text || '"', 'null')
           || ',"depth":' || p.depth::text || ',"seq":' || p.seq::text
           || ',"created_at":"' || replace(to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '.000000Z', 'Z')
           || '","sibling_count":' || p.sibling_count::text || ',"sibling_position":' || p.sibling_position::text || '}',
           'UTF8') END AS tail
  FROM message_path(:family_id, :conversation_id, :message_id, :base_id, :base_depth, :upto) p
 CROSS JOIN LATERAL (SELECT p.on_path AND p.redacted_at IS NULL AND p.content IS NOT NULL AND p.role <> 'tool'
                            AND p.payload::text = '{"metadata":{}}' AS served) k;

-- name: call_group_tail
-- The end of the path at message :message_id (one the conversation sees) that a tool message
-- appended under it must answer: the message, and while the message read is a tool message, its
-- parent, up to :limit messages; served as get_message serves a message, root first. One index
-- probe (events_message) per message: a message that is not a tool message costs one row.
WITH RECURSIVE up AS (
    SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
           e.actor, e.request_id, e.created_at, 1 AS n
      FROM events e
     WHERE e.family_id = :family_id AND e.message_id = :message_id AND e.type = 'message_appended'
    UNION ALL
    -- LATERAL ... LIMIT 1: the parent by its key, once per level (as walk_up does).
    SELECT parent.seq, parent.conversation_id, parent.message_id, parent.parent_id, parent.role,
           parent.depth, parent.payload, parent.actor, parent.request_id, parent.created_at, up.n + 1
      FROM up
     CROSS JOIN LATERAL (
           SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
                  e.actor, e.request_id, e.created_at
             FROM events e
            WHERE e.family_id = :family_id AND e.message_id = up.parent_id AND e.type = 'message_appended'
            LIMIT 1
     ) parent
     WHERE up.role = 'tool' AND up.n < :limit
)
SELECT m.seq, m.conversation_id, m.message_id, m.parent_id, m.role, m.depth, m.payload,
       m.actor, m.request_id, m.created_at,
       s.content, s.redacted_at, s.redacted_by, s.redaction_reason, s.redaction_erased
  FROM up m
  LEFT JOIN LATERAL served_body(:family_id, m.message_id) s ON true
 ORDER BY m.depth;

-- name: claim_idempotency_key
-- Waits while another transaction holds the same key; returns a row only if this one claimed it.
INSERT INTO idempotency_keys (tenant, key, fingerprint) VALUES (:tenant, :key, :fingerprint)
ON CONFLICT (tenant, key) DO NOTHING
RETURNING true;

-- name: find_idempotency_key
-- Locked: retries of one key act on what it came to one at a time (a turn's retry may launch its
-- reply again, and records that in this row).
SELECT fingerprint, status, response, conversation_id, user_message_id, reply_id
  FROM idempotency_keys WHERE tenant = :tenant AND key = :key
   FOR UPDATE;

-- name: complete_idempotency_key
-- Stores the response a keyed request came to, for its retries to replay.
UPDATE idempotency_keys SET status = :status, response = :response WHERE tenant = :tenant AND key = :key;

-- name: launch_idempotency_key
-- Records, in a keyed turn's row, the reply it launched (a retry reads the outcome from the log).
UPDATE idempotency_keys SET conversation_id = :conversation_id, user_message_id = :user_message_id, reply_id = :reply_id
 WHERE tenant = :tenant AND key = :key;

-- name: schema_version
-- The migration the database is at (/readyz reports it).
SELECT version_num FROM alembic_version;

-- name: grant_service_role
-- Run as the owner, after migrating (service/store/migrate.py), under migration_lock.
SELECT grant_service_role(:role);

-- name: migration_lock
-- One migrator at a time, as alembic/env.py holds it: two processes granting at once would both
-- update the same catalog rows ("tuple concurrently updated").
SELECT pg_advisory_xact_lock(:key);

-- --- Replay and rebuild (forks, as_of, `convtree rebuild`) --------------------------------------

-- name: conversation_as_of
-- A conversation's summary as it stood after event :upto or, when :upto is NULL, after its newest event
-- stamped at or before :at, folded from the log. No row: it did not exist yet (or is not the tenant's).
SELECT conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_at, updated_at, last_seq, created_seq,
       forked_from_conversation_id, forked_from_message_id, base_depth, tenant, last_hash
  FROM fold_conversations(
           ARRAY[:conversation_id::uuid],
           coalesce(:upto::bigint, (SELECT max(e.seq) FROM events e
                                  WHERE e.conversation_id = :conversation_id AND e.tenant = :tenant AND e.created_at <= :at)))
 WHERE tenant = :tenant;

-- name: rebuild_conversations_lock
-- Writers wait (and see the rebuilt rows once they may go on); readers keep reading the old rows.
LOCK TABLE conversations IN EXCLUSIVE MODE;

-- name: rebuild_conversations_clear
-- The rows of a batch of conversations, refilled right after in the same savepoint.
DELETE FROM conversations WHERE conversation_id = ANY (:keys::uuid[]);

-- name: rebuild_conversations_prune
-- Rows of conversations the log does not hold (:keys: every conversation it holds).
DELETE FROM conversations WHERE conversation_id <> ALL (:keys::uuid[]);

-- name: rebuild_conversations_plan
-- Every conversation in the log, with its number of events (the rebuild's progress is in events).
SELECT conversation_id AS key, count(*) AS events FROM events GROUP BY conversation_id ORDER BY conversation_id;

-- name: rebuild_conversations_fill
-- The rows of a batch of conversations, folded from the log by fold_conversations (schema.sql).
INSERT INTO conversations (tenant, conversation_id, family_id, title, metadata, head_id,
                           message_count, leaf_count, created_seq, created_at, updated_at,
                           last_seq, last_hash,
                           forked_from_conversation_id, forked_from_message_id, base_depth)
SELECT tenant, conversation_id, family_id, title, metadata, head_id,
       message_count, leaf_count, created_seq, created_at, updated_at,
       last_seq, last_hash,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM fold_conversations(:keys::uuid[], 9223372036854775807);

-- ---------------------------------------------------------------------------------------------
-- History: the event feeds, audit, redaction and erasure, export and import (service/store/history.py).
-- A conversation's events are always selected by family_id and conversation_id together: a
-- conversation id is unique only within its tenant, a family id everywhere.
-- ---------------------------------------------------------------------------------------------

-- name: conversation_events
-- A page of one conversation's events after event :after, in order (its feed).
SELECT seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,
       body_sha256, payload, actor, request_id, created_at, hash
  FROM events
 WHERE family_id = :family_id AND conversation_id = :conversation_id AND seq > :after
 ORDER BY seq
 LIMIT :limit;

-- name: feed_frontier
-- A statement of its own: the tenant lock it takes ends with it (see feed_frontier in schema.sql).
SELECT feed_frontier(:tenant, :lock_timeout);

-- name: tenant_events
-- Only up to the frontier :frontier: past it, an earlier number may still be in flight.
SELECT seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,
       body_sha256, payload, actor, request_id, created_at, hash
  FROM events
 WHERE tenant = :tenant AND seq > :after AND seq <= :frontier
 ORDER BY seq
 LIMIT :limit;

-- name: audit_events
-- Each event with the digest of its message's body as it is stored now (NULL: no body), computed
-- here as body_digest computes it (UTF-8 bytes, after the body's key if it has one), so the bodies
-- themselves never leave the server.
SELECT e.seq, e.tenant, e.conversation_id, e.family_id, e.type, e.message_id, e.parent_id, e.role,
       e.depth, e.body_sha256, e.payload, e.actor, e.request_id, e.created_at, e.hash,
       sha256(coalesce(b.digest_key, '') || convert_to(b.content, 'UTF8')) AS body_digest
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
 WHERE e.family_id = :family_id AND e.conversation_id = :conversation_id
 ORDER BY e.seq;

-- name: audit_summary
-- The conversation's summary row as stored; the audit compares it with conversation_as_of's fold.
SELECT tenant, conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_seq, created_at, updated_at, last_seq, last_hash,
       forked_from_conversation_id, forked_from_message_id, base_depth
  FROM conversations
 WHERE tenant = :tenant AND conversation_id = :conversation_id;

-- name: export_events
-- A page of the export, after event :after. A redacted message's content (and its digest key) is
-- withheld from exports as from every other read (served_body).
SELECT e.seq, e.tenant, e.conversation_id, e.family_id, e.type, e.message_id, e.parent_id, e.role,
       e.depth, e.body_sha256, e.payload, e.actor, e.request_id, e.created_at, e.hash,
       s.content, s.digest_key,
       CASE WHEN s.content IS NOT NULL THEN
           (SELECT json_object_agg(encode(l.sha256, 'hex'), b.data)::text
              FROM body_blobs l JOIN blobs b ON b.tenant = l.tenant AND b.sha256 = l.sha256
             WHERE l.family_id = e.family_id AND l.message_id = e.message_id) END AS blobs
  FROM events e
  LEFT JOIN LATERAL served_body(e.family_id, e.message_id) s ON e.type = 'message_appended'
 WHERE e.family_id = :family_id AND e.conversation_id = :conversation_id AND e.seq > :after
 ORDER BY e.seq
 LIMIT :limit;

-- name: find_redaction
-- A message's latest redaction (no row: not redacted).
SELECT redacted_at, redacted_by, redaction_reason, redaction_erased FROM message_redaction(:family_id, :message_id);

-- name: find_body
-- A message's stored body, redacted or not (redaction and erasure read it).
SELECT content FROM bodies WHERE family_id = :family_id AND message_id = :message_id;

-- name: erase_body
-- Allowed by the bodies_erasable trigger only after the erasing event is written. Its references
-- to parts out of line go with it (body_blobs: ON DELETE CASCADE); returns the parts it referred to.
-- The path digests of the message and of every message under it (message_paths) go in the same
-- statement: each would confirm a guess of the erased text. The messages under it are found by
-- runs, as list_children finds children (the next message of a run, and the runs starting under
-- it), in every conversation of the family.
WITH RECURSIVE below AS (
    SELECT e.seq, e.run_id, e.depth
      FROM events e
     WHERE e.family_id = :family_id AND e.message_id = :message_id
    UNION ALL
    SELECT c.seq, c.run_id, c.depth
      FROM below b
     CROSS JOIN LATERAL (
           SELECT e.seq, e.run_id, e.depth
             FROM events e
            WHERE e.family_id = :family_id AND e.run_id = b.run_id AND e.depth = b.depth + 1
              AND e.type = 'message_appended'
           UNION ALL
           SELECT e.seq, e.run_id, e.depth
             FROM events e
            WHERE e.family_id = :family_id AND e.parent_run_id = b.run_id AND e.depth = b.depth + 1
              AND e.run_id = e.message_id
     ) c
), unindexed AS (
    -- By key, as an array: a join may be planned as a scan of every path.
    DELETE FROM message_paths p WHERE p.seq = ANY (ARRAY(SELECT b.seq FROM below b))
), links AS (
    SELECT tenant, sha256 FROM body_blobs WHERE family_id = :family_id AND message_id = :message_id
), erased AS (
    DELETE FROM bodies WHERE family_id = :family_id AND message_id = :message_id
)
SELECT tenant, sha256 FROM links;

-- name: drop_unreferenced_blobs
-- After an erasure: the parts it referred to that no body of the tenant (live, or redacted and
-- kept) refers to any more are deleted.
DELETE FROM blobs b
 WHERE b.tenant = :tenant AND b.sha256 = ANY(:digests::bytea[])
   AND NOT EXISTS (SELECT 1 FROM body_blobs l WHERE l.tenant = b.tenant AND l.sha256 = b.sha256);

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
-- Bytes on disk of the tables that hold message content, with their TOAST tables and indexes.
SELECT coalesce(sum(pg_total_relation_size(c)), 0)::bigint
  FROM unnest(ARRAY['bodies'::regclass, 'idempotency_keys'::regclass]) AS c;

-- name: find_quoting_responses
-- Stored responses of the tenant that may quote a message: they contain its id or its content
-- (:id_text, :content_text: both as they appear inside a JSON string, which is how responses are stored).
SELECT key, response
  FROM idempotency_keys
 WHERE tenant = :tenant AND response IS NOT NULL
   AND (position(:id_text::bytea IN response) > 0 OR (:content_text::bytea IS NOT NULL AND position(:content_text::bytea IN response) > 0));

-- name: replace_response
-- A stored response rewritten without the content it quoted (erasure).
UPDATE idempotency_keys SET response = :response WHERE tenant = :tenant AND key = :key;

-- name: fork_base
-- The message a fork was taken at, if conversation :source_id of tenant :tenant (in family :family_id) shows it, and the
-- path root→base (message id, depth) it would inherit.
SELECT w.message_id, w.depth
  FROM walk_up(:family_id, :base_id, 0) w
 WHERE EXISTS (SELECT 1 FROM events e
                 JOIN conversations c ON c.tenant = :tenant AND c.conversation_id = :source_id
                WHERE e.family_id = :family_id AND e.message_id = :base_id AND e.type = 'message_appended'
                  AND (e.conversation_id = :source_id
                       OR on_base_path(:family_id, c.forked_from_message_id, c.base_depth, e.message_id, e.depth)));

-- name: import_events
-- Imported events and their bodies (the part write_events): events keep what their hashes
-- cover (actor, request id, time, payload text) and get this database's numbers, tenant and family.
WITH
-- include: write_event_arrays
SELECT count(*) FROM event_rows;

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
  FROM fold_conversations(ARRAY[:conversation_id]::uuid[], :upto) f
 WHERE f.family_id = :family_id AND f.tenant = :tenant
RETURNING last_hash;

-- name: ping
-- The feed listener's idle probe: a dead connection is otherwise silent.
SELECT 1;

-- ---------------------------------------------------------------------------------------------
-- Turns: replies in flight (pending_replies, schema.sql), for service/store/pending.py.
-- ---------------------------------------------------------------------------------------------

-- part: register_reply
-- Reply :reply_id, answering :user_message_id, registered as pending under :owner's lease (every
-- statement that registers a reply: register_pending_reply, append_turn, create_turn).
registered AS (
    INSERT INTO pending_replies (family_id, reply_id, tenant, conversation_id, user_message_id, provider,
                                 model, actor, request_id, owner, expires_at)
    VALUES (:family_id, :reply_id, :tenant, :conversation_id, :user_message_id, :provider, :model,
            :actor, :request_id, :owner, now() + make_interval(secs => :lease_seconds))
)

-- part: record_response
-- The record of a turn that is a response (the Responses API: service/store/responses.py), written
-- by the statement that writes the turn; none when :response_request is NULL (another door's turn).
-- The response's id is its reply's; its tenant, family and conversation are the turn's.
recorded_response AS (
    INSERT INTO responses (tenant, response_id, family_id, conversation_id, parent_id, input_ids,
                           previous_response_id, in_conversation, model, request, store)
    SELECT :tenant::text, :reply_id::uuid, :family_id::uuid, :conversation_id::uuid, :response_parent_id::uuid,
           :response_input_ids::uuid[], :previous_response_id::uuid, :in_conversation::boolean,
           :response_model::text, :response_request::bytea, :response_store::boolean
     WHERE :response_request::bytea IS NOT NULL
)

-- name: register_pending_reply
-- Registers reply :reply_id as pending and, in the same round trip, returns the replies already pending
-- that are message :around or answer it (the new row is not among them: one statement, one snapshot).
WITH
-- include: register_reply
SELECT reply_id, user_message_id
  FROM pending_replies
 WHERE :around::uuid IS NOT NULL AND family_id = :family_id AND (reply_id = :around OR user_message_id = :around);

-- name: find_pending_reply
-- A reply still being generated, as it was registered.
SELECT family_id, reply_id, tenant, conversation_id, user_message_id, provider, model, actor, request_id
  FROM pending_replies
 WHERE family_id = :family_id AND reply_id = :reply_id;

-- name: is_pending_reply
-- Whether a reply is still being generated.
SELECT EXISTS (SELECT 1 FROM pending_replies WHERE family_id = :family_id AND reply_id = :reply_id);

-- name: finish_pending_reply
-- Only the owner closes its reply, and only while the row is there: a swept row means the reply
-- was already closed out with turn_failed and must not appear after all. The notification, sent
-- at the commit that records the reply, wakes its followers (service/store/notify.py).
DELETE FROM pending_replies
 WHERE family_id = :family_id AND reply_id = :reply_id AND owner = :owner
RETURNING reply_id, pg_notify('convtree_replies', reply_id::text);

-- name: expire_pending_reply
-- Removes a pending reply whose lease ran out (its owner died); no row: its owner finished it.
-- Notifies its followers as finish_pending_reply does.
DELETE FROM pending_replies
 WHERE family_id = :family_id AND reply_id = :reply_id AND expires_at < now()
RETURNING reply_id, pg_notify('convtree_replies', reply_id::text);

-- name: renew_pending_leases
-- Only the replies a task of owner :owner is still working on (:reply_ids): a row its task left behind (it
-- died, or gave up) runs out and is closed out by the sweep, however busy the process is. Returns
-- the renewed replies someone asked to cancel.
UPDATE pending_replies SET expires_at = now() + make_interval(secs => :lease_seconds)
 WHERE owner = :owner AND reply_id = ANY(:reply_ids::uuid[])
RETURNING reply_id, cancel_requested;

-- name: request_reply_cancel
-- Asks the owner of a pending reply to stop it; returns the owner, or no row if the reply is no
-- longer pending. The owner hears it at the commit (every process listens; service/store/notify.py),
-- and reads the flag anyway with its next checkpoint or renewal (a notification can go unheard).
UPDATE pending_replies SET cancel_requested = true
 WHERE family_id = :family_id AND reply_id = :reply_id
RETURNING owner, pg_notify('convtree_reply_cancels', reply_id::text);

-- name: checkpoint_reply
-- Writes checkpoint :chunk of a reply's progress, only while owner :owner still holds the reply,
-- and renews its lease in the same statement: the row lock the renewal takes orders this write
-- against the sweep (expire_pending_reply), so a chunk is either written before the sweep reads
-- the chunks or not at all. No row: the reply is no longer this owner's. Else whether a cancel
-- was asked. A written checkpoint wakes the reply's followers (service/store/notify.py).
WITH renewed AS (
    UPDATE pending_replies SET expires_at = now() + make_interval(secs => :lease_seconds)
     WHERE family_id = :family_id AND reply_id = :reply_id AND owner = :owner
    RETURNING cancel_requested
), written AS (
    INSERT INTO reply_chunks (family_id, reply_id, chunk, pieces, started)
    SELECT :family_id::uuid, :reply_id::uuid, :chunk::integer, :pieces::bytea, :started::bytea FROM renewed
)
SELECT cancel_requested, pg_notify('convtree_replies', :reply_id::text) FROM renewed;

-- name: add_reply_chunk
-- The last checkpoint of a reply whose progress is kept (a background response), written in the
-- transaction that records the reply.
INSERT INTO reply_chunks (family_id, reply_id, chunk, pieces, started)
VALUES (:family_id, :reply_id, :chunk, :pieces, :started);

-- name: reply_chunks
-- A reply's checkpoints from :after_chunk on, in order.
SELECT chunk, pieces, started, written_at
  FROM reply_chunks
 WHERE family_id = :family_id AND reply_id = :reply_id AND chunk >= :after_chunk
 ORDER BY chunk;

-- name: drop_reply_chunks
-- A reply's progress, once it is recorded and not kept.
DELETE FROM reply_chunks WHERE family_id = :family_id AND reply_id = :reply_id;

-- name: pending_reply_state
-- Whether a reply is pending and, if it is, its start and lease (a stream following it).
SELECT started_at, expires_at, cancel_requested
  FROM pending_replies
 WHERE family_id = :family_id AND reply_id = :reply_id;

-- name: expired_pending_replies
-- The pending replies whose lease ran out, oldest first: the sweep closes them out with turn_failed.
SELECT family_id, reply_id, tenant, conversation_id, user_message_id, provider, model, actor, request_id
  FROM pending_replies
 WHERE expires_at < now()
 ORDER BY expires_at
 LIMIT :limit;

-- name: append_turn
-- append_events and register_pending_reply in one round trip, for a turn whose reply was launched
-- before it is registered (service/app/turn/opening.py): the turn's messages with the conversation's
-- new summary, its reply :reply_id, answering :user_message_id, registered as pending, and the
-- response's record if the turn is one (the part record_response); returns the replies already
-- pending that are message :around or answer it.
WITH
-- include: write_event_arrays
, new_summary AS (
    UPDATE conversations
       SET head_id = :head_id, message_count = :message_count, leaf_count = :leaf_count,
           updated_at = :updated_at, last_seq = :last_seq, last_hash = :last_hash
     WHERE tenant = :tenant AND conversation_id = :conversation_id
),
-- include: register_reply
,
-- include: record_response
SELECT reply_id, user_message_id
  FROM pending_replies
 WHERE :around::uuid IS NOT NULL AND family_id = :family_id AND (reply_id = :around OR user_message_id = :around);

-- name: create_turn
-- insert_conversation and register_pending_reply in one round trip, for a turn that creates its
-- conversation (service/app/turn/chat.py, new_conversation): its events, bodies and summary, its
-- reply :reply_id, answering :user_message_id, registered as pending, and the response's record if
-- the turn is one (the part record_response).
WITH
-- include: write_event_arrays
,
-- include: register_reply
,
-- include: record_response
-- include: conversation_row
;

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
VALUES (:tenant, :run_id, :batch_id, :source_conversation_id, :target_conversation_id, :anchor_id,
        :destination, :plan, 'queued', :turns_total, :actor, :request_id)
RETURNING created_at, updated_at;

-- name: get_replay_run
-- A run of :tenant, as its caller and its worker read it.
SELECT tenant, run_id, batch_id, source_conversation_id, target_conversation_id, anchor_id, destination, plan, status,
       turns_total, turns_done, prompt_tokens, completion_tokens, error, detail, actor, request_id,
       created_at, updated_at
  FROM replay_runs
 WHERE tenant = :tenant AND run_id = :run_id;

-- name: list_batch_replay_runs
-- The runs of batch :batch_id, in the order they were started.
SELECT tenant, run_id, batch_id, source_conversation_id, target_conversation_id, anchor_id, destination, plan, status,
       turns_total, turns_done, prompt_tokens, completion_tokens, error, detail, actor, request_id,
       created_at, updated_at
  FROM replay_runs
 WHERE tenant = :tenant AND batch_id = :batch_id
 ORDER BY created_at, run_id;

-- name: list_conversation_replay_runs
-- The runs of :tenant that replay :conversation_id or wrote into it, newest first, at most :limit;
-- with a page's cursor, those before (:before_at, :before_id). One index for each side
-- (replay_runs_source, replay_runs_target).
SELECT tenant, run_id, batch_id, source_conversation_id, target_conversation_id, anchor_id, destination, plan, status,
       turns_total, turns_done, prompt_tokens, completion_tokens, error, detail, actor, request_id,
       created_at, updated_at
  FROM replay_runs
 WHERE tenant = :tenant
   AND (source_conversation_id = :conversation_id OR target_conversation_id = :conversation_id)
   AND (:before_at::timestamptz IS NULL OR (created_at, run_id) < (:before_at::timestamptz, :before_id::uuid))
 ORDER BY created_at DESC, run_id DESC
 LIMIT :limit;

-- name: claim_replay_run
-- The oldest run no live process holds (queued, or running under a lease that ran out), claimed by
-- :owner for :lease_seconds, unless its tenant already has :per_tenant runs under a live lease.
-- One run per statement, so the bound holds within a process; two processes claiming for one
-- tenant at the same instant may each take one.
WITH candidate AS (
    SELECT r.tenant, r.run_id
      FROM replay_runs r
     WHERE r.status IN ('queued', 'running')
       AND (r.lease_until IS NULL OR r.lease_until < now())
       AND (SELECT count(*) FROM replay_runs o
             WHERE o.tenant = r.tenant AND o.status = 'running' AND o.lease_until >= now()) < :per_tenant
     ORDER BY r.created_at
     LIMIT 1
       FOR UPDATE SKIP LOCKED
)
UPDATE replay_runs r
   SET status = 'running', owner = :owner, lease_until = now() + make_interval(secs => :lease_seconds),
       updated_at = now()
  FROM candidate c
 WHERE r.tenant = c.tenant AND r.run_id = c.run_id
RETURNING r.tenant, r.run_id;

-- name: renew_replay_leases
-- Only the runs a task of :owner is still working on (:run_ids).
UPDATE replay_runs SET lease_until = now() + make_interval(secs => :lease_seconds)
 WHERE owner = :owner AND status = 'running' AND run_id = ANY(:run_ids::uuid[]);

-- name: advance_replay_run
-- Turn :turn of run :run_id is being written, in this transaction, by :owner: counted, with its
-- tokens, only if the owner still holds the run and turn :turn - 1 was the last one written; when
-- the run's path ends at that turn (:status, stopped), the run ends with it. No row: the run was
-- cancelled or claimed by another process, and the turn must not be written.
UPDATE replay_runs
   SET turns_done = :turn, prompt_tokens = prompt_tokens + :prompt_tokens,
       completion_tokens = completion_tokens + :completion_tokens,
       status = CASE WHEN :status::text IS NOT NULL THEN :status::text
                     WHEN :turn = turns_total THEN 'finished' ELSE status END,
       error = coalesce(:error::text, error), detail = coalesce(:detail::text, detail),
       lease_until = now() + make_interval(secs => :lease_seconds), updated_at = now()
 WHERE tenant = :tenant AND run_id = :run_id AND owner = :owner AND status = 'running' AND turns_done = :turn - 1
RETURNING status;

-- name: end_replay_run
-- Run :run_id ends early with :status (failed, stopped) and why, if :owner still holds it.
UPDATE replay_runs SET status = :status, error = :error, detail = :detail, updated_at = now()
 WHERE tenant = :tenant AND run_id = :run_id AND owner = :owner AND status = 'running';

-- name: release_replay_run
-- :owner stops working on run :run_id without ending it (the server is shutting down): any
-- process may claim it at once and go on from its last written turn.
UPDATE replay_runs SET owner = NULL, lease_until = NULL, updated_at = now()
 WHERE tenant = :tenant AND run_id = :run_id AND owner = :owner AND status = 'running';

-- name: cancel_replay_run
-- Waits for the turn being written (its transaction holds the row): the run ends after it.
UPDATE replay_runs SET status = 'cancelled', updated_at = now()
 WHERE tenant = :tenant AND run_id = :run_id AND status IN ('queued', 'running')
RETURNING run_id;

-- name: conversations_by_metadata
-- Conversations of :tenant whose metadata holds the JSON object :filter, oldest first, at most :limit.
-- Read through readable_payload: no stored metadata can fail the cast.
SELECT conversation_id
  FROM conversations
 WHERE tenant = :tenant AND readable_payload(metadata)::jsonb @> :filter::jsonb
 ORDER BY created_seq
 LIMIT :limit;

-- ---------------------------------------------------------------------------------------------
-- The Responses API's responses (responses, schema.sql), for service/store/responses.py.
-- ---------------------------------------------------------------------------------------------

-- name: get_response
-- A response of :tenant, with the responses whose input went under its reply (its children), oldest first.
SELECT r.response_id, r.family_id, r.conversation_id, r.parent_id, r.input_ids, r.previous_response_id,
       r.in_conversation, r.model, r.request, r.store, r.deleted_at, r.created_at,
       ARRAY(SELECT c.response_id FROM responses c
              WHERE c.tenant = r.tenant AND c.parent_id = r.response_id AND c.store AND c.deleted_at IS NULL
              ORDER BY c.created_at, c.response_id) AS next_response_ids
  FROM responses r
 WHERE r.tenant = :tenant AND r.response_id = :response_id;

-- name: find_referenced_in_family
-- Messages of family :family_id by id (item_reference): where each was written (events_message, a probe each).
SELECT e.conversation_id, e.message_id
  FROM events e
 WHERE e.family_id = :family_id AND e.message_id = ANY(:message_ids::uuid[])
   AND e.type = 'message_appended' AND e.tenant = :tenant;

-- name: find_referenced_in_tenant
-- Messages of tenant :tenant by id, in any of its conversations (item_reference to a message outside
-- the conversation a response continues): no index leads with a message id alone, so this reads the
-- tenant's events (events_tenant).
SELECT e.conversation_id, e.message_id
  FROM events e
 WHERE e.tenant = :tenant AND e.message_id = ANY(:message_ids::uuid[]) AND e.type = 'message_appended';

-- name: delete_response
-- Marks a response deleted (its messages are redacted in the same transaction); no row: it was not there to delete.
UPDATE responses SET deleted_at = now()
 WHERE tenant = :tenant AND response_id = :response_id AND store AND deleted_at IS NULL
RETURNING response_id;

-- name: find_turn_failure
-- Why the turn of reply :reply_id failed (its turn_failed event; no row: it did not), read through
-- readable_payload, which no stored payload can break.
SELECT readable_payload(payload)->>'error' AS error, readable_payload(payload)->>'detail' AS detail,
       readable_payload(payload)->>'user_message_id' AS user_message_id,
       readable_payload(payload)->>'provider' AS provider, readable_payload(payload)->>'model' AS model
  FROM events
 WHERE conversation_id = :conversation_id AND type = 'turn_failed'
   AND readable_payload(payload)->>'reply_id' = :reply_id::text
 ORDER BY seq DESC
 LIMIT 1;

-- name: set_conversation_metadata
-- The conversation's metadata after a `conversation_updated` event, written in that event's
-- transaction (fold_conversations reads the same from the log).
UPDATE conversations SET metadata = :metadata::json
 WHERE tenant = :tenant AND conversation_id = :conversation_id;

-- name: conversation_marks
-- What the Conversations API's projection of conversation :conversation_id leaves out: its
-- tombstone (`conversation_deleted`, message_id NULL) and the messages hidden from it (events_marks).
SELECT e.type, (readable_payload(e.payload)->>'message_id')::uuid AS message_id
  FROM events e
 WHERE e.conversation_id = :conversation_id AND e.tenant = :tenant
   AND e.type IN ('conversation_deleted', 'message_hidden');
