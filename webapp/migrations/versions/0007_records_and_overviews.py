"""records and overviews: indexes for the retention purge, the owner's view and the operator's view

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-05 12:00:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('email', schema=None) as batch_op:
        # The purge finds old emails of every clinic by age.
        batch_op.create_index('ix_email_created_at', ['created_at'], unique=False)
        # The owner's view counts a clinic's emails by day and status from the index alone.
        batch_op.create_index('ix_email_clinic_created_status', ['clinic_id', 'created_at', 'status'], unique=False)
    with op.batch_alter_table('email_event', schema=None) as batch_op:
        # The operator's view counts events stored in the last minutes.
        batch_op.create_index('ix_email_event_created_at', ['created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('email_event', schema=None) as batch_op:
        batch_op.drop_index('ix_email_event_created_at')
    with op.batch_alter_table('email', schema=None) as batch_op:
        batch_op.drop_index('ix_email_clinic_created_status')
        batch_op.drop_index('ix_email_created_at')
