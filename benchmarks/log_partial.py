"""The full email log partial of a client with 200 emails of 6 events each, requested over HTTP
from this process to gunicorn, beside a bare Flask endpoint and /healthz in the same run; then
the same with every email changed before each request (no row from the row cache).

    .venv/bin/python benchmarks/log_partial.py [--requests 200] [--history 100000] [--small]

Goal: p50 under 15 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import sqlalchemy as sa  # noqa: E402

HERE = Path(__file__).resolve().parent
SIX = [(60, "processed", {}), (120, "delivered", {"raw": {"response": "250 2.0.0 OK"}})]
SIX += [(600, "open", {"machine": True}), (900, "open", {}), (960, "click", {"url": "https://example.com/a"})]


def busy_client(app, emails: int) -> tuple[int, str]:
    """A client with `emails` emails of six events each (sending and five more); return its id and
    a clinician's address."""
    from webapp.extensions import db
    from webapp.models import Client, Clinic, Email, utcnow
    from webapp.providers.base import ProviderEvent
    from webapp.services import accounts
    from webapp.services.events import Target, store_events

    with app.app_context():
        clinic = Clinic(name="Busy clinic")
        db.session.add(clinic)
        db.session.flush()
        client = Client(clinic_id=clinic.id, name="Busy Client", email="busy.client@example.com")
        db.session.add(client)
        accounts.create_user(
            "busy.clinician@example.com", "Busy Clinician", "clinician", common.PASSWORD, clinic
        )
        db.session.flush()
        now = utcnow().replace(microsecond=0)
        batch = {}
        for index in range(emails):
            sent = now - timedelta(days=29) + timedelta(minutes=200 * index)
            email = Email(
                clinic_id=clinic.id,
                client_id=client.id,
                to_address=client.email,
                subject=f"Reminder {index}",
                body="See you soon.",
                kind="appointment_reminder",
                provider="sandbox",
                send_state="accepted",
                created_at=sent,
                status_changed_at=sent,
            )
            db.session.add(email)
            db.session.flush()
            events = [ProviderEvent("sending", sent, app_message_id=email.app_message_id)]
            events += [
                ProviderEvent(
                    kind, sent + timedelta(seconds=offset), app_message_id=email.app_message_id, **extra
                )
                for offset, kind, extra in SIX
            ]
            batch[email.id] = (Target(email.id, clinic.id, client.id, client.email), events)
        store_events(batch, "webhook")
        db.session.commit()
        return client.id, "busy.clinician@example.com"


def timings(
    http, url: str, count: int, headers: dict[str, str] | None = None, before_each=None
) -> list[float]:
    """Seconds per request of `count` sequential GETs (after one warm-up); `before_each()`, when
    given, runs untimed before each."""
    http.get(url, headers=headers)
    result = []
    for _ in range(count):
        if before_each is not None:
            before_each()
        started = time.perf_counter()
        response = http.get(url, headers=headers)
        result.append(time.perf_counter() - started)
        if response.status_code >= 300:
            raise SystemExit(f"benchmark: {url} answered {response.status_code}")
    return result


def main() -> None:
    """Seed, start gunicorn, time the partial and the baselines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--emails", type=int, default=200)
    parser.add_argument("--history", type=int, default=100_000, help="other emails in the database")
    parser.add_argument("--small", action="store_true", help="CI: 20 requests over 2,000 emails of history")
    args = parser.parse_args()
    if args.small:
        args.requests, args.history = 20, 2_000
    processes = common.Processes()
    env = common.app_env(
        common.psycopg_url(common.fresh_database("partial")), processes.redis(), processes.folder
    )
    app = common.make_app(env)
    common.migrate(app)
    from webapp.services import load_data

    with app.app_context():
        sizes = load_data.LoadSizes(max(1, args.history // 200), max(1, args.history // 10), args.history)
        load_data.seed_load(sizes, common.PASSWORD, say=lambda _line: None)
    client_id, user = busy_client(app, args.emails)
    bare = processes.gunicorn("bare_app:app", {"PYTHONPATH": str(HERE)}, ["--chdir", str(HERE)])
    web = processes.gunicorn("wsgi:app", env)
    http = common.sign_in(web, user)
    poll = {"HX-Request": "true", "HX-Trigger": "email-log"}
    partial = timings(http, f"/clients/{client_id}/emails", args.requests, poll)
    # Every row changed since the last render (its version bumped): no row comes from the web
    # process's row cache, as on the first render of a log in a process.
    bump = sa.create_engine(env["DATABASE_URL"], poolclass=sa.pool.NullPool)

    def change_every_row() -> None:
        with bump.begin() as connection:
            connection.execute(
                sa.text("UPDATE email SET version = version + 1 WHERE client_id = :id"), {"id": client_id}
            )

    changed = timings(
        http, f"/clients/{client_id}/emails", max(10, args.requests // 4), poll, change_every_row
    )
    print(
        f"client with {args.emails} emails of 6 events (+ sending), {args.history:,} other emails; sequential HTTP"
    )
    print(common.latency_line("baseline: bare Flask endpoint", timings(http, bare + "/", args.requests)))
    print(common.latency_line("baseline: /healthz (one SQL query)", timings(http, "/healthz", args.requests)))
    print(common.latency_line("full email log partial (goal: p50 < 15 ms)", partial))
    print(common.latency_line("  the same, every row changed since the last", changed))


if __name__ == "__main__":
    main()
