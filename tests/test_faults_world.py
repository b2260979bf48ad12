"""Fault tests of what the world sends and does: dirty bytes in a signed batch, provider clocks
hours off, a PostgreSQL fast shutdown under webhook posts, a scheduler in a crash loop. Each prints
its counts. Real PostgreSQL (the dirty batch and the shutdown need it), real Redis, the sandbox;
the app's fake clock where the code reads time through webapp.clock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults import FLASK, Processes, child_env, free_port, wait_for
from tests.helpers import ON_POSTGRES, public_key_b64, run_jobs, sign
from webapp.extensions import db
from webapp.models import Client, Clinic, Email, EmailEvent, OperatorAlert, WebhookBatch, utcnow
from webapp.providers import get_sandbox
from webapp.services import maintenance, sending, webhooks
from webapp.services.clock_skew import CLOCK_SKEW_ALERT
from webapp.services.set_aside import LATE_BATCH_ALERT, SET_ASIDE_ALERT

URL = "/webhooks/sendgrid/events"
NUL_REASON = "550 no\x00such user"
SURROGATE_REASON = "550 mailbox \ud800 unavailable"
REPLACED = "\ufffd"


@pytest.fixture
def processes(make_app, tmp_path):
    """Processes the test starts; stopped (before the database is wiped) and checked afterwards."""
    started = Processes(tmp_path)
    yield started
    assert started.stop() == [], "a process outlived its process group"


def report(capsys, line: str) -> None:
    """Print a fault test's counts even while pytest captures output."""
    with capsys.disabled():
        print(f"\n{line}")


def add_clients(count: int) -> list[Client]:
    """Clients of one clinic, each with an address of its own."""
    clinic = Clinic(name="Fault Clinic")
    db.session.add(clinic)
    db.session.flush()
    clients = [
        Client(clinic_id=clinic.id, name=f"Client {n}", email=f"c{n}+delivered@example.com")
        for n in range(count)
    ]
    db.session.add_all(clients)
    db.session.commit()
    return clients


def queue(client: Client) -> int:
    return sending.queue_email(client, kind="receipt", subject="Receipt", body="Thank you", sent_by=None).id


