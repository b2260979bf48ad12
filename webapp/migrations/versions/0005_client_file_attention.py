"""client file: clinic time zone, appointment time of an email, handled attention items

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 12:00:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clinic', schema=None) as batch_op:
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=False, server_default='UTC'))

    with op.batch_alter_table('email', schema=None) as batch_op:
        batch_op.add_column(sa.Column('appointment_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('handled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('handled_by_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_email_appointment_at'), ['appointment_at'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_email_handled_by_id_user'), 'user', ['handled_by_id'], ['id'])


def downgrade():
    with op.batch_alter_table('email', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_email_handled_by_id_user'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_email_appointment_at'))
        batch_op.drop_column('handled_by_id')
        batch_op.drop_column('handled_at')
        batch_op.drop_column('appointment_at')

    with op.batch_alter_table('clinic', schema=None) as batch_op:
        batch_op.drop_column('timezone')
