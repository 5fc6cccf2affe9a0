"""Record what the Conversations API changes: a conversation's metadata, its deletion, and a
message hidden from its item list.

`conversation_updated` (`{"metadata"}`) replaces a conversation's metadata: the summary row's
`metadata` is the latest one (fold_conversations, redefined here, reads it for rebuild and
replay). `conversation_deleted` is a conversation's tombstone for the Conversations API, and
`message_hidden` (`{"message_id"}`) takes a message out of the conversation's item list; the log
keeps everything they mark (service/app/items.py). `events_marks` finds both kinds by one probe.
No stored byte changes.

Revision ID: 0013
Revises: 0012
"""

from service.store.migrate import execute_script

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
ALTER TABLE events DROP CONSTRAINT events_type_known;
ALTER TABLE events ADD CONSTRAINT events_type_known CHECK (type IN (
        'conversation_created', 'conversation_forked', 'message_appended', 'head_moved',
        'message_redacted', 'turn_failed', 'conversation_updated', 'conversation_deleted', 'message_hidden'
    ));
CREATE INDEX events_marks ON events (conversation_id, type, seq) WHERE type IN ('conversation_deleted', 'message_hidden');
CREATE OR REPLACE FUNCTION fold_conversations(p_conversations uuid[], p_upto bigint)
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
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
