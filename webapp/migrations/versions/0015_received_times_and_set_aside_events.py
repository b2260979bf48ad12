"""our own clock beside the provider's: when we received an email's current status; events of a batch set aside

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 15:00:00

"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014_incidents'
branch_labels = None
depends_on = None


def upgrade():
    # When we received the event that gave the email its current status (our clock): the stuck and
    # in-doubt decisions count from it, never from the provider's event time. Empty for existing
    # emails, which keep counting from status_changed_at until their next event.
    # Plain ADD/DROP COLUMN on both databases: a batch rebuild of email on SQLite would lose its
    # expression index (0011), which SQLite's reflection skips.
    op.add_column('email', sa.Column('status_received_at', sa.DateTime(timezone=True), nullable=True))
    # The events of an applied batch that could not be stored ({position, kind, error}): the batch
    # is kept, as received, while it holds any.
    json_type = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')
    op.add_column('webhook_batch', sa.Column('set_aside', json_type, nullable=True))


def downgrade():
    # SQLite has dropped a column without a rebuild since 3.35.
    op.execute('ALTER TABLE webhook_batch DROP COLUMN set_aside')
    op.execute('ALTER TABLE email DROP COLUMN status_received_at')
