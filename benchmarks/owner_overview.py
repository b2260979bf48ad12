"""Benchmark the owner's deliverability view: p50/p95 of its one aggregate query (and of the whole
view's reads) for a clinic with 50,000 emails, beside a trivial query measured in the same run.
Prints the numbers; it asserts nothing. Goal: p50 under 100 ms on PostgreSQL.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench .venv/bin/python benchmarks/owner_overview.py
    .venv/bin/python benchmarks/owner_overview.py --small     # 2,000 emails, 20 runs, on SQLite
    .venv/bin/python benchmarks/owner_overview.py --clinic-id 3               # seed-load data as is

Without --clinic-id it seeds (once; a second run reuses them) a clinic named "Benchmark clinic"
with --emails emails spread over the last 60 days, by multi-row inserts. The database must be
migrated, or migratable by DATABASE_URL's role; without DATABASE_URL a temporary SQLite file is used.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from webapp import create_app  # noqa: E402
from webapp.extensions import db  # noqa: E402
from webapp.models import Client, Clinic, Email, EmailEvent, utcnow  # noqa: E402
from webapp.services import deliverability  # noqa: E402

CLINIC_NAME = "Benchmark clinic"
# A plausible mix of final statuses (weights), and the failures' reasons.
STATUS_WEIGHTS = {
    "delivered": 40,
    "open": 30,
    "clicked": 15,
    "failed": 6,
    "deferred": 3,
    "processed": 2,
    "sending": 1,
    "spam-report": 1,
}
FAILURES = [
    ("bounce", "550 5.1.1 The email account that you tried to reach does not exist"),
    ("bounce", "552 5.2.2 Mailbox full"),
    ("dropped", "Bounced Address"),
    ("dropped", "Spam Reporting Address"),
]
CHUNK = 5000


def seed(emails: int, clients: int) -> int:
    """Create the benchmark clinic with its emails unless it has them; return its id."""
    clinic = db.session.execute(sa.select(Clinic).where(Clinic.name == CLINIC_NAME)).scalar_one_or_none()
    if clinic is not None:
        have = db.session.execute(
            sa.select(sa.func.count(Email.id)).where(Email.clinic_id == clinic.id)
        ).scalar()
        if have >= emails:
            print(f"reusing {CLINIC_NAME} (id {clinic.id}) with {have} emails")
            return clinic.id
    clinic = clinic or Clinic(name=CLINIC_NAME)
    db.session.add(clinic)
    db.session.flush()
    client_ids = list(db.session.execute(sa.select(Client.id).where(Client.clinic_id == clinic.id)).scalars())
    if not client_ids:
        rows = [
            {"clinic_id": clinic.id, "name": f"Client {n}", "email": f"client{n}@example.com", "phone": ""}
            for n in range(clients)
        ]
        db.session.execute(sa.insert(Client), rows)
        client_ids = list(
            db.session.execute(sa.select(Client.id).where(Client.clinic_id == clinic.id)).scalars()
        )
    db.session.commit()
    rng = random.Random(14)
    now = utcnow()
    statuses, weights = zip(*STATUS_WEIGHTS.items(), strict=True)
    started = time.perf_counter()
    for offset in range(0, emails, CHUNK):
        batch = []
        for _ in range(min(CHUNK, emails - offset)):
            created = now - timedelta(seconds=rng.uniform(0, 60 * 86400))
            batch.append(
                {
                    "clinic_id": clinic.id,
                    "client_id": rng.choice(client_ids),
                    "app_message_id": str(uuid.uuid4()),
                    "to_address": "client@example.com",
                    "subject": "Appointment reminder",
                    "body": "See you soon.",
                    "kind": "appointment_reminder",
                    "status": rng.choices(statuses, weights)[0],
                    "status_changed_at": created,
                    "created_at": created,
                    "version": 1,
                    "provider": "sendgrid",
                    "send_state": "accepted",
                    "send_attempts": 1,
                }
            )
        db.session.execute(sa.insert(Email), batch)
        db.session.commit()
    failed = db.session.execute(
        sa.select(Email.id, Email.created_at).where(Email.clinic_id == clinic.id, Email.status == "failed")
    ).all()
    events = [
        {
            "email_id": email_id,
            "occurred_at": created,
            "kind": kind,
            "reason": reason,
            "machine": False,
            "source": "webhook",
            "dedupe_key": uuid.uuid4().hex,
            "created_at": created,
        }
        for email_id, created in failed
        for kind, reason in [rng.choice(FAILURES)]
    ]
    for offset in range(0, len(events), CHUNK):
        db.session.execute(sa.insert(EmailEvent), events[offset : offset + CHUNK])
        db.session.commit()
    if db.engine.dialect.name == "postgresql":
        # As autovacuum would soon: statistics, and the visibility map index-only scans need.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE email"))
            connection.execute(sa.text("VACUUM ANALYZE email_event"))
    print(f"seeded {emails} emails ({len(events)} failed) in {time.perf_counter() - started:.1f} s")
    return clinic.id


def timings(work: Callable[[], object], runs: int) -> tuple[float, float]:
    """Return p50 and p95 of `runs` calls, in milliseconds, after one warm-up call."""
    work()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        db.session.rollback()  # each call its own transaction, as each request is
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def main() -> None:
    """Seed if needed, then time the query, the whole view's reads and a trivial baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--clinic-id", type=int, help="measure this clinic as it is (no seeding)")
    parser.add_argument("--small", action="store_true", help="2,000 emails, 20 runs (CI checks it runs)")
    args = parser.parse_args()
    if args.small:
        args.emails, args.clients, args.runs = 2_000, 200, 20
    overrides = {"WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False, "SKIP_SERVICE_CHECK": False}
    if not os.environ.get("DATABASE_URL"):
        overrides["INSTANCE_PATH"] = tempfile.mkdtemp(prefix="bench-")
    app = create_app(overrides)
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        clinic_id = args.clinic_id or seed(args.emails, args.clients)
        now = utcnow()
        days, _ = deliverability.window(now)
        first = days[0] - timedelta(days=deliverability.WINDOW_DAYS)
        size = db.session.execute(
            sa.select(sa.func.count(Email.id)).where(Email.clinic_id == clinic_id)
        ).scalar()
        print(f"{db.engine.dialect.name}, clinic {clinic_id} with {size} emails, {args.runs} runs each")
        rows = [
            ("baseline: SELECT 1", lambda: db.session.execute(sa.text("SELECT 1")).scalar()),
            (
                "aggregate query (60 days by day and status)",
                lambda: deliverability.daily_counts(
                    clinic_id, first, 2 * deliverability.WINDOW_DAYS, "UTC", now
                ),
            ),
            (
                "whole view's reads (+ reasons, blocked clients)",
                lambda: deliverability.overview(clinic_id, now),
            ),
        ]
        print(f"{'what':52} {'p50 ms':>8} {'p95 ms':>8}")
        for label, work in rows:
            p50, p95 = timings(work, args.runs)
            print(f"{label:52} {p50:8.2f} {p95:8.2f}")


if __name__ == "__main__":
    main()
