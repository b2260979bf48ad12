"""events without our id find their email by the provider's id (kept events say which send
request); send states in words apart from the statuses (sending -> claimed, failed -> refused)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12 12:00:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


# Old and new words of Email.send_state: "sending" and "failed" were status words too.
SEND_STATES = {'sending': 'claimed', 'failed': 'refused'}


def upgrade():
    for old, new in SEND_STATES.items():
        op.execute(sa.text("UPDATE email SET send_state = :new WHERE send_state = :old").bindparams(old=old, new=new))
    with op.batch_alter_table('pending_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_message_id', sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f('ix_pending_event_provider_message_id'), ['provider_message_id'], unique=False)
    # Events kept before this revision, without our id, held SendGrid's per-recipient id
    # ("<X-Message-Id>.<filter host>..."): its first part names the send request. Older ids start
    # with the host name and name no request, so they are left without one.
    if op.get_bind().dialect.name == 'postgresql':
        kept = "payload->>'provider_message_id'"
        first_part = f"split_part({kept}, '.', 1)"
    else:
        kept = "json_extract(payload, '$.provider_message_id')"
        first_part = f"substr({kept}, 1, instr({kept} || '.', '.') - 1)"
    op.execute(
        f"UPDATE pending_event SET provider_message_id = {first_part} "
        f"WHERE app_message_id = '' AND {kept} IS NOT NULL AND {kept} <> '' AND {kept} NOT LIKE 'filter%'"
    )


def downgrade():
    for old, new in SEND_STATES.items():
        op.execute(sa.text("UPDATE email SET send_state = :old WHERE send_state = :new").bindparams(old=old, new=new))
    with op.batch_alter_table('pending_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_event_provider_message_id'))
        batch_op.drop_column('provider_message_id')
