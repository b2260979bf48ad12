"""operator alerts grouped into incidents; an email handed over again unfound is counted, then held

Revision ID: 0014_incidents
Revises: 0013
Create Date: 2026-12-02 10:00:00

"""
import warnings
from contextlib import contextmanager

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0014_incidents'
down_revision = '0013'
branch_labels = None
depends_on = None

# The causes that lie with the email provider (webapp/services/alerts.py, PROVIDER_CAUSES).
PROVIDER_CAUSES = ('email_in_doubt', 'email_unreported', 'provider_auth')


def upgrade():
    op.create_table(
        'incident',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('scope', sa.String(length=80), nullable=False),
        sa.Column('clinic_id', sa.Integer(), nullable=True),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['clinic_id'], ['clinic.id'], name=op.f('fk_incident_clinic_id_clinic')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_incident')),
    )
    op.create_index(
        'uq_incident_open_kind_scope',
        'incident',
        ['kind', 'scope'],
        unique=True,
        postgresql_where=sa.text('closed_at IS NULL'),
        sqlite_where=sa.text('closed_at IS NULL'),
    )
    with _email_reflected(), op.batch_alter_table('operator_alert', schema=None) as batch_op:
        batch_op.add_column(sa.Column('incident_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_operator_alert_incident_id'), ['incident_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_operator_alert_incident_id_incident'), 'incident', ['incident_id'], ['id']
        )
    # A plain ADD COLUMN on both databases: rebuilding email on SQLite would lose its expression index.
    op.add_column('email', sa.Column('resends_unfound', sa.Integer(), server_default='0', nullable=False))
    _group_open_alerts()


@contextmanager
def _email_reflected():
    """On SQLite, rebuilding operator_alert reflects the email table its foreign key names, and
    SQLite cannot reflect email's index on lower(to_address) (0011): it is only skipped there, as
    email itself is left alone."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'Skipped unsupported reflection of expression-based index')
        yield


def _group_open_alerts():
    """Put the alerts open now into incidents, as the app groups new ones."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            'SELECT a.id, a.kind, e.clinic_id, e.provider FROM operator_alert a '
            'LEFT JOIN email e ON e.id = a.email_id WHERE a.resolved_at IS NULL ORDER BY a.id'
        )
    ).all()
    if not rows:
        return
    provider = _configured_provider(bind)
    incidents = {}
    for alert_id, kind, clinic_id, email_provider in rows:
        if clinic_id is not None and kind not in PROVIDER_CAUSES:
            key = (kind, f'clinic:{clinic_id}', clinic_id)
        else:
            key = (kind, f'provider:{email_provider or provider}', None)
        if key not in incidents:
            bind.execute(
                sa.text(
                    'INSERT INTO incident (kind, scope, clinic_id, opened_at) '
                    'VALUES (:kind, :scope, :clinic_id, CURRENT_TIMESTAMP)'
                ),
                {'kind': key[0], 'scope': key[1], 'clinic_id': key[2]},
            )
            incidents[key] = bind.execute(
                sa.text('SELECT id FROM incident WHERE kind = :kind AND scope = :scope AND closed_at IS NULL'),
                {'kind': key[0], 'scope': key[1]},
            ).scalar_one()
        bind.execute(
            sa.text('UPDATE operator_alert SET incident_id = :incident WHERE id = :id'),
            {'incident': incidents[key], 'id': alert_id},
        )


def _configured_provider(bind):
    """The provider an alert naming no email belongs to, as the app groups it (its setting)."""
    try:
        from flask import current_app

        return current_app.config['EMAIL_PROVIDER']
    except (RuntimeError, KeyError):  # run outside the app: the provider of the latest email
        latest = bind.execute(sa.text('SELECT provider FROM email ORDER BY id DESC LIMIT 1')).scalar()
        return latest or 'sendgrid'


def downgrade():
    # A held email goes back to being in doubt: the older code checks it again (and may resend it).
    op.execute("UPDATE email SET send_state = 'in_doubt' WHERE send_state = 'held'")
    # SQLite drops a plain column in place (3.35 and later), keeping email's expression index.
    op.execute('ALTER TABLE email DROP COLUMN resends_unfound')
    with _email_reflected(), op.batch_alter_table('operator_alert', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_operator_alert_incident_id_incident'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_operator_alert_incident_id'))
        batch_op.drop_column('incident_id')
    op.drop_index('uq_incident_open_kind_scope', table_name='incident')
    op.drop_table('incident')
