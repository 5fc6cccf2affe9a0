"""Index replay runs by the conversation they replay and by the one they write into.

The viewer lists a conversation's replay runs (GET /v1/conversations/{id}/replays): the runs that
replay it and the run that wrote it (a fork or a new conversation). Without these indexes the list
reads every run of every tenant. No stored byte changes.

Revision ID: 0015
Revises: 0012
"""

from service.store.migrate import execute_script

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
-- A conversation's runs, newest first: those that replay it, and the one that wrote it.
CREATE INDEX replay_runs_source ON replay_runs (tenant, source_conversation_id, created_at DESC, run_id DESC);
CREATE INDEX replay_runs_target ON replay_runs (tenant, target_conversation_id, created_at DESC, run_id DESC);
""")


def downgrade() -> None:
    raise NotImplementedError("convtree migrations are forward-only")
