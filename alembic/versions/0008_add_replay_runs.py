"""Add replay runs: a recorded path sent again to another model, as durable work any process resumes.

A run is not derived from the log (its turns are, once written): it is the service's record of
work to do, claimed by one server process at a time under a lease, like pending_replies. The
service role may insert and update runs (never delete them: a run is kept as the record of what
was replayed), so grant_service_role is redefined to grant them.

Revision ID: 0008
Revises: 0007
"""

from service.store.migrate import execute_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
-- Replay runs (service/app/replay_runs): a recorded path sent again, turn by turn, to another
-- model, its new replies written into a fork or as a branch. NOT derived from the log: it is the
-- service's record of work to do, shared by every server process. A run is claimed by one process
-- at a time (`owner`, under a lease it renews, `lease_until`); one whose lease ran out is claimed
-- again by any process and goes on after its last recorded turn (`turns_done`, advanced in the
-- transaction that writes the turn, so a turn is written once whatever dies when).
CREATE TABLE replay_runs (
    tenant           text NOT NULL,
    run_id           uuid NOT NULL,
    batch_id         uuid,                          -- the batch it was started with, if any
    source_conversation_id  uuid NOT NULL,
    target_conversation_id  uuid NOT NULL,          -- where the new turns are written: a fork, or the source
    anchor_id        uuid,                          -- the message the first new turn goes under (NULL: the root)
    destination      text NOT NULL CONSTRAINT replay_runs_destination CHECK (destination IN ('fork', 'branches')),
    plan             bytea NOT NULL,                -- the target and the turns to replay, as JSON (never read by SQL)
    status           text NOT NULL CONSTRAINT replay_runs_status
                         CHECK (status IN ('queued', 'running', 'finished', 'failed', 'stopped', 'cancelled')),
    turns_total      integer NOT NULL CHECK (turns_total > 0),
    turns_done       integer NOT NULL DEFAULT 0 CHECK (turns_done >= 0 AND turns_done <= turns_total),
    prompt_tokens    bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    error            text,                          -- why it ended early, as a stable snake_case kind
    detail           text,
    actor            text NOT NULL,                 -- who started it: the actor of every event it writes
    request_id       text,
    owner            uuid,                          -- the server process running it
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id)                          -- chosen by convtree (uuid4), never by a caller
);

-- The runs waiting for a process (queued, or running under a lease that may have run out).
CREATE INDEX replay_runs_open ON replay_runs (created_at) WHERE status IN ('queued', 'running');
-- A tenant's runs under a lease (the bound on runs per tenant counts them at each claim).
CREATE INDEX replay_runs_running ON replay_runs (tenant) WHERE status = 'running';
-- A batch's runs.
CREATE INDEX replay_runs_batch ON replay_runs (tenant, batch_id) WHERE batch_id IS NOT NULL;

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
    EXECUTE format('REVOKE ALL ON events, bodies, conversations, idempotency_keys, pending_replies, api_keys, replay_runs FROM %I', p_role);
    EXECUTE format('REVOKE ALL ON SEQUENCE events_seq FROM %I', p_role);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), p_role);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT ON events TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON bodies TO %I', p_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE events_seq TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON conversations, api_keys TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys, pending_replies TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON replay_runs TO %I', p_role);
    IF to_regclass('alembic_version') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON alembic_version TO %I', p_role);  -- /readyz reports it
    END IF;
END;
$$;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
