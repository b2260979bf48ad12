"""Helpers of the fault tests: make clients and queue their emails, count what the provider
accepted per email, print each test's counts, and start, kill and always stop the real processes
(workers, `flask up`, a private redis-server) a test uses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from flask import Flask

from config import DEFAULTS
from tests.helpers import run_jobs
from webapp.extensions import db
from webapp.models import Client, Clinic, Email, OperatorAlert
from webapp.queue import get_queue
from webapp.services import sending

ROOT = Path(__file__).resolve().parents[1]
FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]
# Settings a child process must share with the test's app.
SHARED_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "EMAIL_PROVIDER",
    "SECRET_KEY",
    "SANDBOX_STATE_PATH",
    "SANDBOX_SPEED",
    "SANDBOX_WEBHOOK_URL",
    "SEND_TIMEOUT_SECONDS",
    "SEND_ABANDONED_SECONDS",
    "IN_DOUBT_GRACE_SECONDS",
    "ACTIVITY_REQUESTS_PER_MINUTE",
    "POLL_BATCH_SIZE",
)


@dataclass
class Outcome:
    """What became of a set of emails, by the provider's own count of acceptances."""

    sent_once: int = 0
    lost: int = 0  # we say it was sent; the provider never took it (or we say it failed, and it did)
    doubled: int = 0  # the provider took it more than once
    unresolved: int = 0  # neither sent nor clearly failed
    failed: int = 0  # clearly failed, and never taken
    # Handed over twice, the provider's records showing neither: held, not sent a third time, and
    # support alerted (webapp/services/in_doubt.py); taken once or never, by the provider's count.
    held: int = 0

    def line(self, name: str, extra: str = "") -> str:
        """The line a fault test prints."""
        text = (
            f"[fault] {name}: sent once {self.sent_once}, lost {self.lost}, doubled {self.doubled}, "
            f"unresolved {self.unresolved}"
        )
        if self.failed:
            text += f", failed {self.failed}"
        if self.held:
            text += f", held {self.held}"
        return f"{text} ({extra})" if extra else text


def acceptances(app: Flask) -> Counter[str]:
    """Count the messages the provider's side accepted, per app_message_id."""
    with sqlite3.connect(app.config["SANDBOX_STATE_PATH"], timeout=30) as state:
        rows = state.execute("SELECT custom_args FROM messages").fetchall()
    return Counter(json.loads(args).get("app_message_id") for (args,) in rows)


def outcome(app: Flask, email_ids: list[int]) -> Outcome:
    """Compare our record of each email with what the provider accepted."""
    taken = acceptances(app)
    db.session.expire_all()
    result = Outcome()
    for email_id in email_ids:
        email = db.session.get(Email, email_id)
        count = taken[email.app_message_id]
        if count > 1:
            result.doubled += 1
        elif email.send_state == "accepted":
            if count == 1:
                result.sent_once += 1
            else:
                result.lost += 1
        elif email.send_state == "refused":
            if count == 0:
                result.failed += 1
            else:
                result.lost += 1
        elif email.send_state == "held" and _alerted(email, "email_unreported"):
            result.held += 1
        else:
            result.unresolved += 1
    return result


def _alerted(email: Email, kind: str) -> bool:
    """Whether an open operator alert of this kind names the email."""
    return (
        db.session.query(OperatorAlert.id)
        .filter(
            OperatorAlert.email_id == email.id,
            OperatorAlert.kind == kind,
            OperatorAlert.resolved_at.is_(None),
        )
        .first()
        is not None
    )


def settled(app: Flask, email_ids: list[int]) -> bool:
    """Return whether every email is sent, clearly failed, or held (never to be handed over again)."""
    db.session.expire_all()
    states = db.session.query(Email.send_state).filter(Email.id.in_(email_ids)).all()
    return all(state in ("accepted", "refused", "held") for (state,) in states)


