"""Add responses, the Responses API's record of what each response was asked with.

A response (POST /openai/v1/responses) is a turn written in the log as any other; what only its
request knows (model, instructions, tools, sampling, metadata, store, the response it continues)
is kept in this table, in the transaction that writes the turn, so that a response can be
retrieved and continued. Its status, output, usage and error are read from the log. No stored
byte changes.

Revision ID: 0014
Revises: 0013
"""

from service.store.migrate import execute_script

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLE = r"""
-- The Responses API's responses (service/app/responses): what a response was asked with, which
-- only the request knows (model, instructions, tools, sampling, metadata, store, ...), beside the
-- log that holds what it says. A response is one turn: its input messages (`input_ids`, in order,
-- the last one the turn's) and the reply, whose id is the response's (`resp_<hex of response_id>`).
-- Its status, output, usage and error are read from the log (the reply and its generation, a
-- turn_failed event, pending_replies), never copied here: a process dying mid-reply cannot leave
-- this row saying otherwise than the log. Written in the transaction that writes the turn.
CREATE TABLE responses (
    tenant           text NOT NULL,
    response_id      uuid NOT NULL,              -- the reply's message id
    family_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,              -- the conversation its messages are written in
    parent_id        uuid,                       -- the message its input went under (NULL: a new conversation's root)
    input_ids        uuid[] NOT NULL CONSTRAINT responses_input CHECK (cardinality(input_ids) > 0),
    previous_response_id uuid,                   -- as the request named it
    in_conversation  boolean NOT NULL,           -- the request named the conversation (`conversation`)
    model            text NOT NULL,              -- as requested
    request          bytea NOT NULL,             -- the request's fields a Response echoes, as JSON (never read by SQL)
    store            boolean NOT NULL,           -- false: neither retrieved nor continued
    deleted_at       timestamptz,                -- DELETE: its messages are redacted, it is neither retrieved nor continued
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, response_id)
);
-- A response's children (`next_response_ids`): the responses whose input went under its reply.
CREATE INDEX responses_children ON responses (tenant, parent_id) WHERE parent_id IS NOT NULL;
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
    EXECUTE format('REVOKE ALL ON events, bodies, conversations, idempotency_keys, pending_replies, api_keys, replay_runs, blobs, body_blobs, message_paths, responses FROM %I', p_role);
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
    IF to_regclass('alembic_version') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON alembic_version TO %I', p_role);  -- /readyz reports it
    END IF;
END;
$$;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
