"""narrow event keys: an event's dedupe key is 16 bytes, unique per email

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 12:10:00

"""
import contextlib
import warnings

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

CHUNK = 5000


def upgrade():
    # Every stored event wrote a page of a unique index on a random 64-character text over all
    # history (the event INSERT was most of a webhook batch's time). The key becomes its first 16
    # bytes (events.stored_key: 128 bits, and unique per email only, where an email has a handful
    # of events), and the index leads with the email, so a batch writes the pages of its own, mostly
    # recent, emails. That index also serves lookups by email: the email_id index goes.
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.drop_constraint('uq_email_event_dedupe_key', 'email_event', type_='unique')
        op.drop_index('ix_email_event_email_id', table_name='email_event')
        # A key that is not hex (none the app wrote) keeps a digest of itself, so it stays unique.
        op.execute(
            "ALTER TABLE email_event ALTER COLUMN dedupe_key TYPE bytea USING CASE"
            " WHEN dedupe_key ~ '^[0-9a-f]{32}' THEN decode(substr(dedupe_key, 1, 32), 'hex')"
            " ELSE substr(sha256(convert_to(dedupe_key, 'UTF8')), 1, 16) END"
        )
        op.create_unique_constraint(
            'uq_email_event_email_id_dedupe_key', 'email_event', ['email_id', 'dedupe_key']
        )
        return
    # SQLite has no hex decoding before 3.41: convert in Python, then rebuild the table.
    table = sa.table('email_event', sa.column('id', sa.Integer), sa.column('dedupe_key', sa.LargeBinary))
    rows = bind.execute(sa.text('SELECT id, dedupe_key FROM email_event')).all()
    for start in range(0, len(rows), CHUNK):
        bind.execute(
            table.update().where(table.c.id == sa.bindparam('row_id')).values(dedupe_key=sa.bindparam('key')),
            [{'row_id': row.id, 'key': _digest(row.dedupe_key)} for row in rows[start : start + CHUNK]],
        )
    with _rebuilding(), op.batch_alter_table('email_event', schema=None) as batch_op:
        batch_op.drop_constraint('uq_email_event_dedupe_key', type_='unique')
        batch_op.drop_index('ix_email_event_email_id')
        batch_op.alter_column(
            'dedupe_key', existing_type=sa.String(length=64), type_=sa.LargeBinary(), existing_nullable=False
        )
        batch_op.create_unique_constraint('uq_email_event_email_id_dedupe_key', ['email_id', 'dedupe_key'])


@contextlib.contextmanager
def _rebuilding():
    # Rebuilding the table reflects email (its foreign key), whose expression index (0011) SQLite's
    # reflection skips with a warning; that index is not on the table being rebuilt.
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'Skipped unsupported reflection of expression-based index')
        yield


def _digest(key) -> bytes:
    import hashlib
    import re

    if isinstance(key, bytes):
        return key
    if re.fullmatch('[0-9a-f]{32,}', key):
        return bytes.fromhex(key[:32])
    return hashlib.sha256(key.encode()).digest()[:16]


def downgrade():
    # Back to hex text: the 32 characters kept, not the 64 the old code computes, so an event that
    # arrives again after a downgrade may be stored a second time.
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.drop_constraint('uq_email_event_email_id_dedupe_key', 'email_event', type_='unique')
        op.execute(
            "ALTER TABLE email_event ALTER COLUMN dedupe_key TYPE varchar(64) USING encode(dedupe_key, 'hex')"
        )
        op.create_index('ix_email_event_email_id', 'email_event', ['email_id'], unique=False)
        op.create_unique_constraint('uq_email_event_dedupe_key', 'email_event', ['dedupe_key'])
        return
    table = sa.table('email_event', sa.column('id', sa.Integer), sa.column('dedupe_key', sa.String))
    rows = bind.execute(sa.text('SELECT id, dedupe_key FROM email_event')).all()
    for start in range(0, len(rows), CHUNK):
        bind.execute(
            table.update().where(table.c.id == sa.bindparam('row_id')).values(dedupe_key=sa.bindparam('key')),
            [{'row_id': row.id, 'key': bytes(row.dedupe_key).hex()} for row in rows[start : start + CHUNK]],
        )
    with _rebuilding(), op.batch_alter_table('email_event', schema=None) as batch_op:
        batch_op.drop_constraint('uq_email_event_email_id_dedupe_key', type_='unique')
        batch_op.alter_column(
            'dedupe_key', existing_type=sa.LargeBinary(), type_=sa.String(length=64), existing_nullable=False
        )
        batch_op.create_index('ix_email_event_email_id', ['email_id'], unique=False)
        batch_op.create_unique_constraint('uq_email_event_dedupe_key', ['dedupe_key'])
