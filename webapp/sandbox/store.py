"""The sandbox's state: one SQLite file, apart from the app's tables, safe for several processes.

It knows nothing of any wire format: messages are stored with the ids and fields every provider
has (its message id, the id of the send request, recipient, sender, subject, tags, metadata), and
the lists a provider keeps (spam reports, bounces) hold plain addresses and times.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from webapp.private_files import ensure_private_file
from webapp.sandbox import state_file

# The scenario of "an account that accepts and never reports": such messages are stored (the
# provider took them) but no API answer, list or webhook ever shows them (webapp/sandbox/scenarios.py).
UNREPORTED = "silent"


@dataclass(frozen=True)
class SimMessage:
    """One accepted message to one recipient, as the sandbox keeps it."""

    msg_id: str  # the provider's id of this message
    request_id: str  # the provider's id of the send request that carried it
    to_email: str
    from_email: str
    subject: str
    categories: tuple[str, ...]  # tags
    custom_args: dict[str, Any]  # metadata the sender attached
    accepted_at: float
    scenario: str
    text: str = ""  # the plain-text body it received, as the client's mailbox would show it
    html: str = ""  # its HTML part; empty: a text-only message
    # What the provider tracks in it (webapp/sandbox/tracking.py): an open needs its pixel, a
    # click one of these rewritten links.
    opens_tracked: bool = False
    links: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SimMessage:
        """Rebuild a message from its table row."""
        return cls(
            msg_id=row["msg_id"],
            request_id=row["x_message_id"],
            to_email=row["to_email"],
            from_email=row["from_email"],
            subject=row["subject"],
            categories=tuple(json.loads(row["categories"])),
            custom_args=json.loads(row["custom_args"]),
            accepted_at=row["accepted_at"],
            scenario=row["scenario"],
            text=row["text"],
            html=row["html"],
            opens_tracked=bool(row["opens_tracked"]),
            links=tuple(json.loads(row["tracked_links"])),
        )


class Store:
    """The state file, one transaction at a time over a connection kept per thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        # It holds the keys that sign our webhooks: SQLite gives its -wal and -shm files this mode too.
        ensure_private_file(path)
        state_file.create_schema(path)

    def _connect(self) -> sqlite3.Connection:
        return state_file.connect(self.path)

    def _thread_connection(self) -> sqlite3.Connection:
        """This thread's connection to the state file, kept open: closing the last connection to
        a WAL file checkpoints it, which cost each request of a batch of sends a disk flush."""
        held = getattr(self._local, "held", None)
        if held is None or held[0] != os.getpid():  # a forked child opens its own
            held = (os.getpid(), self._connect())
            self._local.held = held
        return held[1]

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
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

    # Meta

    def meta(self, key: str, make: Any = None) -> str:
        """Return a stored value; when missing, store make() first (the same for every process)."""
        with self.transaction(write=make is not None) as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
            if make is None:
                raise KeyError(key)
            value = make()
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            return value

    # Counting and queued failures

    def count_request(self, db: sqlite3.Connection, path: str, now: float) -> int:
        """Count one request; return how many arrived in the current minute."""
        db.execute(
            "INSERT INTO request_counts (path, n) VALUES (?, 1) ON CONFLICT (path) DO UPDATE SET n = n + 1",
            (path,),
        )
        return int(
            db.execute(
                "INSERT INTO rate_window (id, minute, n) VALUES (1, ?, 1) ON CONFLICT (id) DO UPDATE"
                " SET n = CASE WHEN minute = excluded.minute THEN n + 1 ELSE 1 END, minute = excluded.minute"
                " RETURNING n",
                (int(now // 60),),
            ).fetchone()[0]
        )

    def requests_seen(self, path_prefix: str) -> int:
        """Return how many requests arrived for paths starting with path_prefix."""
        with self.transaction(write=False) as db:
            row = db.execute(
                "SELECT coalesce(sum(n), 0) FROM request_counts WHERE substr(path, 1, length(?)) = ?",
                (path_prefix, path_prefix),
            ).fetchone()
        return int(row[0])

    def queue_failure(
        self, kind: str, status: int, path_prefix: str, retry_after: float | None, count: int
    ) -> None:
        """Queue `count` failures of a kind for requests under path_prefix."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO failures (kind, status, path_prefix, retry_after, remaining)"
                " VALUES (?, ?, ?, ?, ?)",
                (kind, status, path_prefix, retry_after, count),
            )

    @staticmethod
    def take_failure(db: sqlite3.Connection, kind: str, path: str) -> sqlite3.Row | None:
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

    # Messages

    @staticmethod
    def insert_message(db: sqlite3.Connection, message: SimMessage) -> None:
        """Store one accepted message."""
        db.execute(
            "INSERT INTO messages (msg_id, x_message_id, to_email, from_email, subject, categories,"
            " custom_args, accepted_at, scenario, text, html, opens_tracked, tracked_links)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.msg_id,
                message.request_id,
                message.to_email,
                message.from_email,
                message.subject,
                json.dumps(list(message.categories)),
                json.dumps(message.custom_args),
                message.accepted_at,
                message.scenario,
                message.text,
                message.html,
                int(message.opens_tracked),
                json.dumps(list(message.links)),
            ),
        )

    def message(self, msg_id: str) -> SimMessage | None:
        """Return one message the provider's records show, by its id."""
        with self.transaction(write=False) as db:
            row = db.execute(
                "SELECT * FROM messages WHERE msg_id = ? AND scenario != ?", (msg_id, UNREPORTED)
            ).fetchone()
        return SimMessage.from_row(row) if row else None

    def messages_where(self, condition: str, params: list[Any]) -> list[SimMessage]:
        """Return the messages the provider's records show matching an SQL condition, newest first."""
        with self.transaction(write=False) as db:
            rows = db.execute(
                f"SELECT * FROM messages WHERE ({condition}) AND scenario != ?"
                " ORDER BY accepted_at DESC, msg_id",
                [*params, UNREPORTED],
            ).fetchall()
        return [SimMessage.from_row(row) for row in rows]

    # Lists the provider keeps

    @staticmethod
    def add_spam_report(
        db: sqlite3.Connection, email: str, created: int, ip: str, keep_existing: bool = False
    ) -> None:
        """Put an address on the spam-report list (an earlier report wins, or any existing one)."""
        conflict = "NOTHING" if keep_existing else "UPDATE SET created = min(created, excluded.created)"
        db.execute(
            "INSERT INTO spam_reports (email, created, ip) VALUES (?, ?, ?)"
            f" ON CONFLICT (email) DO {conflict}",
            (email, created, ip),
        )

    @staticmethod
    def add_bounce(db: sqlite3.Connection, email: str, created: int, reason: str, status: str) -> None:
        """Put an address on the bounce list (an earlier bounce wins)."""
        db.execute(
            "INSERT INTO bounces (email, created, reason, status) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (email) DO UPDATE SET created = min(created, excluded.created)",
            (email, created, reason, status),
        )

    @staticmethod
    def seed_once(db: sqlite3.Connection, email: str) -> bool:
        """Remember an address as seeded; True the first time only."""
        return bool(
            db.execute("INSERT OR IGNORE INTO seeded_addresses (email) VALUES (?)", (email,)).rowcount
        )

    @staticmethod
    def on_spam_list(db: sqlite3.Connection, email: str, now: float) -> bool:
        """Return whether an address is on the spam-report list at this time."""
        row = db.execute(
            "SELECT 1 FROM spam_reports WHERE email = ? AND created <= ?", (email, int(now))
        ).fetchone()
        return row is not None

    def remove_spam_report(self, email: str) -> bool:
        """Take an address off the spam-report list; True when it was on it."""
        with self.transaction() as db:
            return bool(db.execute("DELETE FROM spam_reports WHERE email = ?", (email,)).rowcount)

    def spam_reports(
        self,
        email_prefix: str = "",
        start: int = 0,
        end: int | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Return spam-report entries (created, email, ip), newest first, as of `end`."""
        return self._list("spam_reports", ("created", "email", "ip"), email_prefix, start, end, limit, offset)

    def bounces(
        self,
        email_prefix: str = "",
        start: int = 0,
        end: int | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Return bounce entries (created, email, reason, status), newest first, as of `end`."""
        columns = ("created", "email", "reason", "status")
        return self._list("bounces", columns, email_prefix, start, end, limit, offset)

    def _list(
        self,
        table: str,
        columns: tuple[str, ...],
        email_prefix: str,
        start: int,
        end: int | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        prefix = email_prefix.lower().replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
        with self.transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE created BETWEEN ? AND ?"
                " AND email LIKE ? ESCAPE '\\' ORDER BY created DESC, email LIMIT ? OFFSET ?",
                (start, end if end is not None else 2**62, prefix + "%", limit, offset),
            ).fetchall()
        return [dict(row) for row in rows]

    # Webhook bookkeeping

    def unposted_messages(self) -> tuple[list[SimMessage], set[tuple[str, int]]]:
        """Return messages with events not all posted yet, and the (msg_id, index) already posted."""
        with self.transaction(write=False) as db:
            rows = db.execute(
                "SELECT * FROM messages WHERE webhook_done = 0 AND scenario != ?", (UNREPORTED,)
            ).fetchall()
            posted = {
                (row[0], row[1])
                for row in db.execute(
                    "SELECT p.msg_id, p.event_index FROM webhook_posted p"
                    " JOIN messages m ON m.msg_id = p.msg_id WHERE m.webhook_done = 0"
                )
            }
        return [SimMessage.from_row(row) for row in rows], posted

    def mark_posted(self, posted: list[tuple[str, int]], timeline_length: Any) -> None:
        """Remember posted events; a message whose whole timeline is posted is skipped from now on.

        timeline_length(message) says how many events a message will ever have.
        """
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO webhook_posted (msg_id, event_index) VALUES (?, ?)", posted)
            for msg_id in {msg_id for msg_id, _ in posted}:
                row = db.execute("SELECT * FROM messages WHERE msg_id = ?", (msg_id,)).fetchone()
                done = db.execute(
                    "SELECT count(*) FROM webhook_posted WHERE msg_id = ?", (msg_id,)
                ).fetchone()[0]
                if done >= timeline_length(SimMessage.from_row(row)):
                    db.execute("UPDATE messages SET webhook_done = 1 WHERE msg_id = ?", (msg_id,))
