"""Idempotency keys of turns name the reply they launched, so a retry is answered from the log.

Revision ID: 0003
Revises: 0002
"""

from service.store.migrate import execute_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(r"""
ALTER TABLE idempotency_keys
    ADD COLUMN conversation_id uuid,
    ADD COLUMN user_message_id uuid,
    ADD COLUMN reply_id uuid;
""")
