"""Probe a message's children with events_children whatever the statistics say.

find_nodes, which every append runs (begin_write) to learn whether the message it writes under
already has children, matched the children on (family_id, conversation_id, parent_id). Both
events_children and events_runs, which leads with family_id, fit that probe, and on a
never-analyzed table the planner gives them the same cost: with events_runs each probe reads the
whole family, so a burst of appends to a fresh database grows quadratic in the conversation's size.
The family is now checked outside the scan, so only events_children fits it.

Revision ID: 0006
Revises: 0005
"""

from service.store.migrate import execute_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
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
           (EXISTS (SELECT 1
                      FROM (SELECT c.family_id FROM events c
                             WHERE c.conversation_id = p_conversation AND c.parent_id = e.message_id
                               AND c.type = 'message_appended'
                            OFFSET 0) c
                     WHERE c.family_id = p_family)
            OR coalesce(e.conversation_id <> p_conversation AND e.depth < p_base_depth, false))
      FROM events e
     WHERE e.family_id = p_family AND e.message_id = ANY(p_ids)
$$;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
