"""Helpers that several test modules share: the test run's database and settings, signing in,
running jobs, data makers, page readers, request signers and fake clocks. Plain functions and
values only; the shared fixtures are in conftest.py (a test module never imports a conftest)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient

from webapp.extensions import db
from webapp.models import Client, Email, EmailContent, RemovalRequest, utcnow
from webapp.providers.base import OutgoingMessage, ProviderEvent
from webapp.services import sending
from webapp.services.events import apply_events

# --- The test run: its database, and the app's settings ------------------------------------------

PASSWORD = "correct horse battery staple"
TEST_DATABASE_URL = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgres")
# On PostgreSQL the app connects as a runtime role, as in production: DATABASE_URL's role when
# MIGRATION_DATABASE_URL names another one (CI), else a role the tests create.
OWNER_DATABASE_URL = os.environ.get("MIGRATION_DATABASE_URL") or TEST_DATABASE_URL
TEST_RUNTIME_ROLE = "clinic_runtime_test"


@dataclass
class DatabaseUrls:
    """Where the tests' data lives: the app's URL, and the owner's (migrations, wiping)."""

    url: str  # the app's connection: a runtime role on PostgreSQL, a template file on SQLite
    owner_url: str


def psycopg_url(url: str) -> str:
    """The URL as SQLAlchemy opens it with psycopg 3 (as the app does)."""
    from config_checks import database_url

    return database_url(url)


def app_settings(instance: Path, database: DatabaseUrls, redis_url: str, **extra: object) -> dict:
    """The app's settings in a test: its database, Redis and instance folder, the sandbox, and
    what keeps tests fast (cheap password hashes, no rate limits)."""
    return {
        "TESTING": True,
        "INSTANCE_PATH": str(instance),
        "DATABASE_URL": database.url,
        "MIGRATION_DATABASE_URL": database.owner_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": redis_key_prefix(redis_url),
        "SECRET_KEY": "test-secret-key-not-for-production",
        "EMAIL_PROVIDER": "sandbox",
        "SANDBOX_STATE_PATH": str(instance / "sandbox.sqlite3"),
        "SANDBOX_WEBHOOK_URL": "",
        "ACTIVITY_REQUESTS_PER_MINUTE": 1000,
        "WTF_CSRF_ENABLED": False,
        "RATELIMIT_ENABLED": False,
        # Failed sign-ins answer at once (tests/test_session_revocation.py checks the floor).
        "LOGIN_FAILURE_SECONDS": 0,
        # Tests create many users; a cheap hash keeps them fast (production keeps scrypt).
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        **extra,
    }


def redis_key_prefix(redis_url: str) -> str:
    """The app's Redis prefix in a test run: keys live in the run's own Redis database (conftest's
    claim), but pub/sub channels span the whole server, so a prefix naming that database keeps
    another run's (or xdist worker's) log announcements out of this one's streams."""
    database = redis_url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return f"clinicmail-{database}:" if database.isdigit() else "clinicmail:"


# The sandbox's wire formats; an end-to-end test runs with each by parametrizing `wire_format`.
WIRE_FORMATS = ("sendgrid", "postmark")


# --- Signing in and running jobs -----------------------------------------------------------------


def login(client: FlaskClient, email: str, password: str = PASSWORD) -> None:
    """Sign in through the real login form."""
    response = client.post("/login", data={"email": email, "password": password})
    assert response.status_code == 302, response.data[:500]


def run_jobs(app: Flask) -> None:
    """Run every queued job (and what they enqueue) in this process, against the real Redis.

    One RQ worker per app, started again for each run as a real worker loops: a new one each
    time cost its set-up and RQ's registry clean-up per call (a fault test makes hundreds)."""
    import jobs
    from webapp.queue import get_queue

    jobs.use_app(app)
    with app.app_context(), kept_stop_handlers():
        queue = get_queue()
        if len(queue):
            connection = app.extensions["redis"]
            worker = _workers.get(app)
            if worker is None or worker.connection is not connection or worker.queue_names() != [queue.name]:
                worker = _workers[app] = _test_worker_class()([queue], connection=connection)
            worker.work(burst=True)


# The worker run_jobs keeps for each app (a test's app, so a test's worker), gone with the app.
_workers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@functools.cache
def _test_worker_class() -> type:
    from rq import SimpleWorker

    class TestWorker(SimpleWorker):
        """A worker without the command channel: nobody sends it commands, and joining its
        listener thread costs a tenth of a second per run."""

        def subscribe(self) -> None:
            pass

        def unsubscribe(self) -> None:
            pass

    return TestWorker


