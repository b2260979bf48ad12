"""removal requests: keep the raw mail, check it in a job

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 08:40:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('removal_request', schema=None) as batch_op:
        batch_op.add_column(sa.Column('raw_mail', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('check_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('proof_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_removal_request_proof_key'), ['proof_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_removal_request_message_id'), ['message_id'], unique=False)
        batch_op.create_index('ix_removal_request_status_received', ['status', 'received_at'], unique=False)


def downgrade():
    with op.batch_alter_table('removal_request', schema=None) as batch_op:
        batch_op.drop_index('ix_removal_request_status_received')
        batch_op.drop_index(batch_op.f('ix_removal_request_message_id'))
        batch_op.drop_index(batch_op.f('ix_removal_request_proof_key'))
        batch_op.drop_column('proof_key')
        batch_op.drop_column('checked_at')
        batch_op.drop_column('check_attempts')
        batch_op.drop_column('raw_mail')
