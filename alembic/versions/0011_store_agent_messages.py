"""Store every message an agent sends: role `developer`, and large binary parts out of line.

A message may now say more than a string (parts, tool calls, reasoning: service/domain/message.py);
its body is then the JSON of what it says, in `bodies` as every body is. Two things change here:
the role `developer` (OpenAI's system-level role) is allowed in the log, and the large base64
payloads of parts (images, audio, files of 16 KiB and more) are kept once per tenant by digest in
`blobs`, referred to from their bodies (`body_blobs`, which an erasure uses to find the blobs no
one refers to any more). grant_service_role is redefined to grant the new tables. No stored byte
changes.

Revision ID: 0011
Revises: 0010
"""

from service.store.migrate import execute_script

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
ALTER TABLE events DROP CONSTRAINT events_role_known;
ALTER TABLE events ADD CONSTRAINT events_role_known
    CHECK (role IN ('system', 'developer', 'user', 'assistant', 'tool'));
-- Large binary parts of message bodies (a base64 image, audio or file of 16 KiB and more:
-- service/domain/stored.py), kept once per tenant by the SHA-256 of their text. A body holds a
-- reference to its part in its place, `{"blob_sha256": "<hex>"}`, and its event's digest covers
-- that reference: the chain proves the part through the digest it names. Never changed; deleted by
-- an erasure when no body of the tenant refers to it any more.
CREATE TABLE blobs (
    tenant  text NOT NULL,
    sha256  bytea NOT NULL CONSTRAINT blobs_digest_length CHECK (octet_length(sha256) = 32),
    data    text NOT NULL,
    PRIMARY KEY (tenant, sha256)
);

-- Which body refers to which blob: a body's references are found without reading it, and an
-- erasure (which deletes the body, and with it these rows) finds the blobs nobody else refers to.
CREATE TABLE body_blobs (
    family_id   uuid NOT NULL,
    message_id  uuid NOT NULL,
    tenant      text NOT NULL,
    sha256      bytea NOT NULL,
    PRIMARY KEY (family_id, message_id, sha256),
    CONSTRAINT body_blobs_body FOREIGN KEY (family_id, message_id) REFERENCES bodies ON DELETE CASCADE,
    CONSTRAINT body_blobs_blob FOREIGN KEY (tenant, sha256) REFERENCES blobs
);
CREATE INDEX body_blobs_by_blob ON body_blobs (tenant, sha256);

CREATE TRIGGER blobs_immutable BEFORE UPDATE ON blobs
    FOR EACH ROW EXECUTE FUNCTION reject_change();
CREATE TRIGGER body_blobs_immutable BEFORE UPDATE ON body_blobs
    FOR EACH ROW EXECUTE FUNCTION reject_change();

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
    EXECUTE format('REVOKE ALL ON events, bodies, conversations, idempotency_keys, pending_replies, api_keys, replay_runs, blobs, body_blobs FROM %I', p_role);
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
    IF to_regclass('alembic_version') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON alembic_version TO %I', p_role);  -- /readyz reports it
    END IF;
END;
$$;
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
