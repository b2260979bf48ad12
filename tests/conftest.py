"""Shared fixtures: a real database (PostgreSQL when DATABASE_URL says so, else SQLite), a real
Redis (REDIS_URL, else an embedded one), the sandbox provider, and a small world of two clinics."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from flask import Flask, g
from flask.testing import FlaskClient
from redis import Redis

from tests.helpers import (
    ON_POSTGRES,
    OWNER_DATABASE_URL,
    PASSWORD,
    TEST_DATABASE_URL,
    TEST_RUNTIME_ROLE,
    DatabaseUrls,
    FakeClock,
    app_settings,
    psycopg_url,
    public_key_b64,
    scan,
)

# Every process this test run starts inherits this marker, so the run can tell its own leftovers.
RUN_MARKER = "CLINIC_TEST_RUN"
LEFTOVER_WAIT_SECONDS = 10


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist's workers inherit the marker of the run that started them (their controller).
    if not is_xdist_worker(config):
        os.environ[RUN_MARKER] = f"{os.getpid()}-{time.time_ns()}"


def is_xdist_worker(config: pytest.Config) -> bool:
    """Whether this process is one of pytest-xdist's workers (not a serial run or the controller)."""
    return hasattr(config, "workerinput")


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Iterator[None]:
    """Fail the run when it left a process of its own behind (a Redis server, a web server).

    Checked once per run, by the serial run or by xdist's controller after its workers stopped
    (xdist's own sessionfinish, inside this wrapper, stops them): every process the workers start
    carries the run's marker, and their temporary folders are inside the controller's."""
    result = yield
    if is_xdist_worker(session.config):
        return result
    factory = getattr(session.config, "_tmp_path_factory", None)
    folder = str(factory.getbasetemp()) if factory is not None else None
    left = leftover_processes(os.environ[RUN_MARKER], folder, LEFTOVER_WAIT_SECONDS)
    if not left:
        return result
    described = ", ".join(f"{proc.pid} {' '.join(proc.cmdline())[:120]}" for proc in left)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"error: the test run left processes behind (now killed): {described}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result


