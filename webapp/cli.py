"""Command line: `flask --app wsgi <command>`.

The commands only read their options and call the code that does the work: the worker is
webapp/worker.py, the scheduler webapp/scheduler.py, `up` webapp/up.py (its supervisor
webapp/supervisor.py, its terminal webapp/run_output.py)."""

from __future__ import annotations

import secrets
import sys
import time

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext

from webapp.database import migrate_database
from webapp.extensions import db
from webapp.models import Clinic, User
from webapp.run_output import RUN_LOG


def init_app(app: Flask) -> None:
    """Register the commands."""
    for command in (init_db, seed_demo, create_user, worker, scheduler, up, sandbox_client_mail):
        app.cli.add_command(command)
    from webapp import cli_records

    cli_records.init_app(app)
    app.cli.add_command(seed_load)


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create or upgrade the database tables (runs the migrations).

    On PostgreSQL with MIGRATION_DATABASE_URL set, the migrations run as that role (the owner of
    the tables), then DATABASE_URL's role (the app's) is granted row access, and only SELECT and
    INSERT on the audit trail.
    """
    role = migrate_database(current_app._get_current_object())  # type: ignore[attr-defined]
    click.echo("Database is up to date.")
    if role:
        click.echo(f"Runtime role {role} may read and write rows; the audit trail it can only add to.")


@click.command("seed-demo")
@with_appcontext
@click.option("--password", help="Password for the demo users (default: a new random one, printed).")
def seed_demo(password: str | None) -> None:
    """Create a demo clinic, its users, about 20 clients and 30 days of email history."""
    from webapp.services import demo

    password = password or secrets.token_urlsafe(9)
    created = demo.seed(password)
    if not created:
        demo.set_passwords(password)
        click.echo("Demo data already present; demo users' password reset.")
    click.echo(f"Demo users (password: {password}):")
    for email in demo.DEMO_USERS:
        click.echo(f"  {email}")


@click.command("seed-load")
@with_appcontext
@click.option("--clinics", default=5_000, show_default=True)
@click.option("--clients", default=100_000, show_default=True)
@click.option("--emails", default=1_000_000, show_default=True, help="Each with its events (about 4 each).")
@click.option(
    "--password", help="Password of the clinicians (clinician<N>@load.example); default: random, printed."
)
def seed_load(clinics: int, clients: int, emails: int, password: str | None) -> None:
    """PostgreSQL: make a large data set quickly (clinics, a clinician each, clients, emails, events)."""
    from webapp.services import load_data

    password = password or secrets.token_urlsafe(9)
    started = time.perf_counter()
    try:
        load_data.seed_load(load_data.LoadSizes(clinics, clients, emails), password, say=click.echo)
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"Made {clinics} clinics, {clients} clients and {emails} emails"
        f" in {time.perf_counter() - started:.0f} s; "
        f"sign in as clinician1@{load_data.LOAD_DOMAIN} (the biggest clinic) with password {password}"
    )


@click.command("create-user")
@with_appcontext
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["clinician", "owner", "support"]), required=True)
@click.option("--clinic", "clinic_name", help="Clinic name (created if new); not for support users.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user(email: str, name: str, role: str, clinic_name: str | None, password: str) -> None:
    """Create a user account."""
    from webapp.services import accounts

    clinic = None
    if clinic_name:
        clinic = db.session.execute(sa.select(Clinic).where(Clinic.name == clinic_name)).scalar_one_or_none()
        if clinic is None:
            clinic = Clinic(name=clinic_name)
            db.session.add(clinic)
            db.session.flush()
    if db.session.execute(sa.select(User.id).where(User.email == email.strip().lower())).first():
        raise click.ClickException(f"a user with the email {email} already exists")
    try:
        accounts.create_user(email, name, role, password, clinic)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    db.session.commit()
    click.echo(f"Created {role} {email}.")


@click.command("sandbox-client-mail")
@with_appcontext
@click.option("--from", "address", required=True, help="The client's address, as on their client file.")
def sandbox_client_mail(address: str) -> None:
    """Sandbox only: email support from a client's address, asking to come off the spam list.

    The sandbox writes the mail, DKIM-signs it with its own key for the address's domain and posts
    it through the real inbound route; a worker then checks it and support sees the case.
    """
    from webapp.demo import actions

    try:
        status = actions.post_sandbox_client_mail(address)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if status != 200:
        raise click.ClickException(f"the inbound route answered {status}")
    click.echo(f"Sent a removal request from {address} to {current_app.config['SUPPORT_ADDRESS']}.")


@click.command("worker")
@with_appcontext
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(burst: bool) -> None:
    """Run an RQ worker on the app's queue, with the app preloaded; it rides out Redis restarts.

    Each job runs in a forked child, except applying stored webhook batches, which runs in the
    worker itself (no fork, and its database connection is kept from job to job)."""
    from webapp.worker import run_worker

    run_worker(current_app._get_current_object(), burst=burst)  # type: ignore[attr-defined]


@click.command("scheduler")
@with_appcontext
def scheduler() -> None:
    """Run the periodic jobs of jobs/cron.py (exactly one scheduler); it rides out Redis restarts,
    and a restart carries on each job's schedule instead of enqueuing every job at once."""
    from webapp.scheduler import run_scheduler

    run_scheduler(current_app._get_current_object())  # type: ignore[attr-defined]


@click.command("up")
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--demo/--no-demo", default=True, show_default=True, help="Seed demo data into an empty database."
)
@click.option(
    "--verbose",
    is_flag=True,
    help=f"Show every line of the web server, worker and scheduler here (else in instance/{RUN_LOG}).",
)
def up(host: str, port: int, demo: bool, verbose: bool) -> None:
    """Run the whole product: web server, worker and scheduler; Ctrl-C stops them all.

    Once it is up it says where, who can sign in and how to stop it; the routine lines of the
    web server, worker and scheduler go to instance/run.log (the previous run's: run.log.1)."""
    from webapp.up import run_product

    run_product(current_app._get_current_object(), host, port, demo=demo, verbose=verbose)  # type: ignore[attr-defined]
    click.echo("Stopped.")
    sys.exit(0)
