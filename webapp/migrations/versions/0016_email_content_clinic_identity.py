"""the emails' HTML part, Reply-To and calendar attachment as sent; the clinic's identity

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 17:40:00

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

IDENTITY_COLUMNS = (
    ('reply_to_address', 320),
    ('phone', 50),
    ('postal_address', 500),
    ('brand_colour', 7),
    ('intake_form_url', 500),
)


def upgrade():
    # Plain ADD COLUMN on both databases (no batch rebuild: see 0015).
    for name, length in IDENTITY_COLUMNS:
        op.add_column('clinic', sa.Column(name, sa.String(length), nullable=False, server_default=''))
    # Existing emails have no row here: they were text only.
    op.create_table(
        'email_content',
        sa.Column('email_id', sa.Integer(), sa.ForeignKey('email.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('body_html', sa.Text(), nullable=False),
        sa.Column('reply_to', sa.String(320), nullable=False),
        sa.Column('calendar_ics', sa.Text(), nullable=True),
    )


def downgrade():
    op.drop_table('email_content')
    for name, _ in reversed(IDENTITY_COLUMNS):
        op.execute(f'ALTER TABLE clinic DROP COLUMN {name}')