@pytest.fixture(autouse=True)
def sigint_handler_kept() -> Iterator[None]:
    """Fail a test that leaves another SIGINT handler behind: Ctrl-C would no longer stop the run."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after != before:
        signal.signal(signal.SIGINT, before)  # the next tests, and Ctrl-C, get it back
        pytest.fail(f"the test left SIGINT handled by {after!r} (was {before!r}): restore it in a finally")


# Tests that start real processes of their own (bin/run, `flask up`, workers, schedulers, gunicorn,
# a redis-server or PostgreSQL server, the benchmarks) run one after another on one xdist worker:
# each brings up several processes against real-time deadlines, and two at once would share the
# cores with them (docs/testing.md, "Parallel runs"). A test joins the group by using a fixture
# named `processes` or `private_postgres`, by the `embedded` mark, or by saying so:
# `pytest.mark.xdist_group("processes")`.
PROCESS_GROUP = "processes"
PROCESS_FIXTURES = {"processes", "private_postgres"}


@pytest.hookimpl(trylast=True)  # after xdist's own pass over the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test that starts real processes of its own in the `processes` xdist group, and
    name each test's group in its node id, where xdist's scheduler reads it (`--dist loadgroup`)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        starts_processes = (
            bool(PROCESS_FIXTURES & fixtures) or item.get_closest_marker("embedded") is not None
        )
        if starts_processes and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(PROCESS_GROUP))
    if getattr(config.option, "loadgroup", False):  # set in xdist's workers under --dist loadgroup
        for item in items:
            _name_xdist_group(item)


def _name_xdist_group(item: pytest.Item) -> None:
    """Suffix the node id with "@group", as pytest-xdist 3.8 means to: it sets the `_nodeid`
    attribute, which pytest 9.2 no longer reads (its node ids are structured), so every group
    would silently be spread over the workers (pytest-dev/pytest-xdist#1386)."""
    from _pytest.nodeid import NodeId

    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    if not names:
        return
    suffix = "@" + "_".join(sorted(names))
    if not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
        item._id = NodeId.parse(item.nodeid + suffix)


def leftover_processes(marker: str, folder: str | None, wait: float) -> list[psutil.Process]:
    """Return the processes (other than this one) that carry the marker in their environment or
    name the run's temporary folder on their command line (a redis-server rewrites its
    environment with its process title), after waiting for them to go."""
    deadline = time.monotonic() + wait
    while True:
        left = []
        for proc in psutil.process_iter(["status", "cmdline"]):
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            with contextlib.suppress(psutil.Error):
                named = folder is not None and (
                    folder in " ".join(proc.info["cmdline"] or ()) or proc.cwd().startswith(folder)
                )
                if named or proc.environ().get(RUN_MARKER) == marker:
                    left.append(proc)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)  # real processes exiting: a bounded poll, not a wait for time to pass


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: the one REDIS_URL names, or an embedded server for this test run."""
    if os.environ.get("REDIS_URL"):
        # Each run (each xdist worker) claims a database number of its own (a key in database 0
        # says whose it is), so runs side by side never flush each other's data.
        url = os.environ["REDIS_URL"]
        claim = None
        if not url.startswith("unix:"):
            base = url.split("?")[0].rstrip("/")
            if base.rsplit("/", 1)[-1].isdigit() and base.count("/") > 2:
                base = base.rsplit("/", 1)[0]
            claims = Redis.from_url(f"{base}/0")
            number = claim_redis_database(claims)
            claim = f"{REDIS_CLAIM_PREFIX}{number}"
            url = f"{base}/{number}"
        yield url
        if claim is not None:
            release_redis_database(claims, claim)
        return
    from webapp import embedded_redis

    folder = tempfile.mkdtemp(prefix="redis-")
    yield embedded_redis.start(folder)
    embedded_redis.stop(folder)
    shutil.rmtree(folder, ignore_errors=True)


REDIS_CLAIM_PREFIX = "pytest-redis-db:"
REDIS_DATABASES = range(1, 16)  # Redis has 16 by default; 0 holds the claims
REDIS_CLAIM_SECONDS = 3 * 3600  # a claim left by a run killed on another machine lapses
REDIS_CLAIM_WAIT_SECONDS = 120
# Set the claim to this process only if it still names the process that held it.
_TAKE_OVER = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) end"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


def _redis_claimant() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def claim_redis_database(claims: Redis) -> int:
    """Claim a Redis database number for this process: a free one, or one whose claimant (a
    process on this machine) has died without letting it go. When all are held by live runs,
    wait for one, then fail clearly rather than share one (shared, each run's flushes would
    empty the other's queues)."""
    me = _redis_claimant()
    start = os.getpid() % len(REDIS_DATABASES)
    numbers = [*REDIS_DATABASES[start:], *REDIS_DATABASES[:start]]
    deadline = time.monotonic() + REDIS_CLAIM_WAIT_SECONDS
    while True:
        holders = []
        for number in numbers:
            key = f"{REDIS_CLAIM_PREFIX}{number}"
            if claims.set(key, me, nx=True, ex=REDIS_CLAIM_SECONDS):
                return number
            holder = (claims.get(key) or b"").decode()
            if _claimant_is_gone(holder) and claims.eval(_TAKE_OVER, 1, key, holder, me, REDIS_CLAIM_SECONDS):
                return number
            holders.append(holder)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"every Redis database (1-15) is claimed by a running test run ({', '.join(holders)}): "
                "wait for one to end, or run fewer side by side (fewer xdist workers: -n 1)"
            )
        time.sleep(1)  # other test runs, in real time: a bounded wait for one to end


def _claimant_is_gone(holder: str) -> bool:
    """Whether the claim names a process of this machine that no longer runs."""
    host, _, pid = holder.rpartition(" ")
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def release_redis_database(claims: Redis, key: str) -> None:
    """Let go of this process's claim (unless it lapsed and another run took it)."""
    claims.eval(_RELEASE, 1, key, _redis_claimant())


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[DatabaseUrls]:
    """Run the migrations once (as the owner, granting the runtime role, as `init-db` does)."""
    from webapp import create_app
    from webapp.database import migrate_database

    if ON_POSTGRES:
        database = _private_postgres_database(OWNER_DATABASE_URL, TEST_DATABASE_URL)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'template.sqlite3'}"
        database = DatabaseUrls(url, url)
    app = create_app(app_settings(tmp_path_factory.mktemp("instance"), database, redis_url))
    with app.app_context():
        migrate_database(app)
        from webapp.extensions import db

        db.engine.dispose()
    yield database
    for engine in _WIPERS.values():
        engine.dispose()


def _private_postgres_database(owner_url: str, app_url: str) -> DatabaseUrls:
    """Create a fresh database for this run beside the given one, so parallel runs never collide."""
    server = sa.engine.make_url(psycopg_url(owner_url))
    runtime = sa.engine.make_url(psycopg_url(app_url))
    name = f"{server.database}_pytest_{os.getpid()}"
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        if runtime.username == server.username:
            runtime = runtime.set(username=TEST_RUNTIME_ROLE, password=TEST_RUNTIME_ROLE)
            _create_role(connection, TEST_RUNTIME_ROLE)
    engine.dispose()
    atexit.register(_drop_database, server, name)
    return DatabaseUrls(
        url=runtime.set(database=name).render_as_string(hide_password=False),
        owner_url=server.set(database=name).render_as_string(hide_password=False),
    )


