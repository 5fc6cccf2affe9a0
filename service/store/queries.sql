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

-- name: begin_create
SELECT now, seqs FROM begin_create($1, $2, $3);

-- name: begin_write
SELECT family_id, head_id, message_count, leaf_count, last_seq, last_hash, now, seqs
  FROM begin_write($1, $2, $3);

-- name: find_nodes
-- Messages of a family by id, with whether each has a child in the given conversation.
SELECT e.message_id, e.conversation_id, e.parent_id, e.role, e.depth, e.body_sha256, e.payload,
       EXISTS (SELECT 1 FROM events c
                WHERE c.conversation_id = $2 AND c.parent_id = e.message_id
                  AND c.type = 'message_appended') AS has_children
  FROM events e
 WHERE e.family_id = $1 AND e.message_id = ANY($3::uuid[]);

-- name: find_root
SELECT e.message_id, e.role, e.body_sha256
  FROM events e
 WHERE e.family_id = $1 AND e.type = 'message_appended' AND e.parent_id IS NULL;

-- name: insert_conversation
WITH new_events AS (
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT s, $1, $2, $3, t, m, p, r, d, b, pl::json, $4, $5, $6, h
      FROM unnest($7::bigint[], $8::text[], $9::uuid[], $10::uuid[], $11::text[], $12::int[],
                  $13::bytea[], $14::text[], $15::bytea[]) AS u(s, t, m, p, r, d, b, pl, h)
), new_bodies AS (
    INSERT INTO bodies (family_id, message_id, content)
    SELECT $3, m, c FROM unnest($16::uuid[], $17::text[]) AS u(m, c)
)
INSERT INTO conversations (tenant, conversation_id, family_id, title, metadata, head_id,
                           message_count, leaf_count, created_seq, created_at, updated_at,
                           last_seq, last_hash)
VALUES ($1, $2, $3, $18, $19::json, $20, $21, $22, $23, $6, $6, $24, $25);

-- name: append_events
WITH new_events AS (
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT s, $1, $2, $3, t, m, p, r, d, b, pl::json, $4, $5, $6, h
      FROM unnest($7::bigint[], $8::text[], $9::uuid[], $10::uuid[], $11::text[], $12::int[],
                  $13::bytea[], $14::text[], $15::bytea[]) AS u(s, t, m, p, r, d, b, pl, h)
), new_bodies AS (
    INSERT INTO bodies (family_id, message_id, content)
    SELECT $3, m, c FROM unnest($16::uuid[], $17::text[]) AS u(m, c)
)
UPDATE conversations
   SET head_id = $18, message_count = $19, leaf_count = $20, updated_at = $6,
       last_seq = $21, last_hash = $22
 WHERE tenant = $1 AND conversation_id = $2;

-- name: get_conversation
SELECT conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_at, updated_at, last_seq
  FROM conversations
 WHERE tenant = $1 AND conversation_id = $2;

-- name: list_conversations
-- Newest first; $2 is the created_seq of the last conversation of the previous page, or NULL.
SELECT conversation_id, family_id, title, metadata, head_id, message_count, leaf_count,
       created_at, updated_at, last_seq, created_seq
  FROM conversations
 WHERE tenant = $1 AND ($2::bigint IS NULL OR created_seq < $2)
 ORDER BY created_seq DESC
 LIMIT $3;

-- name: get_message
SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
       e.actor, e.request_id, e.created_at, b.content
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
 WHERE e.family_id = $1 AND e.message_id = $2 AND e.conversation_id = $3;

-- name: list_children
SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
       e.actor, e.request_id, e.created_at, b.content
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
 WHERE e.conversation_id = $1 AND e.parent_id = $2 AND e.type = 'message_appended'
 ORDER BY e.seq;

-- name: list_messages
-- Every message of a conversation in the order it was written.
SELECT e.seq, e.conversation_id, e.message_id, e.parent_id, e.role, e.depth, e.payload,
       e.actor, e.request_id, e.created_at, b.content
  FROM events e
  LEFT JOIN bodies b ON b.family_id = e.family_id AND b.message_id = e.message_id
 WHERE e.conversation_id = $1 AND e.type = 'message_appended'
 ORDER BY e.seq;

-- name: list_leaves
SELECT e.message_id, e.depth, e.seq, e.created_at
  FROM events e
 WHERE e.conversation_id = $1 AND e.type = 'message_appended'
   AND NOT EXISTS (SELECT 1 FROM events c
                    WHERE c.conversation_id = $1 AND c.parent_id = e.message_id
                      AND c.type = 'message_appended')
 ORDER BY e.seq;

-- name: message_path
SELECT seq, conversation_id, message_id, parent_id, role, depth, payload, actor, request_id,
       created_at, content, sibling_count, sibling_position
  FROM message_path($1, $2, $3);

-- name: claim_idempotency_key
-- Waits while another transaction holds the same key; returns a row only if this one claimed it.
INSERT INTO idempotency_keys (tenant, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT (tenant, key) DO NOTHING
RETURNING true;

-- name: find_idempotency_key
SELECT fingerprint, status, response FROM idempotency_keys WHERE tenant = $1 AND key = $2;

-- name: complete_idempotency_key
UPDATE idempotency_keys SET status = $3, response = $4 WHERE tenant = $1 AND key = $2;

-- name: schema_version
SELECT version_num FROM alembic_version;
