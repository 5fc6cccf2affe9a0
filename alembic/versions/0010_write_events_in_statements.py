"""Write the log in each writer's statement again, from one shared text; drop `write_events`.

Revision 0007 listed the events and bodies INSERTs once by writing them in a PL/pgSQL function that
each writer called; the call cost the grouped append (service/store/queries.sql,
append_messages_if_unchanged) 35-55 µs more per statement than the same INSERTs written in it (a
`LANGUAGE sql` function is planned at every call, and costs more). The INSERTs are now the part
`write_events` of queries.sql, included in every writer's statement as it is loaded: still written
once, and planned with the statement. No stored byte changes.

Revision ID: 0010
Revises: 0009
"""

from service.store.migrate import execute_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
DROP FUNCTION write_events(bigint[], text[], uuid[], uuid[], text[], uuid[], uuid[], text[], integer[],
                           bytea[], text[], text[], text[], timestamptz[], bytea[],
                           uuid[], uuid[], text[], bytea[]);
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