@contextlib.contextmanager
def kept_stop_handlers() -> Iterator[None]:
    """Put back the SIGINT and SIGTERM handlers after RQ's loop, which installs its own and leaves
    them (Ctrl-C would then only ask a finished worker to stop, and the test run would go on)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# --- The provider's side of the wire ------------------------------------------------------------

# The provider-layer tests run a sandbox on a clock the test moves, from this moment.
SANDBOX_START = 1_767_348_000.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = SANDBOX_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# An HTML part as the product sends one: a link to track (the sandbox's `clicked` scenario clicks
# it) and the pixel's place. HTML_WITHOUT_LINK has nothing a click could be on.
INTAKE_LINK = "https://example.com/intake-form"
HTML_WITH_LINK = (
    '<!doctype html><html><body><p>Please fill in <a href="https://example.com/intake-form">our intake'
    " form</a> before Tuesday.</p></body></html>"
)
HTML_WITHOUT_LINK = "<!doctype html><html><body><p>See you on Tuesday at 10:00.</p></body></html>"


def with_html(message: OutgoingMessage, html: str = HTML_WITH_LINK) -> OutgoingMessage:
    """The same message with an HTML part (a text-only one never reports an open)."""
    return dataclasses.replace(message, body_html=html)


class RecordingTransport(httpx.BaseTransport):
    """Pass requests on to another transport, keeping a copy of each."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)


# --- The email log -------------------------------------------------------------------------------


CLINICIAN = "clinician@a.example"


BOUNCE = "550 5.1.1 The email account that you tried to reach does not exist"


def add_content(
    email: Email, html: str = HTML_WITH_LINK, reply_to: str = "", calendar_ics: str | None = None
) -> EmailContent:
    """Give an email the HTML part (and Reply-To, calendar) it is handed over with, as composing does
    (beside the From and To names queue_email stored, if it went through it)."""
    content = email.content or EmailContent(email=email)
    content.body_html, content.reply_to, content.calendar_ics = html, reply_to, calendar_ics
    db.session.add(content)
    return content


def add_email(
    client: Client,
    *,
    sent_at: datetime | None = None,
    events: Iterable[tuple[float, str, dict]] = (),
    subject: str = "Appointment reminder",
    kind: str = "appointment_reminder",
    to_address: str | None = None,
    resend_of: Email | None = None,
) -> Email:
    """Record an email sent at `sent_at` with provider events given as (seconds after, kind, details)."""
    sent_at = sent_at or utcnow()
    email = Email(
        clinic_id=client.clinic_id,
        client_id=client.id,
        to_address=to_address or client.email,
        subject=subject,
        body="Hello",
        kind=kind,
        provider="sandbox",
        send_state="accepted",
        created_at=sent_at,
        status_changed_at=sent_at,
        resend_of_id=resend_of.id if resend_of else None,
    )
    db.session.add(email)
    db.session.flush()
    history = [ProviderEvent("sending", sent_at, app_message_id=email.app_message_id)]
    for seconds, event_kind, details in events:
        history.append(
            ProviderEvent(
                event_kind,
                sent_at + timedelta(seconds=seconds),
                app_message_id=email.app_message_id,
                **details,
            )
        )
    apply_events(email, history, source="poll")
    # A history lived, not replayed: we received each event when it happened.
    email.status_received_at = email.status_changed_at
    db.session.commit()
    return email


DELIVERED = [(5, "processed", {}), (20, "delivered", {"raw": {"response": "250 2.0.0 OK"}})]


BOUNCED = [(5, "processed", {}), (20, "bounce", {"reason": BOUNCE})]


def htmx_get(client, url: str, trigger: str = "email-log"):
    """GET as htmx does when the element with id `trigger` fires."""
    return client.get(url, headers={"HX-Request": "true", "HX-Trigger": trigger})


def poll_url(html: str) -> str:
    """Return the URL the log polls, as rendered into its hx-get."""
    match = re.search(r'<section id="email-log"[^>]*?hx-get="([^"]+)"', html, re.S)
    assert match, html[:2000]
    return match.group(1).replace("&amp;", "&")


def row_html(html: str, email: Email) -> str:
    """Return the markup of one row of the log."""
    match = re.search(rf'<li class="log-row[^"]*" id="email-{email.id}">(.*?)\n    </li>', html, re.S)
    assert match, f"no row for email {email.id}"
    return match.group(1)


def timeline_html(client, email: Email) -> str:
    """Return the markup of an email's timeline as its log row fetches it when opened."""
    response = htmx_get(client, f"/emails/{email.id}/timeline", trigger=f"toggle-{email.id}")
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def text(html: str) -> str:
    """Collapse markup into the words a reader sees."""
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()
    return re.sub(r" ([.,;:)])", r"\1", words)


def emails_of(client: Client) -> list[Email]:
    return list(
        db.session.execute(sa.select(Email).where(Email.client_id == client.id).order_by(Email.id)).scalars()
    )


# --- Pages: what the CSP would block -------------------------------------------------------


URL_ATTRIBUTES = {"href", "src", "action", "formaction", "hx-get", "hx-post", "data", "srcdoc"}


