"""The sandbox: SendGrid's side of the wire, simulated, for the zero-setup demo and for tests.

It is a WSGI application that answers the SendGrid v3 requests the real adapter makes (Mail Send,
Email Activity, spam reports and bounces), so the adapter runs unchanged through
`httpx.WSGITransport`. It also posts signed event webhook batches, like SendGrid does.

The recipient address picks what happens to a message (see SCENARIOS): the tag after "+" in the
local part, else the whole local part; other addresses get a random but repeatable progression.
A message's events are a pure function of (message, accepted_at, now): an event is visible once
its time has come, so a test moves an injected clock instead of sleeping.

State lives in its own SQLite file, apart from the app's tables, safe for several processes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from webapp.private_files import ensure_private_file


@dataclass(frozen=True)
class Step:
    """One event of a scenario, named as the event webhook names it."""

    event: str
    attempt: int | None = None
    reason: str | None = None
    url: str | None = None
    machine: bool = False


DEFER_REASON = "421 4.7.0 Try again later"
BOUNCE_REASON = "550 5.1.1 The email account that you tried to reach does not exist"
SPAM_DROP_REASON = "Spam Reporting Address"
INTAKE_FORM_URL = "https://example.com/intake-form"
OTHER_URLS = (INTAKE_FORM_URL, "https://example.com/appointments", "https://example.com/invoices/latest")

PROCESSED = Step("processed")
DELIVERED = Step("delivered")
BOUNCED = Step("bounce", reason=BOUNCE_REASON)
DROPPED_FOR_SPAM = Step("dropped", reason=SPAM_DROP_REASON)

# scenario -> [(seconds after acceptance, event)]. "dropped" is also what any address already on
# the spam-report list gets; the scenario's own job is to put its address on that list first.
SCENARIOS: dict[str, list[tuple[float, Step]]] = {
    "delivered": [(1, PROCESSED), (3, DELIVERED)],
    "deferred": [
        (1, PROCESSED),
        (2, Step("deferred", attempt=1, reason=DEFER_REASON)),
        (5, Step("deferred", attempt=2, reason=DEFER_REASON)),
        (8, DELIVERED),
    ],
    "bounced": [(1, PROCESSED), (3, BOUNCED)],
    "dropped": [(1, PROCESSED), (2, DROPPED_FOR_SPAM)],
    "machine-open": [(1, PROCESSED), (3, DELIVERED), (6, Step("open", machine=True))],
    "clicked": [(1, PROCESSED), (3, DELIVERED), (12, Step("open")), (15, Step("click", url=INTAKE_FORM_URL))],
    "spam": [(1, PROCESSED), (3, DELIVERED), (12, Step("open")), (20, Step("spamreport"))],
    "stuck": [(1, PROCESSED)],
}
RANDOM = "random"

# Webhook event names -> Email Activity event names.
POLLED_NAMES: dict[str, str] = {
    "processed": "processed",
    "delivered": "delivered",
    "deferred": "deferred",
    "dropped": "dropped",
    "bounce": "bounced",
    "open": "opened",
    "click": "clicked",
    "spamreport": "spam_report",
}

FORBIDDEN_KEY = "sandbox-forbidden"  # an API key the sandbox answers with 403
MAX_BODY_BYTES = 30 * 1024 * 1024
RATE_LIMIT = 600  # requests a minute, only reported in the X-RateLimit-* headers
WEBHOOK_BATCH_SIZE = 500
SANDBOX_IP = "192.0.2.25"  # TEST-NET-1: addresses that belong to nobody
CLIENT_IP = "198.51.100.7"
MX_SERVER = "mx.sandbox.invalid"
USER_AGENT = "Mozilla/5.0 (sandbox)"
HELP_BASE = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>.]+")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    msg_id TEXT PRIMARY KEY, x_message_id TEXT NOT NULL, to_email TEXT NOT NULL, from_email TEXT NOT NULL,
    subject TEXT NOT NULL, categories TEXT NOT NULL, custom_args TEXT NOT NULL, accepted_at REAL NOT NULL,
    scenario TEXT NOT NULL, webhook_done INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_to_email ON messages (to_email);
CREATE INDEX IF NOT EXISTS messages_webhook_done ON messages (webhook_done);
CREATE TABLE IF NOT EXISTS webhook_posted (msg_id TEXT NOT NULL, event_index INTEGER NOT NULL,
    PRIMARY KEY (msg_id, event_index));
CREATE TABLE IF NOT EXISTS spam_reports (email TEXT PRIMARY KEY, created INTEGER NOT NULL, ip TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bounces (email TEXT PRIMARY KEY, created INTEGER NOT NULL, reason TEXT NOT NULL,
    status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seeded_addresses (email TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS failures (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
    status INTEGER NOT NULL, path_prefix TEXT NOT NULL, retry_after INTEGER, remaining INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS request_counts (path TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rate_window (id INTEGER PRIMARY KEY CHECK (id = 1), minute INTEGER NOT NULL,
    n INTEGER NOT NULL);
"""

