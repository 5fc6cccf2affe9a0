"""Checkpoint replies as they stream, and let any process cancel one.

The text a reply has streamed so far lived only in the process generating it: a SIGKILL lost it
all, and the turn was closed out `abandoned`. Its owner now writes the pieces received, in
batches, to reply_chunks under its lease; the sweep records a reply whose owner died from them,
and a background response's stream is resumed from them. pending_replies gains the cancel flag
its owner polls. No stored byte changes.

Revision ID: 0016
Revises: 0015
"""

from service.store.migrate import execute_script

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLE = r"""
-- A reply's progress while it is generated (service/app/turn/relay.py): the pieces received so
-- far, written by the reply's owner under its lease in batches (checkpoints, numbered from 0), so
-- that a reply whose owner dies is recorded with the text it had streamed (record.close_expired),
-- and a background response's stream can be resumed from any process. NOT derived from the log:
-- deleted with the reply's pending row (or with its response, for a background response, whose
-- stream stays resumable). `pieces` is JSON never read by SQL; chunk 0 also holds `started`, what
-- the reply's record needs beside its text (its generation so far, its form), as JSON.
CREATE TABLE reply_chunks (
    family_id   uuid NOT NULL,
    reply_id    uuid NOT NULL,
    chunk       integer NOT NULL CONSTRAINT reply_chunks_chunk CHECK (chunk >= 0),
    pieces      bytea NOT NULL,
    started     bytea,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (family_id, reply_id, chunk)
);

-- A cancel asked of a reply (POST /openai/v1/responses/{id}/cancel, from any process): its owner
-- reads it with each checkpoint and lease renewal, stops the model and records the reply cancelled.
ALTER TABLE pending_replies ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
"""


def upgrade() -> None:
    execute_script(TABLE + r"""
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
    EXECUTE format('REVOKE ALL ON events, bodies, conversations, idempotency_keys, pending_replies, api_keys, replay_runs, blobs, body_blobs, message_paths, responses, reply_chunks FROM %I', p_role);
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
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON responses TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON reply_chunks TO %I', p_role);
    IF to_regclass('alembic_version') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON alembic_version TO %I', p_role);  -- /readyz reports it
    END IF;
END;
$$;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