def alerts(kind: str) -> list[OperatorAlert]:
    return list(db.session.execute(sa.select(OperatorAlert).where(OperatorAlert.kind == kind)).scalars())


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL is what refuses a NUL and an out-of-range integer")
def test_a_signed_batch_with_dirty_bytes_beside_good_events_applies_every_good_one(make_app, key, capsys):
    """One correctly signed SendGrid batch of 300 delivered events, with a bounce whose reason holds
    a NUL, one whose reason holds a lone surrogate (as the JSON escapes \\u0000 and \\ud800) and a
    deferral whose attempt number PostgreSQL cannot store. The dirty texts are stored with U+FFFD,
    the deferral is set aside (kept in the batch, one alert naming the batch and the event) and
    every other event is applied, on the first run of the job."""
    app = make_app(SENDGRID_WEBHOOK_PUBLIC_KEY=public_key_b64(key))
    with app.app_context():
        clients = add_clients(300)
        emails = [
            sending.queue_email(client, kind="receipt", subject="Receipt", body="Thank you", sent_by=None)
            for client in clients
        ]
        now = int(time.time())
        events = [
            {
                "email": e.to_address,
                "timestamp": now,
                "event": "delivered",
                "app_message_id": e.app_message_id,
            }
            for e in emails
        ]
        dirty = {
            "nul": emails[10],
            "surrogate": emails[20],
            "unstorable": emails[30],
        }
        events.insert(
            100, {"email": "x@example.com", "timestamp": now + 1, "event": "bounce", "reason": NUL_REASON}
        )
        events[100]["app_message_id"] = dirty["nul"].app_message_id
        events.insert(
            200,
            {
                "email": "y@example.com",
                "timestamp": now + 1,
                "event": "bounce",
                "reason": SURROGATE_REASON,
                "app_message_id": dirty["surrogate"].app_message_id,
            },
        )
        events.insert(
            250,
            {
                "email": "z@example.com",
                "timestamp": now - 1,
                "event": "deferred",
                "attempt": "99999999999",  # past a 32-bit integer
                "response": "421 try later",
                "app_message_id": dirty["unstorable"].app_message_id,
            },
        )
        body = (json.dumps(events) + "\r\n").encode()  # ensure_ascii: "\u0000" and "\ud800" on the wire
        assert b"\\u0000" in body and b"\\ud800" in body
        assert app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 200
        run_jobs(app)

        db.session.expire_all()
        batch = db.session.execute(sa.select(WebhookBatch)).scalar_one()
        statuses = Counter(db.session.execute(sa.select(Email.status)).scalars())
        bounces = dict(
            db.session.execute(
                sa.select(EmailEvent.email_id, EmailEvent.reason).where(EmailEvent.kind == "bounce")
            ).all()
        )
        deferrals = db.session.execute(
            sa.select(sa.func.count()).where(EmailEvent.kind == "deferred")
        ).scalar()
        set_aside = alerts(SET_ASIDE_ALERT)
        report(
            capsys,
            f"[fault] dirty batch on PostgreSQL: {statuses['delivered']} of 298 good emails delivered, "
            f"{statuses['failed']} dirty bounces applied, {len(batch.set_aside or [])} event set aside "
            f"(batch {batch.id}, {batch.set_aside}), {len(set_aside)} alert",
        )
        assert batch.applied_at is not None and batch.body == body  # kept as it came
        assert statuses == {"delivered": 298, "failed": 2}
        assert bounces[dirty["nul"].id] == f"550 no{REPLACED}such user"
        assert bounces[dirty["surrogate"].id] == f"550 mailbox {REPLACED} unavailable"
        assert db.session.get(Email, dirty["unstorable"].id).status == "delivered"  # its good event
        assert deferrals == 0
        assert [(item["position"], item["kind"]) for item in batch.set_aside] == [(250, "deferred")]
        assert "out of range" in batch.set_aside[0]["error"]
        assert len(set_aside) == 1 and set_aside[0].email_id == dirty["unstorable"].id
        assert f"Event 250 of stored webhook batch {batch.id}" in set_aside[0].message
        # Kept past the time applied batches are forgotten.
        assert webhooks.forget_applied_batches(utcnow() + timedelta(days=30)) == 0


@pytest.mark.parametrize("wire_format", ["sendgrid", "postmark"])
def test_the_sandbox_plays_dirty_bytes_and_nothing_is_lost(app, world, app_clock, wire_format, capsys):
    """The sandbox's dirty-bytes scenario (a bounce reason with a NUL and a lone surrogate) in each
    wire format, through the real route and job, beside ordinary deliveries: all applied."""
    emails = []
    for name in ("dirty-bytes", "delivered", "delivered"):
        client = Client(clinic_id=world.clinic_a.id, name=name, email=f"pat{len(emails)}+{name}@example.com")
        db.session.add(client)
        db.session.commit()
        emails.append(sending.queue_email(client, kind="receipt", subject="R", body="-", sent_by=None))
    run_jobs(app)
    app_clock.advance(30)
    http = app.test_client()
    answers = Counter()

    def post(body: bytes, headers: dict[str, str]) -> int:
        answers[http.post(f"/webhooks/{wire_format}/events", data=body, headers=headers).status_code] += 1
        return 200

    get_sandbox(app.config).deliver_webhooks(post=post)
    run_jobs(app)
    db.session.expire_all()
    found = [db.session.get(Email, email.id).status for email in emails]
    reason = db.session.execute(
        sa.select(EmailEvent.reason).where(EmailEvent.email_id == emails[0].id, EmailEvent.kind == "bounce")
    ).scalar_one()
    unapplied = db.session.execute(
        sa.select(sa.func.count()).where(WebhookBatch.applied_at.is_(None))
    ).scalar()
    report(capsys, f"[fault] sandbox dirty bytes ({wire_format}): answers {dict(answers)}, statuses {found}")
    assert set(answers) == {200} and unapplied == 0
    assert found == ["failed", "delivered", "delivered"]
    assert "\x00" not in reason and f"no{REPLACED}such user {REPLACED}" in reason


