"""Shared plumbing of the benchmarks: a private database and Redis, the real processes (gunicorn,
RQ workers, the scheduler) started as in production, signed webhook batches, and percentiles.

Every benchmark prints its figures beside a baseline measured in the same run: the machine is
shared and noisy, so only the ratio to the baseline is comparable between runs.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
# The PostgreSQL server the benchmarks make their databases on (as its owner).
SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# gunicorn settings the figures in BENCHMARKS.md were measured with (flask up's before the
# log's push): the same for the app and for any baseline.
GUNICORN_ARGS = ["--worker-class", "gthread", "--workers", "2", "--threads", "8"]
# flask up's and the README's settings since the push: an open log's stream waits in a greenlet.
GEVENT_ARGS = ["--worker-class", "gevent", "--workers", "2", "--worker-connections", "1000"]
PASSWORD = "benchmark-password"


def psycopg_url(url: str) -> str:
    """Use psycopg 3 whichever spelling of a PostgreSQL URL was given."""
    from config_checks import database_url

    return database_url(url)


def fresh_database(label: str, keep: bool = False) -> str:
    """Create an empty database for this run on the benchmark server, migrated; dropped at exit."""
    server = sa.engine.make_url(psycopg_url(SERVER_URL))
    name = f"bench_{label}_{os.getpid()}"
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = server.set(database=name).render_as_string(hide_password=False)
    if not keep:
        atexit.register(_drop, server, name)
    return url


def _drop(server: sa.engine.URL, name: str) -> None:
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with contextlib.suppress(sa.exc.SQLAlchemyError), engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def free_port() -> int:
    """Return a TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Child processes of one benchmark, all stopped at exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []
        self.folder = Path(tempfile.mkdtemp(prefix="bench-"))
        atexit.register(self.stop)

    def start(self, command: list[str], env: dict[str, str] | None = None, log: str = "") -> subprocess.Popen:
        """Start a child in its own process group, its output in a log file under the run's folder."""
        out = open(self.folder / (log or f"child-{len(self.children)}.log"), "wb")  # noqa: SIM115
        child = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        self.children.append(child)
        return child

    def stop(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL), newest first."""
        for child in reversed(self.children):
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.children.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def redis(self) -> str:
        """Start a private Redis server (nobody else's workers take our jobs); return its URL."""
        port = free_port()
        self.start(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], log="redis.log")
        wait_until(lambda: _answers(port), "Redis")
        return f"redis://127.0.0.1:{port}/0"

    def gunicorn(
        self, app: str, env: dict[str, str], extra: list[str] | None = None, settings: list[str] | None = None
    ) -> str:
        """Start gunicorn with the product's settings (or `settings`); return its base URL once it answers."""
        port = free_port()
        self.start(
            [
                str(BIN / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                *(GUNICORN_ARGS if settings is None else settings),
                *(extra or []),
                app,
            ],
            env,
            log=f"gunicorn-{port}.log",
        )
        base = f"http://127.0.0.1:{port}"
        # One client for every probe: httpx.get builds a TLS context each call (about 50 ms of
        # CPU), taken from the servers starting beside it.
        with httpx.Client(timeout=1) as http:
            wait_until(
                lambda: _http_ok(http, base + "/healthz") or _http_ok(http, base + "/"), f"gunicorn {app}"
            )
        return base

    def workers(self, env: dict[str, str], count: int) -> None:
        """Start RQ workers as `flask worker` runs them."""
        for index in range(count):
            self.start(
                [sys.executable, "-m", "flask", "--app", "wsgi", "worker"], env, log=f"worker-{index}.log"
            )

    def scheduler(self, env: dict[str, str]) -> None:
        """Start the one scheduler."""
        self.start([sys.executable, "-m", "flask", "--app", "wsgi", "scheduler"], env, log="scheduler.log")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _http_ok(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(url).status_code < 500
    except httpx.HTTPError:
        return False


def wait_until(check: Any, what: str, timeout: float = 60.0, pause: float = 0.1) -> None:
    """Wait until check() is true; fail loudly after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: {what} did not come up within {timeout:.0f} s")
        time.sleep(pause)


def app_env(database_url: str, redis_url: str, instance: Path, **extra: str) -> dict[str, str]:
    """Environment of the app's processes for one benchmark."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": "benchmark-secret-key-0123456789-abcdefghijklmnop",
        "EMAIL_PROVIDER": "sandbox",
        "SANDBOX_STATE_PATH": str(instance / "sandbox.sqlite3"),
        "SANDBOX_WEBHOOK_URL": "",
        "LOGIN_FAILURE_SECONDS": "0",
        **extra,
    }


def make_app(env: dict[str, str], **overrides: Any) -> Any:
    """Build the app in this process with the benchmark's environment."""
    from webapp import create_app

    settings: dict[str, Any] = {**env, "RATELIMIT_ENABLED": False, "WTF_CSRF_ENABLED": False, **overrides}
    return create_app(settings)


def migrate(app: Any) -> None:
    """Create the tables."""
    from webapp.database import migrate_database

    with app.app_context():
        migrate_database(app)


class Signer:
    """Signs event webhook bodies as SendGrid does (ECDSA P-256 over timestamp + body)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_b64 = base64.b64encode(der).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        """SendGrid's signature headers for this body, signed now."""
        timestamp = str(int(time.time()))
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by a process and its descendants, living or reaped (RQ's work-horses)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of the values lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def latency_line(label: str, seconds: list[float]) -> str:
    """p50, p95, p99 and mean in milliseconds."""
    ms = [value * 1000 for value in seconds]
    return (
        f"{label:48} p50 {percentile(ms, 0.5):7.2f} ms  p95 {percentile(ms, 0.95):7.2f} ms  "
        f"p99 {percentile(ms, 0.99):7.2f} ms  mean {statistics.mean(ms):7.2f} ms  (n={len(ms)})"
    )


def sign_in(base: str, email: str, password: str = PASSWORD) -> httpx.Client:
    """Sign in through the real login form; return a client holding the session cookie."""
    import re

    client = httpx.Client(base_url=base, timeout=30)
    form = client.get("/login").text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
    data = {"email": email, "password": password, "csrf_token": token.group(1) if token else ""}
    response = client.post("/login", data=data)
    if response.status_code != 302:
        raise SystemExit(f"benchmark: could not sign in as {email} (HTTP {response.status_code})")
    return client


def browser_headers(client: httpx.Client) -> dict[str, str]:
    """What a signed-in browser sends with each of its log's requests: its session cookie, and the
    User-Agent it signed in with (Flask-Login ties the session to it: another one would mark the
    session not fresh, and re-sign its cookie, on every request of a load generator that keeps the
    first cookie)."""
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    return {"Cookie": cookie, "User-Agent": client.headers["User-Agent"], "HX-Request": "true"}


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """Measure the seconds a block takes: `with timed() as t: ...; t[0]`."""
    result: list[float] = []
    started = time.perf_counter()
    yield result
    result.append(time.perf_counter() - started)
