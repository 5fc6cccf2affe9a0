"""Split the message tree into runs, so that a context reads one range scan per branch point.

Revision ID: 0002
Revises: 0001
"""

from service.store.migrate import execute_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
-- Runs: each message gets the unbranched chain it continues (run_id) and its parent's
-- (parent_run_id), derived by the database as it is inserted (place_message), so that the context
-- reads a path with one index range scan per run instead of one probe per level.
ALTER TABLE events ADD COLUMN run_id uuid, ADD COLUMN parent_run_id uuid;

-- The messages already written get the runs place_message would have given them. The log is
-- append-only: its guard is lifted for these two derived columns only, in this transaction only.
ALTER TABLE events DISABLE TRIGGER events_immutable;
WITH RECURSIVE firsts AS (
    -- Every message that is its parent's first child in the parent's own conversation.
    SELECT DISTINCT ON (c.conversation_id, c.parent_id) c.seq
      FROM events c
      JOIN events p ON p.family_id = c.family_id AND p.message_id = c.parent_id
                   AND p.conversation_id = c.conversation_id
     WHERE c.type = 'message_appended'
     ORDER BY c.conversation_id, c.parent_id, c.seq
), runs AS (
    SELECT e.family_id, e.message_id, e.message_id AS run_id
      FROM events e
     WHERE e.type = 'message_appended' AND e.seq NOT IN (SELECT f.seq FROM firsts f)
    UNION ALL
    SELECT c.family_id, c.message_id, r.run_id
      FROM runs r
      JOIN events c ON c.family_id = r.family_id AND c.parent_id = r.message_id
     WHERE c.type = 'message_appended' AND c.seq IN (SELECT f.seq FROM firsts f)
)
UPDATE events e SET run_id = r.run_id
  FROM runs r
 WHERE e.family_id = r.family_id AND e.message_id = r.message_id;
UPDATE events e SET parent_run_id = p.run_id
  FROM events p
 WHERE e.type = 'message_appended' AND p.family_id = e.family_id AND p.message_id = e.parent_id;
ALTER TABLE events ENABLE TRIGGER events_immutable;

ALTER TABLE events
    ADD CONSTRAINT events_message_run CHECK ((type = 'message_appended') = (run_id IS NOT NULL)),
    ADD CONSTRAINT events_parent_run CHECK ((parent_id IS NULL) = (parent_run_id IS NULL));

CREATE INDEX events_runs ON events (family_id, run_id, depth) WHERE type = 'message_appended';
CREATE INDEX events_branches ON events (family_id, parent_run_id, depth) WHERE run_id = message_id;

DROP TRIGGER events_parent_exists ON events;
DROP FUNCTION check_message_parent();

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
        SELECT CASE WHEN f.type = 'conversation_forked' THEN (f.payload->>'source_message_id')::uuid END
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

DROP FUNCTION message_path(uuid, uuid, uuid, uuid, integer, bigint);

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
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
