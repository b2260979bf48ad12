"""Command line: `flask --app wsgi <command>`."""

from __future__ import annotations

import contextlib
import gc
import logging
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
from flask.cli import with_appcontext
from redis import Redis
from redis.exceptions import RedisError

from webapp import embedded_redis
from webapp.database import migrate_database
from webapp.extensions import db
from webapp.models import Clinic, User
from webapp.run_output import RUN_LOG, Terminal

# How often a worker cleans RQ's registries (abandoned jobs, jobs stuck between queues).
MAINTENANCE_SECONDS = 60
# `up` restarts a child that died after 1 s, doubling while it keeps dying young.
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0
# Ctrl-C gives the children this long to stop before they are killed.
STOP_SECONDS = 15.0


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
    from rq import SimpleWorker, Worker
    from rq.job import Job
    from rq.queue import Queue

    import jobs
    from webapp.providers import get_provider
    from webapp.queue import get_queue
    from webapp.services.webhooks import APPLY_JOB

    # Short, set-based, idempotent database work: a fork and a new connection per job cost as much
    # as the work (about 15 to 60 ms against 100 to 200 ms for 1,000 events). A job killed with its
    # worker leaves its batches unapplied for the sweep, as a killed child would.
    in_process = frozenset({APPLY_JOB})

    class AppWorker(Worker):
        """An RQ worker that remembers being asked to stop, as against losing Redis, and runs the
        jobs named in `in_process` without forking."""

        stop_asked = False

        def request_stop(self, signum: int, frame: object) -> None:
            self.stop_asked = True
            super().request_stop(signum, frame)

        def execute_job(self, job: Job, queue: Queue) -> None:
            if job.func_name in in_process:
                SimpleWorker.execute_job(self, job, queue)  # type: ignore[arg-type]
            else:
                super().execute_job(job, queue)

        def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
            # Nobody sends heartbeats while a job runs in this process: cover its whole timeout.
            if job.func_name in in_process:
                return SimpleWorker.get_heartbeat_ttl(self, job, working_time)  # type: ignore[arg-type]
            return super().get_heartbeat_ttl(job, working_time)

        def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
            # With no child (a job running in this process) RQ would signal our own process group.
            if self.horse_pid:
                super().kill_horse(sig)

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    jobs.use_app(app)
    # Built once here, not in every forked job: the provider's HTTP client (its SSL context)
    # costs 20 to 40 ms of CPU to make. It has sent nothing, so no connection is shared.
    get_provider(app.config)
    # Forked jobs get fresh database connections, not the parent's: the parent has none yet, and the
    # ones its in-process jobs keep are dropped (not closed: they stay the parent's) in each child.
    db.engine.dispose()
    engine = db.engine
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    # The preloaded app's objects leave the collector's view: a child's collections would
    # otherwise walk, and so copy page by page, the parent's whole heap.
    gc.freeze()
    redis = app.extensions["redis"]
    logging.getLogger("rq.worker").addFilter(_OncePerOutage())
    while True:
        rq_worker = AppWorker([get_queue()], connection=redis, maintenance_interval=MAINTENANCE_SECONDS)
        try:
            rq_worker.work(burst=burst)
        except RedisError as error:
            click.echo(f"worker: lost Redis ({error})", err=True)
        _stop_listening(rq_worker)
        if burst or rq_worker.stop_asked:
            return
        # RQ quits its loop on most connection errors (a Redis restart): wait, then start again.
        if not _wait_for_redis(redis, "worker", pause=1.0):
            return


@click.command("scheduler")
@with_appcontext
def scheduler() -> None:
    """Run the periodic jobs of jobs/cron.py (exactly one scheduler); it rides out Redis restarts,
    and a restart carries on each job's schedule instead of enqueuing every job at once."""
    from rq.cron import CronScheduler
    from rq.exceptions import StopRequested

    class AppCron(CronScheduler):
        """rq cron's scheduler, remembering being asked to stop, as against losing Redis."""

        stop_asked = False

        def _request_stop(self, signum: int, frame: object) -> None:
            if self.stop_asked:
                return  # already stopping (Ctrl-C reaches us, then the supervisor's SIGTERM)
            self.stop_asked = True
            super()._request_stop(signum, frame)

    from jobs.cron import forget_dead_schedulers, resume_schedule

    redis = current_app.extensions["redis"]
    cron = AppCron(connection=redis)
    cron.load_config_from_file("jobs.cron")
    while not cron.stop_asked:
        try:
            forget_dead_schedulers(redis)
            resume_schedule(cron)  # a restart carries on the schedule: no burst of every job
            cron.start()
        except StopRequested:
            return
        except RedisError as error:
            if cron.stop_asked:
                return
            click.echo(f"scheduler: lost Redis ({error})", err=True)
            try:
                if not _wait_for_redis(redis, "scheduler"):
                    return
            except StopRequested:
                return
        else:
            return


def _stop_listening(rq_worker: object) -> None:
    """Stop a finished worker's command listener, which RQ leaves running when Redis is gone."""
    thread = getattr(rq_worker, "pubsub_thread", None)
    if thread is not None and thread.is_alive():
        thread.stop()
        thread.join(timeout=1)
        with contextlib.suppress(RedisError, OSError):
            rq_worker.pubsub.close()  # type: ignore[attr-defined]


