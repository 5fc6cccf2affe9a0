"""Write the log through one function, and serve bodies through another.

The events and bodies INSERTs were written out in five statements (a creation, an append, the
grouped append, a turn, an import); `write_events` is now the one place the log's columns are
listed, and each of those statements calls it. Every read that serves messages withheld a redacted
message's content with the same join and CASE; `served_body` is that join, once. Neither changes a
stored byte: the events are the ones the writers sealed, inserted as before.

Revision ID: 0007
Revises: 0006
"""

from service.store.migrate import execute_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# CREATE OR REPLACE: tests that store a log as servers before 0005 did, through today's writers,
# create these on a database of that revision first.
FUNCTIONS = r"""
-- Sealed events and their messages' bodies, written as given: every writer of the log (a
-- creation, an append, the grouped append, a turn, an import) writes through here, so the log's
-- columns are listed once. One array per column, each event (and each body) at the same index in
-- every array; an event's run is derived by place_message as it is inserted. Returns the number of
-- events written.
CREATE OR REPLACE FUNCTION write_events(
    p_seqs bigint[], p_tenants text[], p_conversations uuid[], p_families uuid[], p_types text[],
    p_message_ids uuid[], p_parent_ids uuid[], p_roles text[], p_depths integer[],
    p_body_sha256s bytea[], p_payloads text[], p_actors text[], p_request_ids text[],
    p_created_ats timestamptz[], p_hashes bytea[],
    p_body_families uuid[], p_body_ids uuid[], p_contents text[], p_digest_keys bytea[]
) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,
                        depth, body_sha256, payload, actor, request_id, created_at, hash)
    SELECT u.seq, u.tenant, u.conversation_id, u.family_id, u.type, u.message_id, u.parent_id, u.role,
           u.depth, u.body_sha256, u.payload::json, u.actor, u.request_id, u.created_at, u.hash
      FROM unnest(p_seqs, p_tenants, p_conversations, p_families, p_types, p_message_ids, p_parent_ids,
                  p_roles, p_depths, p_body_sha256s, p_payloads, p_actors, p_request_ids, p_created_ats,
                  p_hashes)
           AS u(seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,
                body_sha256, payload, actor, request_id, created_at, hash);
    INSERT INTO bodies (family_id, message_id, content, digest_key)
    SELECT u.family_id, u.message_id, u.content, u.digest_key
      FROM unnest(p_body_families, p_body_ids, p_contents, p_digest_keys)
           AS u(family_id, message_id, content, digest_key);
    RETURN coalesce(cardinality(p_seqs), 0);
END;
$$;

-- A message's body as every read serves it, with the message's latest redaction: a redacted
-- message's content (and its digest key) is withheld here, once, for every query that serves
-- messages. Always one row (NULLs for a message with no body and no redaction).
CREATE OR REPLACE FUNCTION served_body(p_family uuid, p_message uuid)
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
"""


def upgrade() -> None:
    execute_script(FUNCTIONS)


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
