"""the From and To of each email as handed to the provider, kept with its content

Revision ID: 0018_as_sent_headers
Revises: 0017_ingest
Create Date: 2026-12-08 09:00:00

Until now the copy as sent rebuilt its From and To from the clinic's current name and sender
settings and the client's current name: after a rename it showed headers that were never sent.
Existing rows keep NULL (their headers were not kept); the page says those are rebuilt.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0018_as_sent_headers'
down_revision = '0017_ingest'
branch_labels = None
depends_on = None

COLUMNS = (
    ('from_name', sa.Text()),
    ('from_address', sa.String(320)),
    ('to_name', sa.Text()),
)


def upgrade():
    # Plain ADD COLUMN on both databases, nullable: no rewrite of the table (see 0015).
    for name, type_ in COLUMNS:
        op.add_column('email_content', sa.Column(name, type_, nullable=True))


def downgrade():
    for name, _ in reversed(COLUMNS):
        op.execute(f'ALTER TABLE email_content DROP COLUMN {name}')