class PageScan(HTMLParser):
    """Collect every element with its attribute names, and every CSP-breaking construct."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self.problems: list[str] = []
        self.meta: dict[str, str] = {}
        self.body_attributes: dict[str, str] = {}
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.elements[(tag, tuple(sorted(values)))] += 1
        if tag == "script":
            src = values.get("src", "")
            self.scripts.append(src)
            if not src:
                self.problems.append("inline <script>")
            elif not src.startswith("/static/"):
                self.problems.append(f"script from elsewhere: {src}")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "meta" and "name" in values:
            self.meta[values["name"]] = values.get("content", "")
        if tag == "body":
            self.body_attributes = values
        for name, value in values.items():
            if name.startswith("on"):
                self.problems.append(f"event handler attribute {name}= on <{tag}>")
            if name == "style":
                self.problems.append(f"style= attribute on <{tag}>")
            if name.startswith(("hx-on", "data-hx-on")):
                self.problems.append(f"{name}= needs eval")
            scheme = value.strip().lower().replace("\t", "").replace("\n", "")
            if name in URL_ATTRIBUTES and scheme.startswith(("javascript:", "vbscript:", "data:text/html")):
                self.problems.append(f"script URL in {name}= on <{tag}>")

    handle_startendtag = handle_starttag


@functools.lru_cache(maxsize=32)
def scan(html: str) -> PageScan:
    """Parse one page (once: the html_guard fixture and the test itself often read the same one)."""
    parser = PageScan()
    parser.feed(html)
    parser.close()
    return parser


def email_with_history(
    client: Client,
    *,
    subject: str = "Appointment reminder",
    body: str = "See you on Monday",
    deferral: str = "421 4.7.0 Try again later",
    response: str = "250 2.0.0 OK",
    url: str = "https://example.com/intake-form",
    bounce: str = "550 5.1.1 The email account does not exist",
    sent_by: object = None,
) -> Email:
    """Send an email through the service and give it a full, failed history of provider events."""
    email = sending.queue_email(client, kind="free_text", subject=subject, body=body, sent_by=sent_by)
    start = email.created_at
    ids = {"app_message_id": email.app_message_id}
    apply_events(
        email,
        [
            ProviderEvent("processed", start + timedelta(seconds=1), **ids),
            ProviderEvent("deferred", start + timedelta(seconds=2), reason=deferral, attempt=1, **ids),
            ProviderEvent("delivered", start + timedelta(seconds=3), raw={"response": response}, **ids),
            ProviderEvent("open", start + timedelta(seconds=40), machine=True, **ids),
            ProviderEvent("click", start + timedelta(seconds=60), url=url, **ids),
            ProviderEvent("bounce", start + timedelta(seconds=90), reason=bounce, **ids),
        ],
        source="webhook",
    )
    db.session.commit()
    return email


def removal_case(address: str, *, verdict: str = "verified", tag: str = "1") -> RemovalRequest:
    """File a removal case directly (as the inbound webhook would), for page tests."""
    case = RemovalRequest(
        from_address=address,
        subject="Please remove me",
        body_excerpt="I reported it by mistake.",
        message_id=f"<{tag}@mail.example>",
        fingerprint=f"test-{tag}-{address}"[:64],
        verdict=verdict,
        evidence={"verified_by": "dkim", "reasons": [], "dkim": [], "receiver_dkim": "none"},
    )
    db.session.add(case)
    db.session.commit()
    return case


# --- Signing in, settings, signed webhooks --------------------------------------------------

EVENTS_URL = "/webhooks/sendgrid/events"


def attempt(client: FlaskClient, email: str, password: str, address: str, forwarded: str | None = None):
    """One sign-in attempt from a client address (and a claimed X-Forwarded-For)."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post(
        "/login",
        data={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
        headers=headers,
    )


def p256_key_b64() -> str:
    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def production(**changes: str) -> dict[str, str]:
    """A production configuration that starts; each test spoils one thing."""
    settings = {
        "APP_ENV": "production",
        "DATABASE_URL": "postgresql://x/y",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": "SG.key",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": p256_key_b64(),
        "TRUSTED_HOSTS": "clinic.example",
    }
    settings.update(changes)
    return {name: value for name, value in settings.items() if value is not None}


def sign(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def one_event(**fields) -> bytes:
    event = {"email": "a@example.com", "timestamp": int(time.time()), "event": "delivered", **fields}
    return json.dumps([event]).encode() + b"\r\n"


# --- The log poll's known counters: a feed to wait for, a Redis link to freeze -------------------


def wait_until_current(feed: object, seconds: float = 10.0) -> None:
    """Wait (bounded) until a log change feed listens and Redis answered its ping."""
    deadline = time.monotonic() + seconds
    feed.start()  # type: ignore[attr-defined]
    while not feed.current():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the log change feed did not start listening"
        threading.Event().wait(0.01)


class FreezableLink:
    """A TCP relay to Redis that can be frozen: it then passes nothing either way, as a network
    that drops a connection without a word (no reset, no close)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.open = threading.Event()
        self.open.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        """Pass nothing more until thawed."""
        self.open.clear()

    def cut(self) -> None:
        """Drop every connection through the link (new ones are still let through)."""
        connections, self._sockets = self._sockets, []
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # what a blocked read notices, unlike close()
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """Drop every connection and let no new one through."""
        self.open.set()
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [near, far]
            threading.Thread(target=self._pump, args=(near, far), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.open.wait()
                sink.sendall(data)
        except OSError:
            pass
