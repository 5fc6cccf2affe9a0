"""Serve as a role that owns nothing (it reads and appends to the log, and cannot switch its guards
off), and key each new body's digest so that an erased body's digest confirms no guess.

Revision ID: 0004
Revises: 0003
"""

from service.store.migrate import execute_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
-- Keyed body digests: each new message's event records SHA-256(key || content) with a random key
-- kept here and deleted with the body, so the digest left after an erasure confirms no guess.
-- Messages already written keep their plain digests (the chain is never rewritten).
ALTER TABLE bodies ADD COLUMN digest_key bytea
    CONSTRAINT bodies_digest_key_length CHECK (octet_length(digest_key) = 32);

-- Least privilege. The tables belong to the role that migrates; the service connects as another
-- role, which may read the log and append to it and keep the tables derived from it, but owns
-- nothing: it cannot update, delete or truncate the log, alter, disable or drop its guards, or
-- change the schema (ALTER TABLE … DISABLE TRIGGER and DROP TRIGGER need the owner,
-- session_replication_role a superuser). Bodies it may delete only as bodies_erasable allows.
-- Roles are cluster-wide and grants per database: `convtree migrate` calls this for its own
-- database after migrating, creating the role (LOGIN, no password) where it does not exist yet.
-- Idempotent: the role's rights on these tables are revoked and granted again, exactly these. A
-- migration that adds a table the service uses redefines this function.
CREATE FUNCTION grant_service_role(p_role text) RETURNS void
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
    EXECUTE format('REVOKE ALL ON events, bodies, conversations, idempotency_keys, pending_replies, api_keys FROM %I', p_role);
    EXECUTE format('REVOKE ALL ON SEQUENCE events_seq FROM %I', p_role);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), p_role);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT ON events TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON bodies TO %I', p_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE events_seq TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON conversations, api_keys TO %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys, pending_replies TO %I', p_role);
    IF to_regclass('alembic_version') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON alembic_version TO %I', p_role);  -- /readyz reports it
    END IF;
END;
$$;

-- Only an owner may hand out rights; nobody else needs to call it.
REVOKE EXECUTE ON FUNCTION grant_service_role(text) FROM PUBLIC;
""")