def test_a_batch_left_unapplied_raises_one_alert_after_five_minutes(app, app_clock, capsys):
    """A stored batch no job can apply (here: a wire format nobody parses) waits; after five minutes
    the sweep raises one alert naming it, later sweeps raise no second, and it closes by itself
    once nothing waits."""
    stuck = WebhookBatch(provider="elsewhere", body=b"[]", received_at=utcnow())
    db.session.add(stuck)
    db.session.commit()
    seen = []
    for _ in range(8):  # 8 sweeps a minute apart
        app_clock.advance(60)
        maintenance.sweep()
        seen.append(len(alerts(LATE_BATCH_ALERT)))
    (alert,) = alerts(LATE_BATCH_ALERT)
    db.session.delete(db.session.get(WebhookBatch, stuck.id))
    db.session.commit()
    maintenance.sweep()
    db.session.refresh(alert)
    report(
        capsys, f"[fault] batch left unapplied: alerts after each minute {seen}; closed {alert.resolved_at}"
    )
    assert seen == [0, 0, 0, 0, 1, 1, 1, 1]  # from the sweep five minutes after it came, once
    assert f"batch {stuck.id}" in alert.message
    assert alert.resolved_at is not None


SKEWS = [(wire_format, skew) for wire_format in ("sendgrid", "postmark") for skew in (7200, -7200)]


@pytest.mark.parametrize(("wire_format", "skew"), SKEWS, ids=[f"{w}{s:+d}s" for w, s in SKEWS])
def test_a_provider_clock_two_hours_off(make_app, app_clock, wire_format, skew, capsys):
    """The sandbox's clock runs 2 h ahead of ours, or 2 h behind. Its signed webhooks are accepted
    (an operator alert says the clocks differ, where the provider shows it), no status is dated in
    our future, and an email the provider accepted and reports nothing more of is flagged stuck 10
    minutes after we received its status: not 2 h late, not at once."""
    app = make_app(SANDBOX_CLOCK_SKEW_SECONDS=skew, SANDBOX_SPEED=1.0, SANDBOX_WIRE_FORMAT=wire_format)
    with app.app_context():
        stuck_client, delivered_client = add_clients(2)
        stuck_client.email = "c0+stuck@example.com"
        db.session.commit()
        stuck_id, delivered_id = queue(stuck_client), queue(delivered_client)
        run_jobs(app)  # sent through the sandbox
        app_clock.advance(10)
        http = app.test_client()
        answers: Counter[int] = Counter()

        def post(body: bytes, headers: dict[str, str]) -> int:
            status = http.post(f"/webhooks/{wire_format}/events", data=body, headers=headers).status_code
            answers[status] += 1
            return status

        get_sandbox(app.config).deliver_webhooks(post=post)
        run_jobs(app)
        stuck, delivered = db.session.get(Email, stuck_id), db.session.get(Email, delivered_id)
        assert (stuck.status, delivered.status) == ("processed", "delivered")
        future = [email for email in (stuck, delivered) if email.status_changed_at > utcnow()]
        for _ in range(15):  # a sweep every minute
            app_clock.advance(60)
            maintenance.sweep()
        (flagged,) = alerts("email_stuck")
        assert flagged.email_id == stuck_id
        # Counted from when we received its status: the webhook's "processed" (SendGrid), or the
        # acceptance at send time (Postmark posts no "processed").
        flagged_at = (flagged.created_at - stuck.status_received_at).total_seconds()
        skew_alerts = alerts(CLOCK_SKEW_ALERT)
        report(
            capsys,
            f"[fault] provider clock {skew / 3600:+.0f} h ({wire_format}): webhook answers {dict(answers)}, "
            f"{len(future)} status dated in our future, stuck flagged {flagged_at:.0f} s after our receipt, "
            f"{len(skew_alerts)} clock alert",
        )
        assert set(answers) == {200}
        assert future == []
        assert 10 * 60 <= flagged_at < 11 * 60
        # Evidence of the skew: SendGrid signs its time (either way); Postmark's events say only
        # when they are dated ahead of us (an event dated in the past is ordinary).
        expect_alert = wire_format == "sendgrid" or skew > 0
        assert len(skew_alerts) == (1 if expect_alert else 0)
        if expect_alert:
            assert "2 h 0 min" in skew_alerts[0].message


