"""purge foreign-key checks: spam-list entries and alerts found by their email through an index

Revision ID: 0020_purge_fk_indexes
Revises: 0019_resend_index
Create Date: 2026-12-07 22:00:00

Deleting an email makes PostgreSQL look for rows that still name it in every table with a foreign
key to it. spam_list_entry.email_id and operator_alert.email_id had no index, so each deleted
email read both tables whole: deleting a retention purge batch of 500 emails over the 1M-email
history spent 710 to 810 ms in the spam list's check (its 10,000 entries read once per email), and
10,000 alerts would add 770 ms more (the seeded history has none). With the indexes: 9 to 17 ms
for each check of the batch. Only entries and alerts naming an email are in them (an entry from
the provider's list sync, an alert about a provider or the clock, and whatever the purge unhooked,
name none), so they stay small.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0020_purge_fk_indexes'
down_revision = '0019_resend_index'
branch_labels = None
depends_on = None


def upgrade():
    # Plain statements on both databases, as 0019. On PostgreSQL each holds off writes to its
    # table while it reads it: milliseconds for these two small tables.
    for table in ('spam_list_entry', 'operator_alert'):
        op.create_index(
            f'ix_{table}_email_id',
            table,
            ['email_id'],
            unique=False,
            postgresql_where=sa.text('email_id IS NOT NULL'),
            sqlite_where=sa.text('email_id IS NOT NULL'),
        )


def downgrade():
    for table in ('operator_alert', 'spam_list_entry'):
        op.drop_index(f'ix_{table}_email_id', table_name=table)
