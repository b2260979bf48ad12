"""Webhook ingestion end to end: signed batches of 1,000 SendGrid events posted over HTTP to
gunicorn and applied by RQ workers, over a large history; beside, in the same run, a raw COPY
of the same rows into a keyed table (the floor) and a naive event-at-a-time loop.

    .venv/bin/python benchmarks/ingest.py                     # 100,000 events over 1,000,000 emails
    .venv/bin/python benchmarks/ingest.py --database URL      # over a database made by seed-load
    .venv/bin/python benchmarks/ingest.py --small             # CI: 3,000 events over 5,000 emails

Events per second = events / (first post -> last batch applied). Goal: at least 25,000 on 2 cores.
It also prints the CPU time gunicorn, the workers and PostgreSQL (its backends for this database
at the end, when it runs on this machine) spent per 1,000 events (less moved by the
shared machine's load than events per second).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

# Ten events of one email's life, seconds after sending (two opens in one second: machine + human).
LIFE = [
    (1, "processed", {}),
    (2, "deferred", {"attempt": "1", "response": "421 4.7.0 Try again later"}),
    (5, "deferred", {"attempt": "2", "response": "421 4.7.0 Try again later"}),
    (8, "delivered", {"response": "250 2.0.0 OK"}),
    (30, "open", {"sg_machine_open": True}),
    (30, "open", {"sg_machine_open": False}),
    (40, "click", {"url": "https://example.com/a"}),
    (41, "click", {"url": "https://example.com/b"}),
    (100, "open", {"sg_machine_open": False}),
    (120, "click", {"url": "https://example.com/c"}),
]


def target_emails(app, count: int) -> list[tuple[int, str]]:
    """Make `count` accepted emails that events will be about; return (id, app_message_id)."""
    from webapp.extensions import db

    with app.app_context():
        client_id = db.session.execute(sa.text("SELECT min(id) FROM client")).scalar()
        rows = db.session.execute(
            sa.text(
                """
                INSERT INTO email (clinic_id, client_id, app_message_id, to_address, subject, body, kind, status,
                                   status_changed_at, created_at, version, provider, send_state, send_attempts)
                SELECT c.clinic_id, c.id, gen_random_uuid()::text, c.email, 'Reminder', 'Body',
                       'appointment_reminder', 'sending', now(), now(), 0, 'sandbox', 'accepted', 1
                FROM client c, generate_series(1, :n) WHERE c.id = :client
                RETURNING id, app_message_id
                """
            ),
            {"n": count, "client": client_id},
        ).all()
        db.session.commit()
    return [(row.id, row.app_message_id) for row in rows]


def webhook_events(targets: list[tuple[int, str]], start: int) -> list[dict]:
    """Every email's ten events, as SendGrid's webhook posts them."""
    events = []
    for email_id, app_message_id in targets:
        for index, (offset, name, extra) in enumerate(LIFE):
            events.append(
                {
                    "email": f"client{email_id}@example.com",
                    "timestamp": start + offset,
                    "event": name,
                    "sg_event_id": f"{app_message_id}-{index}",
                    "sg_message_id": f"X{email_id}.filter-0",
                    "app_message_id": app_message_id,
                    **extra,
                }
            )
    return events


def bodies(events: list[dict], size: int) -> list[bytes]:
    """Shuffle events (batches mix emails, and an email's events arrive out of order) into bodies."""
    shuffled = list(events)
    random.Random(10).shuffle(shuffled)
    return [(json.dumps(shuffled[i : i + size]) + "\r\n").encode() for i in range(0, len(shuffled), size)]


def copy_floor(app, events: list[dict]) -> float:
    """The floor: COPY the same rows into a keyed table; return events per second."""
    from webapp.extensions import db
    from webapp.providers.sendgrid.webhooks import parse_webhook_events
    from webapp.services.events import _event_row

    parsed = parse_webhook_events(json.dumps(events).encode())
    rows = list({row["dedupe_key"]: row for row in (_event_row(1, e, "webhook") for e in parsed)}.values())
    with app.app_context():
        connection = db.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(
                "CREATE TEMP TABLE floor_event (email_id int, occurred_at timestamptz, kind text, reason text,"
                " url text, attempt int, machine bool, source text, raw jsonb, dedupe_key text UNIQUE)"
            )
            started = time.perf_counter()
            with cursor.copy(
                "COPY floor_event (email_id, occurred_at, kind, reason, url, attempt, machine, source, raw,"
                " dedupe_key) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(
                        (
                            row["email_id"],
                            row["occurred_at"],
                            row["kind"],
                            row["reason"],
                            row["url"],
                            row["attempt"],
                            row["machine"],
                            row["source"],
                            json.dumps(row["raw"]),
                            row["dedupe_key"],
                        )
                    )
            connection.commit()
            elapsed = time.perf_counter() - started
        finally:
            connection.close()
    return len(rows) / elapsed


def one_at_a_time(app, targets: list[tuple[int, str]], start: int) -> float:
    """The naive loop: each event on its own (lock, insert, recompute, commit); return events/s."""
    from webapp.extensions import db
    from webapp.models import Email
    from webapp.providers.sendgrid.webhooks import parse_webhook_events
    from webapp.services.events import apply_events

    events = webhook_events(targets, start)
    random.Random(11).shuffle(events)
    parsed = parse_webhook_events(json.dumps(events).encode())
    with app.app_context():
        emails = {
            email.app_message_id: email
            for email in db.session.execute(
                sa.select(Email).where(Email.id.in_([t[0] for t in targets]))
            ).scalars()
        }
        started = time.perf_counter()
        for event in parsed:
            apply_events(emails[event.app_message_id], [event], source="webhook")
            db.session.commit()
        return len(parsed) / (time.perf_counter() - started)


def server_cpu(app) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving this database, but this process's own
    (empty when the server is on another machine: its processes are not ours to read)."""
    import psutil

    from webapp.extensions import db

    with app.app_context():
        pids = db.session.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        db.session.rollback()
        times = {}
        for pid in pids:
            try:
                cpu = psutil.Process(pid).cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            times[pid] = cpu.user + cpu.system
    return times


def main() -> None:
    """Seed (or reuse) the history, measure the baselines, then the real path end to end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=1_000_000, help="emails of history to seed")
    parser.add_argument("--database", help="use this database (made by seed-load) instead of seeding one")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="RQ workers")
    parser.add_argument("--small", action="store_true", help="CI size: 3,000 events over 5,000 emails")
    args = parser.parse_args()
    if args.small:
        args.events, args.history = 3_000, 5_000
    processes = common.Processes()
    signer = common.Signer()
    redis_url = processes.redis()
    database = args.database or common.fresh_database("ingest")
    env = common.app_env(
        common.psycopg_url(database),
        redis_url,
        processes.folder,
        SENDGRID_WEBHOOK_PUBLIC_KEY=signer.public_key_b64,
    )
    app = common.make_app(env)
    if not args.database:
        from webapp.services import load_data

        common.migrate(app)
        with app.app_context():
            sizes = load_data.LoadSizes(
                clinics=max(1, args.history // 200), clients=max(1, args.history // 10), emails=args.history
            )
            started = time.perf_counter()
            load_data.seed_load(sizes, common.PASSWORD, say=lambda _line: None)
            print(f"seeded {args.history:,} emails of history in {time.perf_counter() - started:.0f} s")
    with app.app_context():
        from webapp.extensions import db

        history = db.session.execute(sa.text("SELECT count(*) FROM email")).scalar()
    start = int(time.time()) - 3600
    per_email = len(LIFE)
    targets = target_emails(app, args.events // per_email)
    loop_targets = target_emails(app, max(20, min(100, args.events // per_email // 10)))
    events = webhook_events(targets, start)
    batches = bodies(events, args.batch)
    print(
        f"{len(events):,} events for {len(targets):,} emails in {len(batches)} signed batches, over {history:,} emails"
    )

    floor = copy_floor(app, events)
    loop = one_at_a_time(app, loop_targets, start)

    web = processes.gunicorn("wsgi:app", env)
    web_pid = processes.children[-1].pid
    processes.workers(env, args.workers)
    worker_pids = [child.pid for child in processes.children[-args.workers :]]
    url = web + "/webhooks/sendgrid/events"
    with httpx.Client(timeout=60) as http:
        http.get(web + "/healthz")
    posted = [0.0]

    def post(body: bytes) -> int:
        with httpx.Client(timeout=60) as http:
            return http.post(url, content=body, headers=signer.headers(body)).status_code

    cpu_before = common.cpu_seconds(web_pid), sum(common.cpu_seconds(pid) for pid in worker_pids)
    server_before = server_cpu(app)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(post, batches))
    posted[0] = time.perf_counter() - started
    if set(codes) != {200}:
        # The web server's log says why (it is deleted with the run's folder).
        for log in sorted(processes.folder.glob("gunicorn-*.log")):
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise SystemExit(f"benchmark: the webhook answered {sorted(set(codes))}")

    def applied() -> bool:
        with app.app_context():
            waiting = db.session.execute(
                sa.text("SELECT count(*) FROM webhook_batch WHERE applied_at IS NULL")
            ).scalar()
            db.session.rollback()
            return waiting == 0

    common.wait_until(applied, "applying the batches", timeout=1800, pause=0.05)
    elapsed = time.perf_counter() - started
    web_cpu = common.cpu_seconds(web_pid) - cpu_before[0]
    workers_cpu = sum(common.cpu_seconds(pid) for pid in worker_pids) - cpu_before[1]
    server_after = server_cpu(app)
    # Backends of this database that were there before and after, plus those opened since.
    database_cpu = sum(cpu - server_before.get(pid, 0.0) for pid, cpu in server_after.items())
    with app.app_context():
        ids = [target[0] for target in targets]
        stored = db.session.execute(
            sa.text("SELECT count(*) FROM email_event WHERE email_id = ANY(:ids)"), {"ids": ids}
        ).scalar()
        statuses = dict(
            db.session.execute(
                sa.text("SELECT status, count(*) FROM email WHERE id = ANY(:ids) GROUP BY status"),
                {"ids": ids},
            ).all()
        )
    rate = len(events) / elapsed
    print(f"{'path':58} {'events/s':>10}")
    print(f"{'baseline: raw COPY into a keyed table (the floor)':58} {floor:10,.0f}")
    print(f"{'baseline: event-at-a-time loop (in-process)':58} {loop:10,.0f}")
    print(f"{'webhook route: verify + store (HTTP, 4 senders)':58} {len(events) / posted[0]:10,.0f}")
    print(f"{f'end to end: HTTP -> gunicorn -> {args.workers} RQ workers -> applied':58} {rate:10,.0f}")
    print(
        f"end to end vs floor: {rate / floor:.3f}   vs event-at-a-time loop: {rate / loop:.1f}x   goal: >= 25,000/s"
    )
    per_thousand = 1000 / len(events) * 1000
    print(
        f"CPU per 1,000 events: gunicorn {web_cpu * per_thousand:.0f} ms (verify, check, store), "
        f"RQ workers {workers_cpu * per_thousand:.0f} ms (jobs, parsing, rows), "
        f"PostgreSQL {database_cpu * per_thousand:.0f} ms (its backends for this database, when on this machine)"
    )
    # One event of each email is a duplicate of another only by the machine flag: stored once.
    expected = len(targets) * (per_email - 1)
    print(f"stored events: {stored:,} (expected {expected:,}); statuses: {statuses}")
    if stored != expected or statuses != {"clicked": len(targets)}:
        raise SystemExit("benchmark: events were lost or doubled")


if __name__ == "__main__":
    main()
