"""Command line for records: `flask --app wsgi purge-old-records` and `purge-audit`."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext

from webapp.models import utcnow
from webapp.services import retention


def init_app(app: Flask) -> None:
    """Register the commands."""
    for command in (purge_old_records, purge_audit):
        app.cli.add_command(command)


@click.command("purge-old-records")
@with_appcontext
def purge_old_records() -> None:
    """Purge emails, events, webhook bodies and removal-mail bodies older than RETENTION_DAYS."""
    while True:
        report = retention.purge()
        click.echo(", ".join(f"{name} {count}" for name, count in report.counts.items()))
        if report.finished:
            return


@click.command("purge-audit")
@with_appcontext
def purge_audit() -> None:
    """Delete audit lines older than AUDIT_RETENTION_DAYS, as MIGRATION_DATABASE_URL's role (the owner)."""
    days = current_app.config["AUDIT_RETENTION_DAYS"]
    if not days:
        click.echo("AUDIT_RETENTION_DAYS is 0: the audit trail is kept for ever; nothing to do.")
        return
    engine = sa.create_engine(current_app.config["MIGRATION_DATABASE_URL"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            removed = retention.purge_audit(
                connection, retention.cutoff(utcnow(), days), current_app.config["RETENTION_BATCH_SIZE"]
            )
    finally:
        engine.dispose()
    click.echo(f"Removed {removed} audit lines older than {days} days.")