URLS = Map(
    [
        Rule("/v3/mail/send", endpoint="mail_send", methods=["POST"]),
        Rule("/v3/messages", endpoint="list_messages", methods=["GET"]),
        Rule("/v3/messages/<msg_id>", endpoint="message_detail", methods=["GET"]),
        Rule("/v3/suppression/spam_reports", endpoint="list_spam_reports", methods=["GET"]),
        Rule("/v3/suppression/spam_reports/<email>", endpoint="spam_report", methods=["GET", "DELETE"]),
        Rule("/v3/suppression/bounces", endpoint="list_bounces", methods=["GET"]),
    ]
)


@dataclass(frozen=True)
class SimMessage:
    """One accepted message to one recipient, as the sandbox keeps it."""

    msg_id: str
    x_message_id: str
    to_email: str
    from_email: str
    subject: str
    categories: tuple[str, ...]
    custom_args: dict[str, Any]
    accepted_at: float
    scenario: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SimMessage:
        """Rebuild a message from its table row."""
        return cls(
            msg_id=row["msg_id"],
            x_message_id=row["x_message_id"],
            to_email=row["to_email"],
            from_email=row["from_email"],
            subject=row["subject"],
            categories=tuple(json.loads(row["categories"])),
            custom_args=json.loads(row["custom_args"]),
            accepted_at=row["accepted_at"],
            scenario=row["scenario"],
        )


@dataclass(frozen=True)
class Visible:
    """An event of a message whose time has come."""

    index: int  # position in the message's timeline, stable across calls
    at: int  # unix seconds, the same in webhook and Email Activity answers
    step: Step


class QuerySyntaxError(ValueError):
    """An Email Activity query the sandbox does not understand."""


def scenario_for(address: str) -> str:
    """Return the scenario an address asks for: its +tag, else its local part, else random."""
    local = address.split("@", 1)[0].lower()
    tag = local.split("+", 1)[1] if "+" in local else local
    return tag if tag in SCENARIOS else RANDOM


def timeline(scenario: str, msg_id: str) -> list[tuple[float, Step]]:
    """Return every event a message will ever have, in order."""
    return SCENARIOS[scenario] if scenario in SCENARIOS else random_timeline(msg_id)


def random_timeline(msg_id: str) -> list[tuple[float, Step]]:
    """A realistic progression over a few seconds, the same every time for the same msg_id."""
    rng = random.Random(msg_id)
    at = rng.uniform(0.5, 2.0)
    steps = [(at, PROCESSED)]
    if rng.random() < 0.15:
        at += rng.uniform(1, 3)
        steps.append((at, Step("deferred", attempt=1, reason=DEFER_REASON)))
    at += rng.uniform(1, 5)
    if rng.random() < 0.03:
        return [*steps, (at, BOUNCED)]
    steps.append((at, DELIVERED))
    if rng.random() < 0.6:
        at += rng.uniform(2, 30)
        steps.append((at, Step("open", machine=rng.random() < 0.4)))
        if rng.random() < 0.3:
            at += rng.uniform(1, 15)
            steps.append((at, Step("click", url=rng.choice(OTHER_URLS))))
    return steps