def test_a_signed_webhook_past_the_tolerance_is_refused_and_says_why(make_app, app_clock, capsys):
    """Beyond WEBHOOK_TOLERANCE_SECONDS a signed batch is still refused (403), but an operator
    alert says that the clocks differ, instead of the push channel going silent."""
    app = make_app(SANDBOX_CLOCK_SKEW_SECONDS=-4 * 3600, SANDBOX_SPEED=1.0)
    with app.app_context():
        (client,) = add_clients(1)
        queue(client)
        run_jobs(app)
        app_clock.advance(10)
        http = app.test_client()
        answers: Counter[int] = Counter()

        def post(body: bytes, headers: dict[str, str]) -> int:
            status = http.post(URL, data=body, headers=headers).status_code
            answers[status] += 1
            return status

        get_sandbox(app.config).deliver_webhooks(post=post)
        maintenance.sweep()
        (alert,) = alerts(CLOCK_SKEW_ALERT)
        report(capsys, f"[fault] provider clock -4 h: answers {dict(answers)}; alert: {alert.message[:120]}…")
        assert set(answers) == {403}
        assert "4 h 0 min behind our clock" in alert.message and "refused (403)" in alert.message


# --- A PostgreSQL fast shutdown under webhook posts ----------------------------------------------

PG_BIN = Path("/usr/lib/postgresql")


def _pg_tool(name: str) -> str | None:
    found = sorted(PG_BIN.glob(f"*/bin/{name}"))
    return str(found[-1]) if found else None


def _as_postgres(*command: str) -> subprocess.CompletedProcess:
    # PostgreSQL refuses to run as root: its own cluster runs as the postgres user.
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)


