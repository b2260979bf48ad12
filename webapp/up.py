"""`flask up` (what bin/run runs): the whole product from one command.

It brings the database up to date, seeds the demo data into an empty one, then runs the web
server, the worker and the scheduler under the supervisor (webapp/supervisor.py); what the
terminal shows is webapp/run_output.py's. Ctrl-C stops them all, then the embedded Redis.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from webapp import embedded_redis
from webapp.database import migrate_database
from webapp.extensions import db
from webapp.models import User
from webapp.run_output import Terminal
from webapp.supervisor import STOP_SECONDS, supervise


def run_product(app: Flask, host: str, port: int, *, demo: bool, verbose: bool) -> None:
    """Run web server, worker and scheduler until Ctrl-C (in the app's context), then stop all."""
    url = f"http://{host}:{port}"
    terminal = Terminal(app.instance_path, verbose=verbose)
    terminal.starting(url)
    with terminal.quiet():
        migrate_database(app)
    if demo:
        _demo_users(terminal)
    db.session.remove()
    db.engine.dispose()
    supervise(child_commands(host, port), child_env(app, host, port), url, terminal)
    terminal.stopped()
    # Last, once nothing uses it: the embedded Redis server this process started, if any.
    embedded_redis.stop_all()


def child_commands(host: str, port: int) -> dict[str, list[str]]:
    """The command lines of the web server, the worker and the scheduler."""
    bin_dir = Path(sys.executable).parent
    return {
        "web": [
            str(bin_dir / "gunicorn"),
            "--bind",
            f"{host}:{port}",
            # gevent: an open log's event stream waits in a greenlet, not in one of a few threads.
            "--worker-class",
            "gevent",
            "--workers",
            "2",
            "--worker-connections",
            "1000",
            # Within the supervisor's stop deadline, so it never has to kill a worker mid-answer.
            "--graceful-timeout",
            str(int(STOP_SECONDS - 5)),
            "--access-logfile",
            "-",
            "wsgi:app",
        ],
        "worker": [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
        "scheduler": [sys.executable, "-m", "flask", "--app", "wsgi", "scheduler"],
    }


def child_env(app: Flask, host: str, port: int) -> dict[str, str]:
    """The children's environment: ours, with the settings this process resolved (the embedded
    Redis's URL, the instance folder) so that all of them share one database and one Redis."""
    config = app.config
    env = dict(os.environ)
    env.update(
        REDIS_URL=config["REDIS_URL"],
        DATABASE_URL=config["DATABASE_URL"],
        INSTANCE_PATH=app.instance_path,
        SANDBOX_STATE_PATH=config["SANDBOX_STATE_PATH"],
    )
    if config["EMAIL_PROVIDER"] == "sandbox" and not config["SANDBOX_WEBHOOK_URL"]:
        from webapp.providers import wire_format

        # The sandbox posts its events to us as the provider it plays would, at that provider's URL.
        env["SANDBOX_WEBHOOK_URL"] = f"http://{host}:{port}/webhooks/{wire_format(config)}/events"
    return env


def _demo_users(terminal: Terminal) -> None:
    """Seed the demo data into an empty database, or say where the demo users' password was shown."""
    from webapp.services import demo as demo_data

    if db.session.execute(sa.select(User.id).limit(1)).first() is None:
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
        demo_data.seed(password)
        terminal.note(f"Demo users: {', '.join(demo_data.DEMO_USERS)}; password: {password} (shown only now)")
    elif db.session.execute(sa.select(User.id).where(User.email.in_(demo_data.DEMO_USERS))).first():
        # The password is never stored: say where it was shown and how to choose a new one.
        terminal.note(
            f"Demo users: {', '.join(demo_data.DEMO_USERS)}; their password is the one printed when "
            "the demo data was first created (or DEMO_PASSWORD, if it was set then). To choose a new "
            "one: .venv/bin/flask --app wsgi seed-demo --password NEW"
        )