def _wait_for_redis(redis: Redis, who: str, pause: float = 0.0) -> bool:
    """Wait, with backoff, until Redis answers (at least `pause` seconds, so a loop that keeps
    failing for another reason does not spin); say so once each way. False: asked to stop."""
    stop = {"asked": False}

    def request_stop(signum: int, _frame: object) -> None:
        stop["asked"] = True

    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop["asked"]:
            time.sleep(0.1)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    delay = 0.5
    said = False
    try:
        sleep(pause)
        while not stop["asked"]:
            try:
                redis.ping()
            except RedisError as error:
                if not said:
                    click.echo(f"{who}: Redis does not answer ({error}); retrying with backoff", err=True)
                    said = True
                sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                click.echo(
                    f"{who}: Redis answers again; carrying on"
                    if said
                    else f"{who}: RQ stopped its loop (see above); starting it again",
                    err=True,
                )
                return True
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _OncePerOutage(logging.Filter):
    """Let through one of RQ's "could not connect to Redis" lines per outage, not one a retry,
    and none of its tracebacks of a lost connection (the worker command says what happened)."""

    QUIET_SECONDS = 120.0

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RedisError):
            return False
        if "could not connect to Redis" not in str(record.msg):
            return True
        now = time.monotonic()
        repeated = now - self._last < self.QUIET_SECONDS
        self._last = now
        return not repeated


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
    from webapp.services import demo as demo_data

    config = current_app.config
    terminal = Terminal(current_app.instance_path, verbose=verbose)
    terminal.starting(f"http://{host}:{port}")
    with terminal.quiet():
        migrate_database(current_app._get_current_object())  # type: ignore[attr-defined]
    if demo and db.session.execute(sa.select(User.id).limit(1)).first() is None:
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
        demo_data.seed(password)
        terminal.note(f"Demo users: {', '.join(demo_data.DEMO_USERS)}; password: {password} (shown only now)")
    elif demo and db.session.execute(sa.select(User.id).where(User.email.in_(demo_data.DEMO_USERS))).first():
        # The password is never stored: say where it was shown and how to choose a new one.
        terminal.note(
            f"Demo users: {', '.join(demo_data.DEMO_USERS)}; their password is the one printed when "
            "the demo data was first created (or DEMO_PASSWORD, if it was set then). To choose a new "
            "one: .venv/bin/flask --app wsgi seed-demo --password NEW"
        )
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
        from webapp.providers import wire_format

        # The sandbox posts its events to us as the provider it plays would, at that provider's URL.
        env["SANDBOX_WEBHOOK_URL"] = f"http://{host}:{port}/webhooks/{wire_format(config)}/events"
    bin_dir = Path(sys.executable).parent
    commands = {
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
    _supervise(commands, env, f"http://{host}:{port}", terminal)
    terminal.stopped()
    # Last, once nothing uses it: the embedded Redis server this process started, if any.
    embedded_redis.stop_all()
    click.echo("Stopped.")
    sys.exit(0)


def _supervise(commands: dict[str, list[str]], env: dict[str, str], url: str, terminal: Terminal) -> None:
    """Start the processes and keep them running: restart one that dies (with backoff, so a
    child that cannot start does not spin); stop them all when we are asked to stop.

    Each child runs in its own process group: Ctrl-C reaches only this supervisor, which stops
    each group as a whole (a gunicorn worker with its master), so none is left holding the port.
    """
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    root = Path(__file__).resolve().parents[1]

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            commands[name],
            env=env,
            cwd=root,
            process_group=0,
            stdout=terminal.children_output(),
            stderr=subprocess.STDOUT if terminal.children_output() else None,
            preexec_fn=embedded_redis.die_with_parent,  # noqa: PLW1509 - only prctl, before exec
        )

    processes = {name: start(name) for name in commands}
    started_at = {name: time.monotonic() for name in commands}
    delays = dict.fromkeys(commands, 0.0)
    restart_at: dict[str, float] = {}
    while not stopping:
        terminal.check(url)
        now = time.monotonic()
        for name, process in processes.items():
            if name in restart_at:
                if now >= restart_at[name]:
                    del restart_at[name]
                    processes[name] = start(name)
                    started_at[name] = now
                continue
            if process.poll() is None:
                continue
            # Back off only while it keeps dying soon after each start.
            ran_long = now - started_at[name] > RESTART_RESET_SECONDS
            delays[name] = 1.0 if ran_long or not delays[name] else min(delays[name] * 2, RESTART_MAX_SECONDS)
            click.echo(
                f"{name} stopped unexpectedly (exit {process.returncode}){terminal.see_log()}; "
                f"restarting it in {delays[name]:.0f} s."
            )
            restart_at[name] = now + delays[name]
        time.sleep(0.2)
    # A child waiting to be restarted is gone, but what it started may live on in its group.
    _stop_groups(list(processes.values()))


def _stop_groups(running: list[subprocess.Popen]) -> None:
    """Stop each child's whole process group: politely, then not; wait until each group is empty."""
    for process in running:
        if process.poll() is None or _group_alive(process.pid):
            _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    # A leader can exit before its group does (gunicorn's master before a worker that still
    # holds the port): wait for the rest, then kill what is left.
    for process in running:
        group_deadline = time.monotonic() + 3
        while _group_alive(process.pid) and time.monotonic() < group_deadline:
            time.sleep(0.1)
        if _group_alive(process.pid):
            _signal_group(process.pid, signal.SIGKILL)


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    """Return whether any process of the group still exists."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