@pytest.fixture
def private_postgres():
    """A PostgreSQL server of the test's own (so it can be shut down), on a free port."""
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if not ON_POSTGRES or initdb is None or pg_ctl is None:
        pytest.skip("needs PostgreSQL's server binaries and a PostgreSQL run")
    folder = Path(tempfile.mkdtemp(prefix="pg-shutdown-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    _as_postgres(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {folder} -c fsync=off -c listen_addresses=127.0.0.1"
    _as_postgres(pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start")
    try:
        yield (
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
            lambda: _as_postgres(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"),
        )
    finally:
        subprocess.run(
            [
                *(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                pg_ctl,
                "-D",
                str(data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_webhook_posts_during_a_postgresql_fast_shutdown_answer_503_never_500(
    private_postgres, tmp_path, redis_url, key, capsys
):
    """Six clients post signed batches as fast as they can while PostgreSQL shuts down (`pg_ctl stop
    -m fast`: it ends every connection, mid-statement or mid-ROLLBACK, and refuses new ones). Every
    post is answered 200 (stored) or 503 (the provider retries); none 500, none raises."""
    from webapp import create_app
    from webapp.database import migrate_database

    url, shut_down = private_postgres
    app = create_app(
        {
            "TESTING": True,
            "PROPAGATE_EXCEPTIONS": False,
            "INSTANCE_PATH": str(tmp_path),
            "DATABASE_URL": url,
            "MIGRATION_DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "test-secret-key-not-for-production",
            "EMAIL_PROVIDER": "sandbox",
            "SANDBOX_STATE_PATH": str(tmp_path / "sandbox.sqlite3"),
            "SENDGRID_WEBHOOK_PUBLIC_KEY": public_key_b64(key),
        }
    )
    with app.app_context():
        migrate_database(app)
    answers: Counter = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def poster(number: int) -> None:
        http = app.test_client()
        sent = 0
        while not stop.is_set():
            sent += 1
            body = json.dumps(
                [
                    {
                        "email": "a@example.com",
                        "timestamp": int(time.time()),
                        "event": "delivered",
                        "app_message_id": f"shutdown-{number}-{sent}",
                    }
                ]
            ).encode()
            try:
                answers[http.post(URL, data=body, headers=sign(key, body)).status_code] += 1
            except Exception as error:  # an error escaping the app: what a client sees as a 500
                answers["raised"] += 1
                failures.append(repr(error))

    threads = [threading.Thread(target=poster, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    wait_for(lambda: answers[200] >= 50, 30, what="posts stored before the shutdown")
    shut_down()
    time.sleep(1.0)  # posts go on against the stopped server, in wall time
    stop.set()
    for thread in threads:
        thread.join()
    with app.app_context():
        db.engine.dispose()
    report(capsys, f"[fault] PostgreSQL fast shutdown under webhook posts: answers {dict(answers)}")
    assert set(answers) <= {200, 503}, failures[:3]
    assert answers[503] > 0


# --- A scheduler in a crash loop ---------------------------------------------------------------

SWEEP = "jobs.maintenance.sweep"


def test_a_scheduler_killed_again_and_again_neither_bursts_nor_leaves_registrations(
    make_app,
    processes,
    capsys,  # noqa: F811 - the fixture
):
    """`flask scheduler` is SIGKILLed as soon as it has enqueued, five times over, and started again
    at once, as a supervisor does. The sweep (every 15 s) is enqueued once, not once per start,
    and no dead scheduler's registration stays in Redis. (Real processes, wall time.)"""
    from rq.cron import CronScheduler, get_cron_job_ids

    app = make_app()
    with app.app_context():
        redis = app.extensions["redis"]
        env = child_env(app)
        started = time.monotonic()
        for round_ in range(5):
            scheduler = processes.start("scheduler", [*FLASK, "scheduler"], env)
            # Registered alone: the one killed before it was removed as it started.
            wait_for(
                lambda scheduler=scheduler: (
                    [s.pid for s in CronScheduler.all(redis, cleanup=False)] == [scheduler.pid]
                    and get_cron_job_ids(SWEEP, redis)
                ),
                60,
                what=f"scheduler {round_} registered",
            )
            time.sleep(0.5)  # a real process: it enqueues right after registering, if it does
            os.killpg(scheduler.pid, signal.SIGKILL)
            scheduler.wait()
        elapsed = time.monotonic() - started
        registered = CronScheduler.all(redis, cleanup=False)
        sweeps = len(get_cron_job_ids(SWEEP, redis))
        report(
            capsys,
            f"[fault] scheduler killed 5 times in {elapsed:.0f} s: {sweeps} sweep(s) enqueued, "
            f"{len(registered)} registration(s) left (the last one killed)",
        )
        # One sweep per 15 s at most (one more if the run crossed a sweep's turn).
        assert sweeps <= 1 + int(elapsed // 15)
        assert len(registered) <= 1  # only the last killed; the next start removes it
        survivor = processes.start("scheduler", [*FLASK, "scheduler"], env)
        wait_for(
            lambda: [s.pid for s in CronScheduler.all(redis, cleanup=False)] == [survivor.pid],
            60,
            what="the next scheduler alone in the registry",
        )