def _create_role(connection: sa.Connection, role: str) -> None:
    """Create a login role with no rights of its own, unless it exists (runs may race to make it)."""
    connection.execute(
        sa.text(
            f"DO $$ BEGIN CREATE ROLE {role} LOGIN PASSWORD '{role}'; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
    )


def _drop_database(server: sa.engine.URL, name: str) -> None:
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def wire_format() -> str:
    """The sandbox's wire format for this test (override with @pytest.mark.parametrize)."""
    return "sendgrid"


@pytest.fixture
def make_app(
    migrated_database: DatabaseUrls, redis_url: str, tmp_path: Path, wire_format: str
) -> Iterator[callable]:  # type: ignore[valid-type]
    """Build the app for one test (call it with setting overrides); data is wiped afterwards."""
    from webapp import create_app
    from webapp.extensions import db

    if ON_POSTGRES:
        database = migrated_database
    else:
        copy = tmp_path / "test.sqlite3"
        shutil.copy(migrated_database.url.removeprefix("sqlite:///"), copy)
        database = DatabaseUrls(f"sqlite:///{copy}", f"sqlite:///{copy}")
    apps: list[Flask] = []

    def build(**overrides: object) -> Flask:
        overrides.setdefault("SANDBOX_WIRE_FORMAT", wire_format)
        app = create_app(app_settings(tmp_path, database, redis_url, **overrides))
        apps.append(app)
        return app

    Redis.from_url(redis_url).flushdb()
    yield build
    for app in apps:
        app.extensions["log_feed"].stop()  # the listener of any open log stream stops with its test
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    if ON_POSTGRES and apps:
        # As the owner: the app's runtime role may TRUNCATE nothing (the audit trail least of all).
        _wipe(migrated_database.owner_url)
    import jobs

    jobs.use_app(None)


_WIPERS: dict[str, sa.Engine] = {}


def _wipe(owner_url: str) -> None:
    """Empty every table of the test database and restart its ids, as TRUNCATE ... RESTART IDENTITY
    would: by DELETE, children first, which on a test's few rows costs a tenth of a TRUNCATE's
    new files. As the owner, with the audit trail's append-only trigger set aside inside the
    transaction only (as the retention purge does)."""
    from webapp.extensions import db

    engine = _WIPERS.get(owner_url)
    if engine is None:
        engine = _WIPERS[owner_url] = sa.create_engine(owner_url, pool_size=1)
    deletes = "; ".join(f'DELETE FROM "{table.name}"' for table in reversed(db.metadata.sorted_tables))
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only"))
        connection.execute(sa.text(deletes))
        connection.execute(sa.text("ALTER TABLE audit_entry ENABLE TRIGGER audit_entry_append_only"))
        connection.execute(
            sa.text(
                "SELECT setval(sequence.oid, 1, false) FROM pg_class sequence "
                "WHERE sequence.relkind = 'S' AND sequence.relnamespace = 'public'::regnamespace"
            )
        )


@pytest.fixture
def app(make_app: callable) -> Iterator[Flask]:  # type: ignore[valid-type]
    """The app with test settings, inside an app context."""
    application = make_app()

    # Requests in a test share the test's app context, and with it `g`, where Flask-Login keeps
    # the signed-in user; forget it after each request, as a fresh context would in production.
    @application.teardown_request
    def forget_request_user(_error: BaseException | None) -> None:
        g.pop("_login_user", None)

    with application.app_context():
        yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class World:
    """Two clinics with users of every role and clients with emails."""

    clinic_a: object
    clinic_b: object
    users: dict[str, object]
    client_a: object
    client_b: object


@pytest.fixture
def world(app: Flask) -> World:
    from webapp.extensions import db
    from webapp.models import Client, Clinic
    from webapp.services import accounts

    clinic_a = Clinic(name="Clinic A")
    clinic_b = Clinic(name="Clinic B")
    db.session.add_all([clinic_a, clinic_b])
    db.session.flush()
    users = {
        "clinician": accounts.create_user("clinician@a.example", "Cleo A", "clinician", PASSWORD, clinic_a),
        "owner": accounts.create_user("owner@a.example", "Owen A", "owner", PASSWORD, clinic_a),
        "support": accounts.create_user("support@platform.example", "Sue Support", "support", PASSWORD, None),
        "clinician_b": accounts.create_user("clinician@b.example", "Cleo B", "clinician", PASSWORD, clinic_b),
        "owner_b": accounts.create_user("owner@b.example", "Owen B", "owner", PASSWORD, clinic_b),
    }
    client_a = Client(clinic_id=clinic_a.id, name="Jane Doe", email="jane.doe+delivered@example.com")
    client_b = Client(clinic_id=clinic_b.id, name="Bob Other", email="bob.other+delivered@example.com")
    db.session.add_all([client_a, client_b])
    db.session.commit()
    return World(clinic_a, clinic_b, users, client_a, client_b)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app_clock() -> Iterator[FakeClock]:
    """Move the whole app's time (and the configured sandbox's) by hand, from now on."""
    import time

    from webapp import clock as app_time

    fake = FakeClock(time.time())
    app_time.use(fake)
    yield fake
    app_time.use(None)


@pytest.fixture
def sandbox(tmp_path: Path, clock: FakeClock):  # noqa: ANN201 - imported lazily, like the app
    """A sandbox provider with its own state file."""
    from webapp.sandbox.sendgrid import SendGridSandbox

    return SendGridSandbox(str(tmp_path / "sandbox.sqlite3"), clock=clock)


# Shared fixtures of the page, webhook and inbound-mail tests (their plain helpers are in
# tests/helpers.py and tests/inbound_mail.py). A module that wants every page it renders checked
# says so with `pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")`.


@pytest.fixture
def separate_requests() -> Iterator[None]:
    """Give each request an empty `g`, as in production.

    The `app` fixture keeps one app context open for the whole test, and Flask reuses it for every
    test-client request, so `g` would carry the signed-in user (Flask-Login) and the CSRF token
    (Flask-WTF) from one client's request into another's.
    """
    from flask import request_started

    def clear(sender: object, **extra: object) -> None:
        for name in list(g):
            g.pop(name)

    request_started.connect(clear)
    yield
    request_started.disconnect(clear)


@pytest.fixture
def html_guard() -> Iterator[list[tuple[str, int, str]]]:
    """Check every HTML page rendered during the test for CSP breakers and the CSP header."""
    from flask import request, request_finished

    from webapp.email_frame import EMAIL_FRAME_POLICY

    pages: list[tuple[str, int, str]] = []
    problems: list[str] = []

    def check(sender: object, response: object, **extra: object) -> None:
        if response.mimetype != "text/html" or response.is_streamed:
            return
        html = response.get_data(as_text=True)
        pages.append((request.path, response.status_code, html))
        policy = response.headers.get("Content-Security-Policy", "")
        found = scan(html).problems
        if request.endpoint == "emails.as_sent_html" and response.status_code == 200:
            # An email's HTML part as sent, byte for byte (whatever it holds): only its own policy
            # may hold it.
            if policy != EMAIL_FRAME_POLICY:
                problems.append(f"{request.path}: an email's HTML part under {policy!r}")
            return
        if policy == EMAIL_FRAME_POLICY:
            # An email's HTML part, shown framed: mail clients need its inline styles, which its own
            # policy allows, and nothing else (webapp/email_frame.py).
            found = [problem for problem in found if "style" not in problem]
        elif "default-src 'self'" not in policy or "unsafe-" in policy:
            problems.append(f"{request.path}: weak CSP {policy!r}")
        problems.extend(f"{request.path}: {problem}" for problem in found)

    request_finished.connect(check)
    yield pages
    request_finished.disconnect(check)
    assert not problems, "\n".join(sorted(set(problems))[:50])


@pytest.fixture
def key():  # noqa: ANN201 - an EC private key (cryptography is imported lazily, like the app)
    """The key that signs the event webhook's requests in a test."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def signed_app(make_app: callable, key) -> Iterator[Flask]:  # type: ignore[valid-type]
    """The app trusting `key` for the event webhook, inside an app context."""
    app = make_app(SENDGRID_WEBHOOK_PUBLIC_KEY=public_key_b64(key), WEBHOOK_TOLERANCE_SECONDS=600)
    with app.app_context():
        yield app


@pytest.fixture(scope="module")
def keys():  # noqa: ANN201 - tests.inbound_mail.Keys
    """DKIM keys for every test domain (and a weak one), with the DNS that publishes them."""
    from tests.inbound_mail import DOMAINS, WEAK_KEY, Keys

    found = Keys()
    for domain in DOMAINS:
        found.add(domain)
    found.add("clinic.example", selector="short", pem=WEAK_KEY)
    return found