def wait_for(check: Callable[[], Any], timeout: float, every: float = 0.1, what: str = "") -> Any:
    """Call `check` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)  # real processes (workers, Redis, flask up): a bounded poll of wall time
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_env(app: Flask, **extra: str) -> dict[str, str]:
    """The environment of a child process that shares the test app's database, Redis and provider."""
    env = {name: value for name, value in os.environ.items() if name not in DEFAULTS}
    env.update({name: str(app.config[name]) for name in SHARED_SETTINGS})
    env.update(INSTANCE_PATH=app.instance_path, PYTHONUNBUFFERED="1", **extra)
    return env


class Processes:
    """Every process a test starts, each in its own session; all stopped at the end, checked."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[subprocess.Popen] = []
        self.seen: set[psutil.Process] = set()

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start a command with its output in a log file named after it."""
        log = open(self.folder / f"{name}-{len(self.started)}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()  # the child has its own copy
        self.started.append(process)
        self.remember(process)
        return process

    def worker(self, app: Flask) -> subprocess.Popen:
        """Start `flask worker` on the app's database, Redis and provider."""
        return self.start("worker", [*FLASK, "worker"], child_env(app))

    def redis_server(self, port: int) -> subprocess.Popen:
        """Start a private, non-persistent redis-server (tests never touch the shared one)."""
        binary = shutil.which("redis-server") or str(ROOT / ".venv" / "bin" / "redis-server")
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = self.start("redis", command, dict(os.environ))
        wait_for(lambda: _answers(port), 10, what=f"redis-server on port {port}")
        return process

    def remember(self, process: subprocess.Popen) -> None:
        """Note a process and its current descendants, to check later that none is left."""
        try:
            root = psutil.Process(process.pid)
            self.seen |= {root, *root.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def log(self, process: subprocess.Popen) -> str:
        """Return what a process wrote so far."""
        index = self.started.index(process)
        return "".join(path.read_text() for path in self.folder.glob(f"*-{index}.log"))

    def stop(self) -> list[psutil.Process]:
        """Stop every process still running (politely, then not); return any that outlived its group."""
        for process in self.started:
            self.remember(process)
            if process.poll() is None:
                with _gone():
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with _gone():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        time.sleep(0.2)  # a real process that escaped its group: give it a moment to show
        survivors = [proc for proc in self.seen if _alive(proc)]
        for proc in survivors:
            with _gone():
                proc.kill()  # escaped its process group: report it, but do not leave it running
        return survivors


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _gone:
    """Ignore a process that is already gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError | psutil.NoSuchProcess)


def _answers(port: int) -> bool:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        return bool(Redis(port=port, socket_timeout=1).ping())
    except RedisError:
        return False


def horse_of(worker: subprocess.Popen) -> psutil.Process | None:
    """Return the work-horse (the forked child running a job) of a worker, if it has one."""
    try:
        children = psutil.Process(worker.pid).children()
    except psutil.NoSuchProcess:
        return None
    return children[0] if children else None


# --- Clients, emails and jobs, in the test's own process -----------------------------------------


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print a fault test's counts even while pytest captures output."""
    with capsys.disabled():
        print(f"\n{line}")


def add_clients(count: int, shared: int = 0) -> list[Client]:
    """Clients of one clinic; the last `shared` of them share an address with an earlier one."""
    clinic = Clinic(name="Fault Clinic")
    db.session.add(clinic)
    db.session.flush()
    clients = []
    for number in range(count):
        address = number % (count - shared) if shared else number
        clients.append(
            Client(clinic_id=clinic.id, name=f"Client {number}", email=f"c{address}+delivered@example.com")
        )
    db.session.add_all(clients)
    db.session.commit()
    return clients


def queue(client: Client) -> int:
    """Queue a receipt to the client; return its email's id."""
    return sending.queue_email(client, kind="receipt", subject="Receipt", body="Thank you", sent_by=None).id


def run_cron_job(app: Flask, job: str) -> None:
    """Queue one of the cron schedule's jobs and run the queue, as `flask scheduler` would."""
    get_queue().enqueue(job)
    run_jobs(app)