class SandboxServer:
    """A WSGI app that answers like SendGrid's v3 API and posts signed event webhooks."""

    def __init__(
        self,
        state_path: str,
        *,
        webhook_url: str = "",
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
    ) -> None:
        self.state_path = state_path
        self.webhook_url = webhook_url
        self.clock = clock
        self.speed = speed
        self._private_key: ec.EllipticCurvePrivateKey | None = None
        self._local = threading.local()
        # It holds the key that signs our webhooks: SQLite gives its -wal and -shm files this mode too.
        ensure_private_file(state_path)
        self._create_schema()
        with self._db() as db:
            if db.execute("SELECT 1 FROM meta WHERE key = 'private_key'").fetchone() is None:
                pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                db.execute("INSERT INTO meta (key, value) VALUES ('private_key', ?)", (pem.decode(),))

    # State

    def _create_schema(self) -> None:
        """Create the state tables; several processes may do this at once on a new file."""
        for attempt in range(50):
            db = self._connect()
            try:
                # WAL lets the web process read while a worker writes; the mode sticks to the file.
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as error:
                # Switching the journal mode does not wait for another connection's lock.
                if "locked" not in str(error) or attempt == 49:
                    raise
                time.sleep(0.1)
            finally:
                db.close()

    def _connect(self) -> sqlite3.Connection:
        """Open the state file; another process holding the write lock makes us wait, not fail."""
        db = sqlite3.connect(self.state_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        # A simulator's state: in WAL mode, NORMAL survives any crash of a process and only an
        # operating system crash may lose the last commits; FULL's fsync per commit made every
        # request of a batch of sends queue for the disk.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _thread_connection(self) -> sqlite3.Connection:
        """This thread's connection to the state file, kept open: closing the last connection to
        a WAL file checkpoints it, which cost each request of a batch of sends a disk flush."""
        held = getattr(self._local, "held", None)
        if held is None or held[0] != os.getpid():  # a forked child opens its own
            held = (os.getpid(), self._connect())
            self._local.held = held
        return held[1]

    @contextmanager
    def _db(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """Use the state file for one transaction (an immediate one when writing)."""
        db = self._thread_connection()
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if db.in_transaction:
            db.execute("COMMIT")

    def _at(self, accepted_at: float, offset: float) -> float:
        """Return when an event `offset` seconds after acceptance happens, at this sandbox's speed."""
        return accepted_at + offset / self.speed

    def _visible(self, message: SimMessage, now: float) -> list[Visible]:
        """Return the events of a message whose time has come."""
        return [
            Visible(index, int(self._at(message.accepted_at, offset)), step)
            for index, (offset, step) in enumerate(timeline(message.scenario, message.msg_id))
            if self._at(message.accepted_at, offset) <= now
        ]

    # Test controls

    def fail_next(
        self, status: int, count: int = 1, path_prefix: str = "/v3/", retry_after: int | None = None
    ) -> None:
        """Make the next `count` requests under path_prefix fail with this status."""
        with self._db() as db:
            db.execute(
                "INSERT INTO failures (kind, status, path_prefix, retry_after, remaining)"
                " VALUES ('fail', ?, ?, ?, ?)",
                (status, path_prefix, retry_after, count),
            )

    def accept_then_fail_next(self, count: int = 1) -> None:
        """Make the next `count` valid sends be accepted but answered with 500 (a lost response)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO failures (kind, status, path_prefix, retry_after, remaining)"
                " VALUES ('accept_then_fail', 500, '/v3/mail/send', NULL, ?)",
                (count,),
            )

    def hold_next(
        self,
        count: int = 1,
        seconds: float = 30.0,
        path_prefix: str = "/v3/mail/send",
        after_accepting: bool = False,
    ) -> None:
        """Make the next `count` requests under path_prefix wait `seconds` before they are answered
        (fault tests kill the worker meanwhile); with after_accepting, a send is taken first."""
        kind = "hold_after_accept" if after_accepting else "hold"
        with self._db() as db:
            db.execute(
                "INSERT INTO failures (kind, status, path_prefix, retry_after, remaining)"
                " VALUES (?, 0, ?, ?, ?)",
                (kind, path_prefix, seconds, count),
            )

    def add_spam_report(self, email: str, created: float) -> None:
        """Put an address on the spam-report list as reported at `created` (demo history).

        It also counts as seen by its `dropped` scenario, so a later removal sticks.
        """
        email = email.strip().lower()
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO seeded_addresses (email) VALUES (?)", (email,))
            db.execute(
                "INSERT INTO spam_reports (email, created, ip) VALUES (?, ?, ?)"
                " ON CONFLICT (email) DO UPDATE SET created = min(created, excluded.created)",
                (email, int(created), CLIENT_IP),
            )

    def requests_seen(self, path_prefix: str) -> int:
        """Return how many requests arrived for paths starting with path_prefix."""
        with self._db(write=False) as db:
            row = db.execute(
                "SELECT coalesce(sum(n), 0) FROM request_counts WHERE substr(path, 1, length(?)) = ?",
                (path_prefix, path_prefix),
            ).fetchone()
        return int(row[0])

    # WSGI

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Answer one request the way SendGrid's v3 API would."""
        return self._respond(Request(environ))(environ, start_response)

    def _respond(self, request: Request) -> Response:
        """Route one request, after counting it and applying any queued failure."""
        now = self.clock()
        with self._db() as db:
            db.execute(
                "INSERT INTO request_counts (path, n) VALUES (?, 1)"
                " ON CONFLICT (path) DO UPDATE SET n = n + 1",
                (request.path,),
            )
            used = db.execute(
                "INSERT INTO rate_window (id, minute, n) VALUES (1, ?, 1) ON CONFLICT (id) DO UPDATE"
                " SET n = CASE WHEN minute = excluded.minute THEN n + 1 ELSE 1 END, minute = excluded.minute"
                " RETURNING n",
                (int(now // 60),),
            ).fetchone()[0]
            failure = _take_failure(db, "fail", request.path)
            hold = _take_failure(db, "hold", request.path)
        if hold is not None:
            time.sleep(hold["retry_after"])  # outside the transaction: others carry on meanwhile
        reset = (int(now // 60) + 1) * 60
        rate_headers = {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(max(0, RATE_LIMIT - used)),
            "X-RateLimit-Reset": str(reset),
        }
        if failure is not None:
            response = _failure_response(failure["status"])
            if failure["status"] == 429:
                wait = failure["retry_after"] if failure["retry_after"] is not None else 60
                rate_headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + wait)})
        else:
            response = _auth_error(request) or self._dispatch(request, now)
        response.headers.update(rate_headers)
        return response

    def _dispatch(self, request: Request, now: float) -> Response:
        """Call the handler of the matched endpoint."""
        try:
            endpoint, args = URLS.bind_to_environ(request.environ).match()
        except HTTPException as error:
            message = "not found" if error.code == 404 else (error.name or "error").lower()
            return _errors(error.code or 400, [{"message": message, "field": None}])
        handler: Callable[..., Response] = getattr(self, f"_{endpoint}")
        return handler(request, now, **args)

    # Mail Send

    def _mail_send(self, request: Request, now: float) -> Response:
        """Validate a Mail Send body, record one message per recipient, answer 202 with X-Message-Id."""
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _errors(413, [{"message": "content too large", "field": None}])
        data = request.get_data()
        if len(data) > MAX_BODY_BYTES:
            return _errors(413, [{"message": "content too large", "field": None}])
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        problems = mail_send_errors(payload)
        if problems:
            return _errors(400, problems)
        x_message_id = secrets.token_urlsafe(16)
        with self._db() as db:
            self._record(db, payload, x_message_id, now)
            lost = _take_failure(db, "accept_then_fail", request.path)
            hold = _take_failure(db, "hold_after_accept", request.path)
        if hold is not None:
            time.sleep(hold["retry_after"])  # taken, and the answer is late
        if lost is not None:
            return _failure_response(500)
        return Response(status=202, headers={"X-Message-Id": x_message_id})

    def _record(self, db: sqlite3.Connection, payload: dict[str, Any], x_message_id: str, now: float) -> None:
        """Store one message per recipient, and the list entries its scenario will create."""
        categories = json.dumps(_strings(payload.get("categories")))
        index = 0
        for personalization in payload["personalizations"]:
            sender = personalization.get("from")
            if not isinstance(sender, dict) or not _valid_email(sender.get("email")):
                sender = payload["from"]
            subject = personalization.get("subject") or payload.get("subject")
            custom_args = {
                **_object(payload.get("custom_args")),
                **_object(personalization.get("custom_args")),
            }
            for recipient in personalization["to"]:
                email = recipient["email"].strip().lower()
                msg_id = f"{x_message_id}.filterdrecv-sandbox-{index}"
                index += 1
                wanted = scenario_for(email)
                if wanted == "dropped":
                    _seed_spam_report(db, email, int(now))
                if _on_spam_list(db, email, now):
                    scenario = "dropped"
                else:
                    scenario = "delivered" if wanted == "dropped" else wanted
                db.execute(
                    "INSERT INTO messages (msg_id, x_message_id, to_email, from_email, subject, categories,"
                    " custom_args, accepted_at, scenario) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        msg_id,
                        x_message_id,
                        email,
                        sender["email"],
                        subject,
                        categories,
                        json.dumps(custom_args),
                        now,
                        scenario,
                    ),
                )
                for offset, step in timeline(scenario, msg_id):
                    at = int(self._at(now, offset))
                    if step.event == "spamreport":
                        db.execute(
                            "INSERT INTO spam_reports (email, created, ip) VALUES (?, ?, ?)"
                            " ON CONFLICT (email) DO UPDATE SET created = min(created, excluded.created)",
                            (email, at, CLIENT_IP),
                        )
                    elif step.event == "bounce":
                        db.execute(
                            "INSERT INTO bounces (email, created, reason, status) VALUES (?, ?, ?, '5.1.1')"
                            " ON CONFLICT (email) DO UPDATE SET created = min(created, excluded.created)",
                            (email, at, BOUNCE_REASON),
                        )

    # Email Activity

    def _list_messages(self, request: Request, now: float) -> Response:
        """GET /v3/messages: the messages matching a query that have at least one event so far."""
        try:
            terms = parse_query(request.args.get("query", ""))
            limit = _int_arg(request, "limit", 10, 1, 1000)
        except ValueError as error:
            return _errors(400, [{"message": f"invalid syntax: {error}"}])
        where, params = _where(terms)
        listed: list[dict[str, Any]] = []
        with self._db(write=False) as db:
            rows = db.execute(
                f"SELECT * FROM messages WHERE {where} ORDER BY accepted_at DESC, msg_id", params
            ).fetchall()
        for row in rows:
            message = SimMessage.from_row(row)
            events = self._visible(message, now)
            if events:
                listed.append(_summary(message, events))
            if len(listed) >= limit:
                break
        return _json(200, {"messages": listed})

    def _message_detail(self, request: Request, now: float, msg_id: str) -> Response:
        """GET /v3/messages/{msg_id}: one message with its events, in Email Activity's names."""
        with self._db(write=False) as db:
            row = db.execute("SELECT * FROM messages WHERE msg_id = ?", (msg_id,)).fetchone()
        message = SimMessage.from_row(row) if row else None
        events = self._visible(message, now) if message else []
        if message is None or not events:
            return _errors(404, [{"message": "not found", "field": "message_id"}])
        return _json(
            200,
            {
                **_summary(message, events),
                "template_id": "",
                "teammate": "",
                "api_key_id": "sandbox",
                "categories": list(message.categories),
                # Email Activity gives custom args back as Python-dict-like text, not as an object.
                "unique_args": repr({str(key): str(value) for key, value in message.custom_args.items()}),
                "originating_ip": CLIENT_IP,
                "outbound_ip": SANDBOX_IP,
                "outbound_ip_type": "shared",
                "events": [_polled_event(event) for event in events],
            },
        )

    # Suppressions

    def _list_spam_reports(self, request: Request, now: float) -> Response:
        """GET /v3/suppression/spam_reports."""
        return self._suppression_list(request, now, "spam_reports", ("created", "email", "ip"))

    def _list_bounces(self, request: Request, now: float) -> Response:
        """GET /v3/suppression/bounces."""
        return self._suppression_list(request, now, "bounces", ("created", "email", "reason", "status"))

    def _suppression_list(
        self, request: Request, now: float, table: str, columns: tuple[str, ...]
    ) -> Response:
        """List entries of a suppression list, filtered and paged as SendGrid does."""
        try:
            start = _int_arg(request, "start_time", 0, 0, None)
            end = _int_arg(request, "end_time", int(now), 0, None)
            limit = _int_arg(request, "limit", 500, 1, 500)
            offset = _int_arg(request, "offset", 0, 0, None)
        except ValueError as error:
            return _errors(400, [{"message": str(error), "field": None}])
        prefix = request.args.get("email", "").lower().replace("\\", "\\\\").replace("_", "\\_")
        with self._db(write=False) as db:
            rows = db.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE created BETWEEN ? AND ?"
                " AND email LIKE ? ESCAPE '\\' ORDER BY created DESC, email LIMIT ? OFFSET ?",
                # Entries dated in the future belong to scenarios whose report has not happened yet.
                (start, min(end, int(now)), prefix + "%", limit, offset),
            ).fetchall()
        return _json(200, [dict(row) for row in rows])

    def _spam_report(self, request: Request, now: float, email: str) -> Response:
        """GET or DELETE /v3/suppression/spam_reports/{email}."""
        email = email.strip().lower()
        if request.method == "DELETE":
            with self._db() as db:
                db.execute("DELETE FROM spam_reports WHERE email = ?", (email,))
            return Response(status=204)
        with self._db(write=False) as db:
            rows = db.execute(
                "SELECT created, email, ip FROM spam_reports WHERE email = ? AND created <= ?",
                (email, int(now)),
            ).fetchall()
        return _json(200, [dict(row) for row in rows])

    # Event webhook

    @property
    def public_key_b64(self) -> str:
        """The webhook verification key: base64 DER SubjectPublicKeyInfo, as SendGrid shows it."""
        der = (
            self._signing_key()
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return base64.b64encode(der).decode()

    def _signing_key(self) -> ec.EllipticCurvePrivateKey:
        """Load the key pair kept in the state file (the same for every process)."""
        if self._private_key is None:
            with self._db(write=False) as db:
                pem = db.execute("SELECT value FROM meta WHERE key = 'private_key'").fetchone()[0]
            key = serialization.load_pem_private_key(pem.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError(f"the sandbox state file {self.state_path} holds a key that is not ECDSA")
            self._private_key = key
        return self._private_key

    def deliver_webhooks(self, post: Callable[[bytes, dict[str, str]], int] | None = None) -> int:
        """Post every visible event not posted yet, in signed batches; return how many were posted."""
        if post is None and not self.webhook_url:
            return 0
        send = post or self._post_to_webhook_url
        now = self.clock()
        pending = self._unposted(now)
        posted = 0
        for start in range(0, len(pending), WEBHOOK_BATCH_SIZE):
            batch = pending[start : start + WEBHOOK_BATCH_SIZE]
            # SendGrid's bodies end with CRLF, and the signature covers it.
            body = (json.dumps([event for _, _, event in batch]) + "\r\n").encode()
            if not 200 <= send(body, self._signed_headers(body, now)) < 300:
                break
            self._mark_posted([(msg_id, index) for msg_id, index, _ in batch])
            posted += len(batch)
        return posted

    def _unposted(self, now: float) -> list[tuple[str, int, dict[str, Any]]]:
        """Return (msg_id, event index, webhook event) for visible events not posted yet, oldest first."""
        with self._db(write=False) as db:
            rows = db.execute("SELECT * FROM messages WHERE webhook_done = 0").fetchall()
            posted = {
                (row[0], row[1])
                for row in db.execute(
                    "SELECT p.msg_id, p.event_index FROM webhook_posted p"
                    " JOIN messages m ON m.msg_id = p.msg_id WHERE m.webhook_done = 0"
                )
            }
        pending = []
        for row in rows:
            message = SimMessage.from_row(row)
            for event in self._visible(message, now):
                if (message.msg_id, event.index) not in posted:
                    pending.append((event.at, message.msg_id, event.index, _webhook_event(message, event)))
        pending.sort(key=lambda item: item[:3])
        return [(msg_id, index, event) for _, msg_id, index, event in pending]

    def _mark_posted(self, posted: list[tuple[str, int]]) -> None:
        """Remember posted events; a message whose whole timeline is posted is skipped from now on."""
        with self._db() as db:
            db.executemany("INSERT OR IGNORE INTO webhook_posted (msg_id, event_index) VALUES (?, ?)", posted)
            for msg_id in {msg_id for msg_id, _ in posted}:
                row = db.execute("SELECT * FROM messages WHERE msg_id = ?", (msg_id,)).fetchone()
                done = db.execute(
                    "SELECT count(*) FROM webhook_posted WHERE msg_id = ?", (msg_id,)
                ).fetchone()[0]
                if done >= len(timeline(row["scenario"], msg_id)):
                    db.execute("UPDATE messages SET webhook_done = 1 WHERE msg_id = ?", (msg_id,))

    def _signed_headers(self, body: bytes, now: float) -> dict[str, str]:
        """Sign timestamp + body with the sandbox's key, in SendGrid's headers."""
        timestamp = str(int(now))
        signature = self._signing_key().sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }

    def _post_to_webhook_url(self, body: bytes, headers: dict[str, str]) -> int:
        """POST one batch to the configured webhook URL; 0 when nothing answered."""
        try:
            return httpx.post(self.webhook_url, content=body, headers=headers, timeout=10).status_code
        except httpx.RequestError:
            return 0


# Mail Send validation


def mail_send_errors(payload: Any) -> list[dict[str, Any]]:
    """Return every problem SendGrid would report for a Mail Send body (empty when it is valid)."""
    if not isinstance(payload, dict):
        return [_problem("The request body must be a JSON object.", None, "#-Request-Body-Parameters")]
    problems: list[dict[str, Any]] = []
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not 1 <= len(personalizations) <= 1000:
        problems.append(
            _problem(
                "The personalizations field is required and must have between 1 and 1000 personalizations.",
                "personalizations",
                "#message.personalizations",
            )
        )
        personalizations = []
    subject_missing = False
    for i, personalization in enumerate(personalizations):
        recipients = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(recipients, list) or not recipients:
            problems.append(
                _problem(
                    "The to array is required for all personalization objects, and must have at least one"
                    " email object with a valid email address.",
                    f"personalizations.{i}.to",
                    "#message.personalizations.to",
                )
            )
            continue
        for j, recipient in enumerate(recipients):
            if not isinstance(recipient, dict) or not _valid_email(recipient.get("email")):
                problems.append(
                    _problem(
                        "Does not contain a valid address.",
                        f"personalizations.{i}.to.{j}.email",
                        "#message.personalizations.to",
                    )
                )
        subject_missing |= not _non_empty(personalization.get("subject"))
    if subject_missing and not _non_empty(payload.get("subject")):
        problems.append(
            _problem(
                "The subject is required. You can get around this requirement if you use a template with a"
                " subject defined or if every personalization has a subject defined.",
                "subject",
                "#message.subject",
            )
        )
    sender = payload.get("from")
    if not isinstance(sender, dict):
        problems.append(
            _problem(
                "The from object must be provided for every email send. It is an object that requires the"
                " email parameter, but may also contain a name parameter.",
                "from",
                "#message.from",
            )
        )
    elif not _valid_email(sender.get("email")):
        problems.append(
            _problem("The from email does not contain a valid address.", "from.email", "#message.from")
        )
    problems.extend(_content_errors(payload.get("content")))
    return problems


def _content_errors(content: Any) -> list[dict[str, Any]]:
    """Return the problems of a Mail Send content array."""
    if not isinstance(content, list) or not content:
        return [
            _problem(
                "Unless a valid template_id is provided, the content parameter is required. There must be at"
                " least one defined content block.",
                "content",
                "#message.content",
            )
        ]
    problems = []
    for k, block in enumerate(content):
        block = block if isinstance(block, dict) else {}
        if not _non_empty(block.get("type")):
            problems.append(
                _problem(
                    "The content type must be a string at least one character in length.",
                    f"content.{k}.type",
                    "#message.content.type",
                )
            )
        if not _non_empty(block.get("value")):
            problems.append(
                _problem(
                    "The content value must be a string at least one character in length.",
                    f"content.{k}.value",
                    "#message.content.value",
                )
            )
    return problems


def _problem(message: str, field: str | None, help_anchor: str) -> dict[str, Any]:
    """One entry of a 400 answer, with the documentation link SendGrid adds."""
    return {"message": message, "field": field, "help": HELP_BASE + help_anchor}


def _valid_email(value: Any) -> bool:
    """Check an address the way a provider does before accepting it: roughly."""
    return isinstance(value, str) and _EMAIL.fullmatch(value.strip()) is not None


def _object(value: Any) -> dict[str, Any]:
    """Return a JSON object, or {} for anything else (custom args of the wrong type are ignored)."""
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    """Return the strings of a JSON array (categories), or [] for anything else."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _non_empty(value: Any) -> bool:
    """Return whether a value is a string with something in it."""
    return isinstance(value, str) and value.strip() != ""


# Email Activity queries

_QUERY_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>\() | (?P<close>\)) | (?P<or>OR\b)
      | unique_args\['(?P<arg>[^'"\\]+)'\]\s*=\s*"(?P<arg_value>(?:[^"\\]|\\.)*)"
      | to_email\s*=\s*"(?P<to_email>(?:[^"\\]|\\.)*)"
      | msg_id\s+LIKE\s+'(?P<msg_prefix>[^'%]*)%'
    )""",
    re.VERBOSE | re.IGNORECASE,
)


def parse_query(text: str) -> list[tuple[str, str, str]]:
    """Parse the query subset the adapter sends: terms joined by OR, optionally parenthesised.

    Returns (field, key, value) terms: ("unique_args", name, value), ("to_email", "", address)
    or ("msg_id_prefix", "", prefix). Raises QuerySyntaxError for anything else.
    """
    terms: list[tuple[str, str, str]] = []
    depth, want_term, position = 0, True, 0
    while text[position:].strip():
        match = _QUERY_TOKEN.match(text, position)
        if match is None:
            raise QuerySyntaxError(f"cannot read {text[position:].strip()[:40]!r}")
        position = match.end()
        if match["open"] is not None and want_term:
            depth += 1
        elif match["close"] is not None and not want_term and depth > 0:
            depth -= 1
        elif match["or"] is not None and not want_term:
            want_term = True
        elif want_term and match["arg"] is not None:
            terms.append(("unique_args", match["arg"], _unescape(match["arg_value"])))
            want_term = False
        elif want_term and match["to_email"] is not None:
            terms.append(("to_email", "", _unescape(match["to_email"]).lower()))
            want_term = False
        elif want_term and match["msg_prefix"] is not None:
            terms.append(("msg_id_prefix", "", match["msg_prefix"]))
            want_term = False
        else:
            raise QuerySyntaxError(f"unexpected {match.group().strip()!r}")
    if want_term or depth:
        raise QuerySyntaxError("the query is incomplete")
    return terms


def _unescape(value: str) -> str:
    """Undo backslash escapes inside a quoted query value."""
    return re.sub(r"\\(.)", r"\1", value)


def _where(terms: list[tuple[str, str, str]]) -> tuple[str, list[Any]]:
    """Turn OR-ed query terms into an SQL condition on the messages table."""
    conditions, params = [], []
    for field, key, value in terms:
        if field == "unique_args":
            conditions.append("json_extract(custom_args, ?) = ?")
            params += [f'$."{key}"', value]
        elif field == "to_email":
            conditions.append("to_email = ?")
            params.append(value)
        else:
            conditions.append("substr(msg_id, 1, ?) = ?")
            params += [len(value), value]
    return " OR ".join(conditions), params


def _int_arg(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    """Read an integer query parameter within bounds; ValueError names the problem."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        raise ValueError(f"{name} must be a number") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be between {low} and {high}" if high else f"{name} must be >= {low}")
    return value


# Rendering


def _iso(unix_seconds: int) -> str:
    """Format a unix time as Email Activity does: ISO 8601, UTC, with a Z."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(message: SimMessage, events: list[Visible]) -> dict[str, Any]:
    """The Email Activity list entry of a message."""
    names = {event.step.event for event in events}
    if names & {"bounce", "dropped"}:
        status = "not_delivered"
    elif "delivered" in names:
        status = "delivered"
    else:
        status = "processed"
    return {
        "from_email": message.from_email,
        "msg_id": message.msg_id,
        "subject": message.subject,
        "to_email": message.to_email,
        "status": status,
        "opens_count": sum(event.step.event == "open" for event in events),
        "clicks_count": sum(event.step.event == "click" for event in events),
        "last_event_time": _iso(max(event.at for event in events)),
    }


def _polled_event(event: Visible) -> dict[str, Any]:
    """One event as Email Activity shows it (its own names, no machine-open flag)."""
    step = event.step
    polled: dict[str, Any] = {"event_name": POLLED_NAMES[step.event], "processed": _iso(event.at)}
    if step.reason:
        polled["reason"] = step.reason
    if step.attempt is not None:
        polled["attempt_num"] = step.attempt
    if step.url:
        polled["url"] = step.url
    if step.event == "bounce":
        polled["bounce_type"] = "hard"
    if step.event in ("delivered", "deferred", "bounce"):
        polled["mx_server"] = MX_SERVER
    if step.event in ("open", "click"):
        polled["http_user_agent"] = USER_AGENT
    return polled


def _webhook_event(message: SimMessage, event: Visible) -> dict[str, Any]:
    """One event as the event webhook posts it, custom args flattened to top-level keys."""
    step = event.step
    fields: dict[str, Any] = {
        "email": message.to_email,
        "timestamp": event.at,
        "event": step.event,
        "sg_event_id": _event_id(message.msg_id, event.index),
        "sg_message_id": message.msg_id,
        "smtp-id": f"<{message.x_message_id}@ismtpd-sandbox.sendgrid.invalid>",
    }
    if message.categories:
        fields["category"] = list(message.categories)
    if step.event == "delivered":
        fields.update(response="250 2.0.0 OK", ip=SANDBOX_IP, tls=1)
    elif step.event == "deferred":
        fields.update(attempt=str(step.attempt), response=step.reason, ip=SANDBOX_IP)
    elif step.event == "bounce":
        fields.update(
            reason=step.reason, status="5.1.1", type="bounce", bounce_classification="Invalid Address"
        )
    elif step.event == "dropped":
        fields.update(reason=step.reason, status="5.0.0")
    elif step.event == "open":
        fields.update(sg_machine_open=step.machine, useragent=USER_AGENT, ip=CLIENT_IP)
    elif step.event == "click":
        fields.update(
            url=step.url, url_offset={"index": 0, "type": "text"}, useragent=USER_AGENT, ip=CLIENT_IP
        )
    # As at SendGrid, a custom arg named like a reserved key loses to it.
    return {**message.custom_args, **fields}


def _event_id(msg_id: str, index: int) -> str:
    """A stable sg_event_id: a redelivered event keeps its id, as SendGrid's retries do."""
    return (
        base64.urlsafe_b64encode(hashlib.sha256(f"{msg_id}#{index}".encode()).digest()).decode().rstrip("=")
    )


# Small helpers


def _json(status: int, body: Any) -> Response:
    """A JSON response."""
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _errors(status: int, errors: list[dict[str, Any]]) -> Response:
    """An error response in SendGrid's {"errors": [...]} shape."""
    return _json(status, {"errors": errors})


def _failure_response(status: int) -> Response:
    """The documented error body for an injected failure."""
    if status == 429:
        return _errors(429, [{"message": "too many requests", "field": None}])
    if status >= 500:
        return _errors(status, [{"message": "internal error", "field": None}])
    return _errors(status, [{"message": "error", "field": None}])


def _auth_error(request: Request) -> Response | None:
    """401 without a bearer key, 403 for the forbidden one, else None."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return _errors(401, [{"message": "authorization required", "field": None}])
    if key.strip() == FORBIDDEN_KEY:
        return _errors(403, [{"message": "access forbidden", "field": None}])
    return None


def _take_failure(db: sqlite3.Connection, kind: str, path: str) -> sqlite3.Row | None:
    """Use up one queued failure of this kind that matches the path, if any."""
    row = db.execute(
        "SELECT * FROM failures WHERE kind = ? AND substr(?, 1, length(path_prefix)) = path_prefix"
        " ORDER BY id LIMIT 1",
        (kind, path),
    ).fetchone()
    if row is not None:
        if row["remaining"] > 1:
            db.execute("UPDATE failures SET remaining = remaining - 1 WHERE id = ?", (row["id"],))
        else:
            db.execute("DELETE FROM failures WHERE id = ?", (row["id"],))
    return row


def _seed_spam_report(db: sqlite3.Connection, email: str, now: int) -> None:
    """Put a `dropped` scenario address on the spam-report list, once: removing it must stick."""
    if db.execute("INSERT OR IGNORE INTO seeded_addresses (email) VALUES (?)", (email,)).rowcount:
        db.execute(
            "INSERT INTO spam_reports (email, created, ip) VALUES (?, ?, ?) ON CONFLICT (email) DO NOTHING",
            (email, now, CLIENT_IP),
        )


def _on_spam_list(db: sqlite3.Connection, email: str, now: float) -> bool:
    """Return whether an address is on the spam-report list at this time."""
    row = db.execute(
        "SELECT 1 FROM spam_reports WHERE email = ? AND created <= ?", (email, int(now))
    ).fetchone()
    return row is not None
