"""resend lookups: an email's resends by a partial index on resend_of_id

Revision ID: 0019_resend_index
Revises: 0018_as_sent_headers
Create Date: 2026-12-07 21:00:00

Every lookup of an email's resends read the table: the Needs attention count's check of a big
clinic's 757 failed emails read the clinic's 50,190 emails (70 to 107 ms over the 1M-email
history), the resend's 'already resent?' check and the retention purge's unhooking read all of
them (0.7 and 1.3 s), and deleting an email made PostgreSQL's foreign-key check on resend_of_id
read the whole table once per email (7.2 s for three emails at a load of 9). With the index:
0.4 ms, 0.02 ms, 0.3 ms and 0.2 ms an email. Only resends have a resend_of_id, so the index holds
only them: it is tiny, and a status change, which touches neither the column nor the predicate,
stays a HOT update (migration 0017).
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0019_resend_index'
down_revision = '0018_as_sent_headers'
branch_labels = None
depends_on = None


def upgrade():
    # A plain statement on both databases (not a batch: a SQLite rebuild would lose the expression
    # index of 0011). On PostgreSQL it holds off writes to email while it reads the table (about
    # a second over 1M emails), as 0011 and 0017 did.
    op.create_index(
        'ix_email_resend_of_id',
        'email',
        ['resend_of_id'],
        unique=False,
        postgresql_where=sa.text('resend_of_id IS NOT NULL'),
        sqlite_where=sa.text('resend_of_id IS NOT NULL'),
    )


def downgrade():
    op.drop_index('ix_email_resend_of_id', table_name='email')
