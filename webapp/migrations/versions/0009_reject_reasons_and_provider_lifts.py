"""reject reasons in our words on events; a lift the provider must be asked for, on removal cases

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-12 12:00:00

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0007'
branch_labels = None
depends_on = None

# SendGrid's drop reasons (lower-cased) -> ours: the only provider whose events are stored so far.
SENDGRID_DROP_REASONS = {
    'spam reporting address': 'spam_report',
    'bounced address': 'bounced_address',
    'invalid': 'invalid_address',
    'invalid address': 'invalid_address',
    'unsubscribed address': 'unsubscribed',
    'unsubscribed group': 'unsubscribed',
}


def upgrade():
    with op.batch_alter_table('email_event', schema=None) as batch_op:
        # Why the provider would not send, in our words (the provider's own text stays in reason).
        batch_op.add_column(sa.Column('reject_reason', sa.String(length=20), nullable=True))
    with op.batch_alter_table('removal_request', schema=None) as batch_op:
        # Set when the provider refused to lift the block through its API: what to ask it for.
        batch_op.add_column(sa.Column('provider_lift_detail', sa.Text(), nullable=True))
    event = sa.table(
        'email_event', sa.column('kind', sa.String), sa.column('reason', sa.Text),
        sa.column('reject_reason', sa.String),
    )
    for text, ours in SENDGRID_DROP_REASONS.items():
        op.execute(
            event.update()
            .where(event.c.kind == 'dropped', sa.func.lower(sa.func.trim(event.c.reason)) == text)
            .values(reject_reason=ours)
        )


def downgrade():
    with op.batch_alter_table('removal_request', schema=None) as batch_op:
        batch_op.drop_column('provider_lift_detail')
    with op.batch_alter_table('email_event', schema=None) as batch_op:
        batch_op.drop_column('reject_reason')
