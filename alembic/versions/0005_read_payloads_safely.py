"""Read event payloads so that no stored value can break a function, trigger or index.

`->` and `->>` on a `json` payload de-escape every string in it, and fail on a `\\u0000` or a lone
surrogate escape anywhere: one such metadata value, which the API accepted until now, failed every
rebuild, replay of its conversation, and every append to a fork carrying it. Every read of a
payload in SQL now goes through `readable_payload`, which spells such escapes out as text. The
stored payloads (and their hashes) stay as they are; `convtree doctor` lists the events holding one.
The summaries already derived from such events get the metadata a fold gives them now, so that the
live summary, a replay and a rebuild agree.

Revision ID: 0005
Revises: 0004
"""

from service.store.migrate import execute_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
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

-- The escapes spelled out in the summaries derived from such events, as the fold below gives them.
UPDATE conversations SET metadata = readable_payload(metadata)
 WHERE strpos(metadata::text, '\u') > 0 AND readable_payload(metadata)::text <> metadata::text;

DROP INDEX events_redactions;
CREATE INDEX events_redactions ON events (family_id, ((readable_payload(payload)->>'message_id')::uuid), seq)
    WHERE type = 'message_redacted';

CREATE OR REPLACE FUNCTION message_redaction(p_family uuid, p_message uuid)
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

CREATE OR REPLACE FUNCTION place_message() RETURNS trigger
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
               count(*) FILTER (WHERE l.type = 'message_appended' AND p.parent_id IS NULL) AS leaves
          FROM log l
          LEFT JOIN parents p ON p.family_id = l.family_id AND p.conversation_id = l.conversation_id
                             AND p.parent_id = l.message_id
         GROUP BY l.family_id, l.conversation_id
    )
    SELECT f.tenant, s.conversation_id, s.family_id, f.payload->>'title', f.payload->'metadata',
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
      LEFT JOIN LATERAL (SELECT e.message_id, e.depth FROM events e
                          WHERE f.type = 'conversation_forked' AND e.family_id = s.family_id
                            AND e.message_id = (f.payload->>'source_message_id')::uuid LIMIT 1) b ON true
      LEFT JOIN parents bp ON bp.family_id = s.family_id AND bp.conversation_id = s.conversation_id
                          AND bp.parent_id = b.message_id
$$;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
