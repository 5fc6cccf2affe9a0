"""Read a conversation for an append without locking it.

An append the server process cannot decide on a state it remembers (the first after a restart, one
under another parent, one after another process wrote) took the conversation's lock in a
transaction of its own: BEGIN, begin_write, the write, COMMIT, and a NOTIFY at every commit (which
takes a database-wide lock). read_for_append reads what begin_write reads, as last committed, with
nothing held; the append is then written by the grouped statement, guarded by the last event read.
A PL/pgSQL function planned once per connection, as begin_write: inlined into a statement, find_nodes'
ids (computed from the row) were not used to probe events_message.

Revision ID: 0018
Revises: 0017
"""

from service.store.migrate import execute_script

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
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
""")


def downgrade() -> None:
    execute_script(r"""
DROP FUNCTION read_for_append(text, uuid, uuid[], boolean);
""")
