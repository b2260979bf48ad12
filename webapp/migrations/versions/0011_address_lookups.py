"""address lookups: a clinic's emails by the address they went to, for the spam-report check

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 12:00:00

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    # The client list asks, for the addresses on its page, which of the clinic's emails to them
    # were reported as spam: without it, a big clinic's 50,000 emails were read on every page.
    op.create_index(
        'ix_email_clinic_lower_to_address', 'email', ['clinic_id', sa.text('lower(to_address)')], unique=False
    )


def downgrade():
    op.drop_index('ix_email_clinic_lower_to_address', table_name='email')
