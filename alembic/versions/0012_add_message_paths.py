"""Add message_paths, auto-threading's index of path digests, and a per-key auto-threading default.

A stateless client resends its whole history with every call; the OpenAI door (and the Ollama door)
continue the stored conversation whose path that history is (service/domain/threads.py). The path is
found by its digest in message_paths, one index probe per sent message, so the cost does not grow
with the number of stored conversations (BENCHMARKS.md, "Auto-threading lookup"). Messages written
before this revision get no digest and are not backfilled: a digest chains through every message
above it, so a backfill walks every family's tree root first, in Python (the digest is of the
canonical JSON msgspec writes), over the whole log, inside the migration. Conversations written
before it are continued by `conversation_id` (which compares the messages read back, not digests).
No stored byte changes.

Revision ID: 0012
Revises: 0010
"""

from service.store.migrate import execute_script

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The table today's writers write in (tests/migration/test_legacy_text.py gives it to an older database).
TABLE = r"""
-- Auto-threading's index (service/domain/threads.py): each message written since revision 0012,
-- with its path digest (SHA-256 of its parent's path digest and what it says), so that the
-- conversation a resent history continues is found by one index probe per sent message, whatever
-- the number of conversations. Written by the statement that writes the message (the part
-- write_events of queries.sql); a message whose parent has no digest gets none. An erasure deletes
-- the rows of the erased message and of every message under it: a digest would confirm a guess of
-- the erased text.
CREATE TABLE message_paths (
    family_id        uuid NOT NULL,
    message_id       uuid NOT NULL,
    tenant           text NOT NULL,
    conversation_id  uuid NOT NULL,  -- the conversation that wrote the message
    seq              bigint NOT NULL,  -- its event: the latest of equal paths is continued
    path_digest      bytea NOT NULL CONSTRAINT message_paths_digest_length CHECK (octet_length(path_digest) = 32),
    PRIMARY KEY (family_id, message_id)
);
-- The tenant's paths by digest, latest first: find_thread.
CREATE INDEX message_paths_lookup ON message_paths (tenant, path_digest, seq);
"""


def upgrade() -> None:
    execute_script(TABLE + r"""
-- A key's default for auto-threading on the OpenAI door (a request's Convtree-Auto-Thread header overrides it).
ALTER TABLE api_keys ADD COLUMN auto_thread boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION grant_service_role(p_role text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN', p_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by the migrator of another database of the cluster
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_role AND (r.rolsuper OR r.rolbypassrls))
       OR EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                   WHERE r.rolname = p_role AND c.oid IN ('events'::regclass, 'bodies'::regclass)) THEN
        RAISE EXCEPTION 'role % owns the log or is a superuser: it cannot be the service role', p_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('REVOKE ALL ON events, bodies, conversations, idempotency_keys, pending_replies, api_keys, replay_runs, blobs, body_blobs, message_paths FROM %I', p_role);
    EXECUTE format('REVOKE ALL ON SEQUENCE events_seq FROM %I', p_role);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), p_role);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT ON events TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON bodies TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON blobs TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT ON body_blobs TO %I', p_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE events_seq TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON conversations, api_keys TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys, pending_replies TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON replay_runs TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON message_paths TO %I', p_role);
    IF to_regclass('alembic_version') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON alembic_version TO %I', p_role);  -- /readyz reports it
    END IF;
END;
$$;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
