"""removal cases: since when a lift waits for the provider, and who recorded that the provider lifted it

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 12:00:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('removal_request', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_request_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('provider_done_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('provider_done_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_removal_request_provider_done_by_id_user'), 'user', ['provider_done_by_id'], ['id']
        )


def downgrade():
    with op.batch_alter_table('removal_request', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_removal_request_provider_done_by_id_user'), type_='foreignkey')
        batch_op.drop_column('provider_done_by_id')
        batch_op.drop_column('provider_done_at')
        batch_op.drop_column('provider_request_at')
