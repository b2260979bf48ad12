"""Sending: reminders queued in the database, handed to the sandbox over HTTP (the real SendGrid
adapter against the sandbox served by gunicorn) by RQ workers, beside RQ no-op jobs on the same
workers, measured in the same run.

    .venv/bin/python benchmarks/sending.py [--emails 10000] [--workers 2] [--small]

Emails per second = emails / (first job enqueued -> last one accepted). Goal: at least 250 on 2 cores.
Each email is woken as queue_email wakes it; jobs send due emails in batches (the provider's
max_batch), so the run also prints how many send jobs it took.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import sqlalchemy as sa  # noqa: E402

HERE = Path(__file__).resolve().parent


def queue_reminders(app, count: int) -> list[int]:
    """Record `count` queued reminders (as queue_email leaves them) in one statement; return ids."""
    from webapp.extensions import db

    with app.app_context():
        ids = (
            db.session.execute(
                sa.text(
                    """
                    INSERT INTO email (clinic_id, client_id, app_message_id, to_address, subject, body, kind,
                                       status, status_changed_at, created_at, version, provider, send_state,
                                       send_attempts)
                    SELECT c.clinic_id, c.id, gen_random_uuid()::text,
                           'client' || g || '+delivered@example.com', 'Appointment reminder', 'See you soon.',
                           'appointment_reminder', 'sending', now(), now(), 0, 'sendgrid', 'queued', 0
                    FROM generate_series(1, :n) g, (SELECT * FROM client ORDER BY id LIMIT 1) c
                    RETURNING id
                    """
                ),
                {"n": count},
            )
            .scalars()
            .all()
        )
        db.session.commit()
    return list(ids)


def wait_for(app, sql: str, params: dict, want: int, what: str) -> None:
    """Wait until the count query reaches `want`."""
    from webapp.extensions import db

    def done() -> bool:
        with app.app_context():
            value = db.session.execute(sa.text(sql), params).scalar()
            db.session.rollback()
            return value >= want

    common.wait_until(done, what, timeout=3600, pause=0.1)


def main() -> None:
    """Start the sandbox and the workers; time no-op jobs, then the sends."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=10_000)
    parser.add_argument("--noops", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="CI: 40 emails, 40 no-op jobs")
    args = parser.parse_args()
    if args.small:
        args.emails, args.noops = 40, 40
    processes = common.Processes()
    redis_url = processes.redis()
    state = str(processes.folder / "sandbox.sqlite3")
    sandbox = processes.gunicorn("sandbox_app:app", {"SANDBOX_STATE_PATH": state}, ["--chdir", str(HERE)])
    sandbox_pid = processes.children[-1].pid
    env = common.app_env(
        common.psycopg_url(common.fresh_database("sending")),
        redis_url,
        processes.folder,
        EMAIL_PROVIDER="sendgrid",
        SENDGRID_API_KEY="benchmark",
        SENDGRID_API_BASE=sandbox,
        PYTHONPATH=str(HERE),
    )
    app = common.make_app(env)
    common.migrate(app)
    from webapp.services import load_data

    with app.app_context():
        load_data.seed_load(load_data.LoadSizes(1, 10, 10), common.PASSWORD, say=lambda _line: None)
    ids = queue_reminders(app, args.emails)
    from webapp.queue import get_queue
    from webapp.services.sending import wake_senders

    processes.workers(env, args.workers)
    worker_pids = [child.pid for child in processes.children[-args.workers :]]
    with app.app_context():
        queue = get_queue()
        started = time.perf_counter()
        for _ in range(args.noops):
            queue.enqueue("bench_jobs.noop", result_ttl=0)
        common.wait_until(
            lambda: queue.count == 0 and queue.started_job_registry.count == 0, "no-op jobs", 3600
        )
        noop_rate = args.noops / (time.perf_counter() - started)
        finished_before = queue.finished_job_registry.count
        cpu_before = common.cpu_seconds(sandbox_pid), sum(common.cpu_seconds(pid) for pid in worker_pids)
        started = time.perf_counter()
        for _ in ids:
            wake_senders()  # what queue_email does after committing each email
    wait_for(
        app,
        "SELECT count(*) FROM email WHERE id = ANY(:ids) AND send_state <> 'queued' AND send_state <> 'claimed'",
        {"ids": ids},
        len(ids),
        "sending",
    )
    rate = len(ids) / (time.perf_counter() - started)
    sandbox_cpu = common.cpu_seconds(sandbox_pid) - cpu_before[0]
    workers_cpu = sum(common.cpu_seconds(pid) for pid in worker_pids) - cpu_before[1]
    from webapp.extensions import db

    with app.app_context():
        states = dict(
            db.session.execute(
                sa.text("SELECT send_state, count(*) FROM email WHERE id = ANY(:ids) GROUP BY 1"),
                {"ids": ids},
            ).all()
        )
    with app.app_context():
        send_jobs = get_queue().finished_job_registry.count - finished_before
    from webapp.sandbox.sendgrid import SendGridSandbox

    sends = SendGridSandbox(state).requests_seen("/v3/mail/send")
    print(f"{args.workers} RQ workers (a fork per job), sandbox over HTTP on gunicorn")
    print(f"{'baseline: RQ no-op jobs':40} {noop_rate:8,.1f} jobs/s")
    print(
        f"{'sending reminders (goal >= 250)':40} {rate:8,.1f} emails/s   {rate / noop_rate:.2f} of no-op jobs"
    )
    print(
        f"send states: {states}; Mail Send requests seen by the sandbox: {sends} (one per email: sent once); "
        f"{send_jobs} send jobs ({len(ids) / max(1, send_jobs):.1f} emails a job)"
    )
    print(
        f"CPU per email: workers {workers_cpu / len(ids) * 1000:.2f} ms (forks, claims, HTTP client, records), "
        f"sandbox {sandbox_cpu / len(ids) * 1000:.2f} ms (the provider's side, on the same cores)"
    )
    if states != {"accepted": len(ids)} or sends != len(ids):
        raise SystemExit("benchmark: an email was not sent exactly once")


if __name__ == "__main__":
    main()
