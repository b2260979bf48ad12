"""Command line: `flask --app wsgi <command>`."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import sqlalchemy as sa
from flask import Flask, current_app

from webapp.database import migrate_database
from webapp.extensions import db
from webapp.models import Clinic, User


def init_app(app: Flask) -> None:
    """Register the commands."""
    for command in (init_db, seed_demo, create_user, worker, up, sandbox_client_mail):
        app.cli.add_command(command)


@click.command("init-db")
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


@click.command("create-user")
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
@click.option("--from", "address", required=True, help="The client's address, as on their client file.")
def sandbox_client_mail(address: str) -> None:
    """Sandbox only: email support from a client's address, asking to come off the spam list.

    The sandbox writes the mail, DKIM-signs it with its own key for the address's domain and posts
    it through the real inbound route; a worker then checks it and support sees the case.
    """
    from webapp.services import demo

    try:
        status = demo.post_sandbox_client_mail(address)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if status != 200:
        raise click.ClickException(f"the inbound route answered {status}")
    click.echo(f"Sent a removal request from {address} to {current_app.config['SUPPORT_ADDRESS']}.")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(burst: bool) -> None:
    """Run an RQ worker (with its scheduler) on the app's queue, with the app preloaded."""
    from rq import Worker

    import jobs
    from webapp.queue import get_queue

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    jobs.use_app(app)
    # Each job runs in a forked child: give it fresh database connections, not the parent's.
    db.engine.dispose()
    Worker([get_queue()], connection=app.extensions["redis"]).work(with_scheduler=True, burst=burst)


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--demo/--no-demo", default=True, show_default=True, help="Seed demo data into an empty database."
)
def up(host: str, port: int, demo: bool) -> None:
    """Run the whole product: web server, worker and scheduler; Ctrl-C stops them all."""
    from webapp.services import demo as demo_data

    config = current_app.config
    migrate_database(current_app._get_current_object())  # type: ignore[attr-defined]
    if demo and db.session.execute(sa.select(User.id).limit(1)).first() is None:
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
        demo_data.seed(password)
        click.echo(f"Demo users: {', '.join(demo_data.DEMO_USERS)}; password: {password}")
    db.session.remove()
    db.engine.dispose()

    env = dict(os.environ)
    env.update(
        REDIS_URL=config["REDIS_URL"],
        DATABASE_URL=config["DATABASE_URL"],
        INSTANCE_PATH=current_app.instance_path,
        SANDBOX_STATE_PATH=config["SANDBOX_STATE_PATH"],
    )
    if config["EMAIL_PROVIDER"] == "sandbox" and not config["SANDBOX_WEBHOOK_URL"]:
        # The sandbox posts signed event batches to us, as SendGrid would.
        env["SANDBOX_WEBHOOK_URL"] = f"http://{host}:{port}/webhooks/sendgrid/events"
    bin_dir = Path(sys.executable).parent
    commands = {
        "web": [
            str(bin_dir / "gunicorn"),
            "--bind",
            f"{host}:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            "2",
            "--threads",
            "8",
            "--access-logfile",
            "-",
            "wsgi:app",
        ],
        "worker": [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
        "scheduler": [str(bin_dir / "rq"), "cron", "--url", config["REDIS_URL"], "jobs.cron"],
    }
    _supervise(commands, env, f"http://{host}:{port}")


def _supervise(commands: dict[str, list[str]], env: dict[str, str], url: str) -> None:
    """Start the processes, stop them all when one dies or when we are asked to stop."""
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    processes = {
        name: subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1])
        for name, command in commands.items()
    }
    click.echo(f"Clinic email log running at {url} (Ctrl-C stops web, worker and scheduler).")
    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                click.echo(f"{name} stopped unexpectedly (exit {process.returncode}); stopping everything.")
                exit_code = 1
                stopping = True
        time.sleep(0.2)
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.time() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    click.echo("Stopped.")
    sys.exit(exit_code)
