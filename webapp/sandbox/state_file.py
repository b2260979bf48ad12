"""The sandbox's state file: its tables, and opening it (several processes may create it at once)."""

from __future__ import annotations

import json
import sqlite3
import time

# The links a message of a state file from before messages kept their own tracking may be clicked
# on (scenarios.OTHER_URLS): such messages keep the opens and clicks they always had.
LEGACY_LINKS = (
    "https://example.com/intake-form",
    "https://example.com/appointments",
    "https://example.com/invoices/latest",
)
_LEGACY_LINKS_JSON = json.dumps(list(LEGACY_LINKS)).replace("'", "''")
# Columns added since the first state files, with what an older row means: (name, declaration).
# A new file's messages table has them already (SCHEMA); new rows always say what they hold.
ADDED_COLUMNS = (
    ("text", "TEXT NOT NULL DEFAULT ''"),
    ("html", "TEXT NOT NULL DEFAULT ''"),
    ("opens_tracked", "INTEGER NOT NULL DEFAULT 1"),
    ("tracked_links", f"TEXT NOT NULL DEFAULT '{_LEGACY_LINKS_JSON}'"),
)

# x_message_id is the id of the send request (SendGrid's X-Message-Id, the name it had first):
# renaming the column would make older demo state files unreadable.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    msg_id TEXT PRIMARY KEY, x_message_id TEXT NOT NULL, to_email TEXT NOT NULL, from_email TEXT NOT NULL,
    subject TEXT NOT NULL, categories TEXT NOT NULL, custom_args TEXT NOT NULL, accepted_at REAL NOT NULL,
    scenario TEXT NOT NULL, webhook_done INTEGER NOT NULL DEFAULT 0, text TEXT NOT NULL DEFAULT '',
    html TEXT NOT NULL DEFAULT '', opens_tracked INTEGER NOT NULL DEFAULT 0,
    tracked_links TEXT NOT NULL DEFAULT '[]');
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


def create_schema(path: str) -> None:
    """Create the state tables; several processes may do this at once on a new file."""
    for attempt in range(50):
        db = None
        try:
            db = connect(path)
            # WAL lets the web process read while a worker writes; the mode sticks to the file.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            # A state file from before messages kept these: added in one write transaction,
            # so two processes opening it at once do not both add a column.
            db.execute("BEGIN IMMEDIATE")
            columns = {row["name"] for row in db.execute("PRAGMA table_info(messages)")}
            for name, declaration in ADDED_COLUMNS:
                if name not in columns:
                    db.execute(f"ALTER TABLE messages ADD COLUMN {name} {declaration}")
            db.execute("COMMIT")
            return
        except sqlite3.OperationalError as error:
            # Switching the journal mode does not wait for another connection's lock, and a
            # process opening the file while another one sets up its WAL index (the -shm file)
            # may read it half made: SQLite says "disk I/O error" then. Both pass at once.
            if not _while_another_sets_up(error) or attempt == 49:
                raise
            time.sleep(0.1)
        finally:
            if db is not None:
                db.close()


def connect(path: str) -> sqlite3.Connection:
    """Open the state file; another process holding the write lock makes us wait, not fail."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    # A simulator's state: in WAL mode, NORMAL survives any crash of a process and only an
    # operating system crash may lose the last commits; FULL's fsync per commit made every
    # request of a batch of sends queue for the disk.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _while_another_sets_up(error: sqlite3.OperationalError) -> bool:
    """Whether opening a new state file failed only because another process is setting it up."""
    return "locked" in str(error) or "disk I/O error" in str(error)
