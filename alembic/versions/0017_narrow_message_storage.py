"""Narrow what each message costs on disk: one index fewer on events, a narrower message_paths.

Figure 4 (bench/disk.py) measures bytes per message beside the same messages in a plain table (the
raw chain); issue 14 asks for at most 1.6 times as much. Two changes, each with its plans in
BENCHMARKS.md ("Bytes per message (issue 14, goal 4)"):

- events_children (conversation_id, parent_id, seq), 70 B a message, is dropped. A message's
  children are its run's next message (events_runs) and the runs starting under it
  (events_branches), each found by one probe of a whole key: find_nodes (every append), list_children
  and the erasure's walk down read them so.
- message_paths names a message by its event's number instead of (family, id, conversation): the
  row keeps seq, tenant and the digest, and message_paths_lookup keys one bigint (path_key: the
  tenant's hash and the digest's first 8 bytes) instead of the tenant and all 32 bytes (find_thread
  compares the tenant and the whole digest on the row). The rows are copied into the narrower table.

No event, body or hash changes: the log and its chain are as they were.

Revision ID: 0017
Revises: 0016
"""

from service.store.migrate import execute_script

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Today's message_paths (schema.sql), which replaces the wider one (its rows copied into it).
TABLE = r"""
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
"""


def upgrade() -> None:
    execute_script(r"""
DROP INDEX events_children;

-- Messages of a family by id: whether each is visible in a conversation (its own, or on the path a
-- fork inherited: root to its base), and whether it has a child visible there (one of the
-- conversation's own or, for an inherited message above the base, the next one on the path).
-- The children probes are by whole keys, of events_runs and of events_branches; the second checks the
-- conversation outside the scan (OFFSET 0 keeps it there), so events_conversation cannot serve it.
-- On a never-analyzed table the planner may otherwise read the whole conversation for each message,
-- on every append.
CREATE OR REPLACE FUNCTION find_nodes(p_family uuid, p_conversation uuid, p_ids uuid[], p_base uuid, p_base_depth integer)
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

-- The rows are set aside and the wide table dropped before the narrow one is made, so that its
-- constraints take their own names (PostgreSQL 18 names NOT NULL constraints, schema-wide unique).
CREATE TEMPORARY TABLE message_paths_kept ON COMMIT DROP AS
SELECT w.seq, w.tenant, w.path_digest FROM message_paths w;
DROP TABLE message_paths;
""" + TABLE + r"""
INSERT INTO message_paths (seq, tenant, path_digest)
SELECT k.seq, k.tenant, k.path_digest FROM message_paths_kept k;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
