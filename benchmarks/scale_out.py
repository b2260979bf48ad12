"""Scale-out on one machine: 2 gunicorn servers, 3 RQ workers and 1 scheduler over one PostgreSQL
and one Redis take webhook events and sends; the final state must equal that of a single-process
run of the same input (applied in this process, in order): nothing lost, nothing doubled, no state
kept in a process.

    .venv/bin/python benchmarks/scale_out.py [--events 100000] [--sends 10000] [--small]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import httpx  # noqa: E402
import ingest  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sending import wait_for  # noqa: E402

HERE = Path(__file__).resolve().parent


def prepare(env: dict[str, str], targets: int, sends: int) -> tuple[object, list[int]]:
    """A fresh database with the same targets (fixed ids) and queued sends; return the app and send ids."""
    from webapp.extensions import db
    from webapp.services import load_data

    app = common.make_app(env)
    common.migrate(app)
    with app.app_context():
        load_data.seed_load(load_data.LoadSizes(2, 20, 200), common.PASSWORD, say=lambda _line: None)
        db.session.execute(
            sa.text(
                """
                INSERT INTO email (clinic_id, client_id, app_message_id, to_address, subject, body, kind, status,
                                   status_changed_at, created_at, version, provider, send_state, send_attempts)
                SELECT c.clinic_id, c.id, app_id, c.email, 'Reminder', 'Body', 'appointment_reminder', 'sending',
                       CAST(:at AS timestamptz), CAST(:at AS timestamptz), 0, 'sendgrid', state,
                       CASE state WHEN 'queued' THEN 0 ELSE 1 END
                FROM (SELECT * FROM client ORDER BY id LIMIT 1) c,
                     unnest(CAST(:ids AS text[]), CAST(:states AS text[])) AS t(app_id, state)
                """
            ),
            {
                "ids": [str(uuid.UUID(int=i + 1)) for i in range(targets + sends)],
                "states": ["accepted"] * targets + ["queued"] * sends,
                "at": "2026-11-01T09:00:00+00:00",  # the same in both runs
            },
        )
        db.session.commit()
        send_ids = db.session.execute(
            sa.text("SELECT id FROM email WHERE send_state = 'queued' ORDER BY id")
        ).scalars()
        return app, list(send_ids)


def digest(app) -> tuple[str, dict]:
    """A fingerprint of everything a clinician sees of the emails, keyed by our own message ids."""
    from webapp.extensions import db

    with app.app_context():
        emails = db.session.execute(
            sa.text(
                "SELECT app_message_id, status, status_changed_at, send_state FROM email"
                " WHERE app_message_id LIKE '00000000-%' ORDER BY app_message_id"
            )
        ).all()
        events = db.session.execute(
            sa.text(
                "SELECT e.app_message_id, v.dedupe_key, v.kind, v.machine, v.source FROM email_event v"
                " JOIN email e ON e.id = v.email_id WHERE e.app_message_id LIKE '00000000-%'"
                " AND v.kind <> 'sending' ORDER BY 1, 2"
            )
        ).all()
    text = json.dumps([[str(value) for value in row] for row in [*emails, *events]])
    summary = {"emails": len(emails), "events": len(events)}
    for row in emails:
        summary[row.send_state] = summary.get(row.send_state, 0) + 1
    return hashlib.sha256(text.encode()).hexdigest()[:16], summary


def main() -> None:
    """Run the same input through the scaled-out processes and through one process; compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--sends", type=int, default=10_000)
    parser.add_argument("--small", action="store_true", help="CI: 2,000 events, 20 sends")
    args = parser.parse_args()
    if args.small:
        args.events, args.sends = 2_000, 20
    processes = common.Processes()
    signer = common.Signer()
    redis_url = processes.redis()
    state = str(processes.folder / "sandbox.sqlite3")
    sandbox = processes.gunicorn("sandbox_app:app", {"SANDBOX_STATE_PATH": state}, ["--chdir", str(HERE)])
    base_env = {
        "EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": "benchmark",
        "SENDGRID_API_BASE": sandbox,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_key_b64,
    }
    targets = args.events // len(ingest.LIFE)
    start = int(time.time()) - 3600
    targets_ids = [(0, str(uuid.UUID(int=i + 1))) for i in range(targets)]
    batches = ingest.bodies(ingest.webhook_events(targets_ids, start), 1000)

    # Scaled out.
    env = common.app_env(
        common.psycopg_url(common.fresh_database("scaled")), redis_url, processes.folder, **base_env
    )
    app, send_ids = prepare(env, targets, args.sends)
    webs = [processes.gunicorn("wsgi:app", env) for _ in range(2)]
    processes.workers(env, 3)
    processes.scheduler(env)
    started = time.perf_counter()
    from webapp.services.sending import wake_senders

    with app.app_context():
        for _ in send_ids:
            wake_senders()  # as queue_email does after each email

    def post(item: tuple[int, bytes]) -> int:
        index, body = item
        with httpx.Client(timeout=60) as http:
            url = webs[index % 2] + "/webhooks/sendgrid/events"
            return http.post(url, content=body, headers=signer.headers(body)).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = set(pool.map(post, enumerate(batches)))
    if codes != {200}:
        raise SystemExit(f"benchmark: the webhook answered {sorted(codes)}")
    wait_for(
        app, "SELECT count(*) FROM webhook_batch WHERE applied_at IS NOT NULL", {}, len(batches), "batches"
    )
    wait_for(
        app,
        "SELECT count(*) FROM email WHERE send_state = 'accepted'",
        {},
        targets + len(send_ids) + 200,
        "sends",
    )
    scaled_seconds = time.perf_counter() - started
    scaled = digest(app)
    from webapp.sandbox.sendgrid import SendGridSandbox

    scaled_sends = SendGridSandbox(state).requests_seen("/v3/mail/send")
    processes.stop()

    # One process: the same input, in order, in this process.
    processes = common.Processes()
    state = str(processes.folder / "sandbox.sqlite3")
    sandbox = processes.gunicorn("sandbox_app:app", {"SANDBOX_STATE_PATH": state}, ["--chdir", str(HERE)])
    env = common.app_env(
        common.psycopg_url(common.fresh_database("single")),
        processes.redis(),
        processes.folder,
        **{**base_env, "SENDGRID_API_BASE": sandbox},
    )
    app, send_ids = prepare(env, targets, args.sends)
    from webapp.services import handover, webhooks

    started = time.perf_counter()
    with app.app_context():
        for body in batches:
            webhooks.apply_batch(webhooks.store_batch("sendgrid", body).id)
        for email_id in send_ids:
            handover.deliver(email_id)
    single_seconds = time.perf_counter() - started
    single = digest(app)
    single_sends = SendGridSandbox(state).requests_seen("/v3/mail/send")
    print(f"{len(batches)} batches ({args.events:,} events) and {args.sends:,} sends")
    print(f"{'scaled out: 2 gunicorn, 3 workers, 1 scheduler':52} {scaled_seconds:7.1f} s  state {scaled}")
    print(f"{'baseline: one process, in order':52} {single_seconds:7.1f} s  state {single}")
    print(f"Mail Send requests: scaled out {scaled_sends}, one process {single_sends} (one per send)")
    same = scaled[0] == single[0] and scaled_sends == single_sends == len(send_ids)
    print("final states equal: " + ("yes" if same else "NO"))
    if not same:
        raise SystemExit("benchmark: the scaled-out run ended in another state")


if __name__ == "__main__":
    main()
