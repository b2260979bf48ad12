"""Fault tests: real database, real Redis, real worker processes killed with SIGKILL, a Redis
restarted under `flask up`, and the sandbox provider failing on purpose. Each prints what became
of its emails by the provider's own count (sent once, lost, doubled, unresolved); all but "sent
once" must be zero.

Where the code reads the time through webapp.clock (services, jobs, the configured sandbox) a
test moves a fake clock instead of waiting. Tests with real processes cannot share a fake clock;
they shrink the time settings instead, and say so.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter

import httpx
import psutil
import pytest
import sqlalchemy as sa
from rq import Worker

from tests.faults import (
    FLASK,
    Processes,
    acceptances,
    add_clients,
    child_env,
    free_port,
    horse_of,
    outcome,
    queue,
    report,
    run_cron_job,
    settled,
    wait_for,
)
from tests.helpers import run_jobs
from webapp import clock
from webapp.extensions import db
from webapp.models import Email, OperatorAlert
from webapp.providers import get_sandbox
from webapp.providers.sendgrid import SendGridProvider
from webapp.queue import get_queue
from webapp.redis_keys import redis_key
from webapp.services import in_doubt, maintenance, sending

# Time settings for tests with real processes: seconds where production has minutes.
FAST = {"SEND_TIMEOUT_SECONDS": 2, "SEND_ABANDONED_SECONDS": 3, "IN_DOUBT_GRACE_SECONDS": 2}


@pytest.fixture
def processes(make_app, tmp_path):
    """Processes the test starts; stopped (before the database is wiped) and checked afterwards."""
    started = Processes(tmp_path)
    yield started
    assert started.stop() == [], "a process outlived its process group"


def drive(done, timeout: float) -> None:
    """Do what the scheduler does (sweep, check in-doubt sends) until `done()` or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        maintenance.sweep()
        in_doubt.check_in_doubt()
        if done():
            return
        time.sleep(0.2)  # real worker processes do the work: a bounded poll of wall time
    raise AssertionError(f"the work did not settle in time: {unsettled()}")


def unsettled() -> list[str]:
    """Describe the emails not yet sent or failed, and the send jobs, for a failure message."""
    db.session.expire_all()
    queue = get_queue()
    lines = [
        f"send jobs: {len(queue)} waiting, {queue.started_job_registry.count} running, "
        f"{queue.failed_job_registry.count} failed; wake-up mark "
        f"{queue.connection.get(redis_key(sending.SEND_WAKE_KEY))!r}"
    ]
    for email in db.session.execute(
        sa.select(Email).where(Email.send_state.not_in(("accepted", "refused")))
    ).scalars():
        lines.append(
            f"email {email.id}: {email.send_state}, {email.send_attempts} attempts, claimed "
            f"{email.send_claimed_at}, next {email.next_attempt_at}, error {email.send_error!r}"
        )
    return lines


def test_a_send_job_killed_twice_is_held_and_alerted_never_sent_a_third_time(make_app, processes, capsys):
    """The send job is killed, the sweeper and the in-doubt check queue a send job again, that job
    is killed too and goes to RQ's failed list. Neither job's request shows in the provider's
    records, but either may have reached it: the email was handed over twice, so it is held, not
    stranded in RQ's failed list unseen, and support is alerted; it is never handed over a third
    time. (Real worker; time settings in seconds, see FAST.)"""
    app = make_app(**FAST)
    with app.app_context():
        (client,) = add_clients(1)
        sandbox = get_sandbox(app.config)
        sandbox.hold_next(count=2, seconds=120)  # the first two sends hang until their horse is killed
        worker = processes.worker(app)
        email_id = queue(client)
        failed = get_queue().failed_job_registry
        for kill in (1, 2):
            # The horse is inside the provider call (the sandbox counted the request) when it dies.
            horse = wait_for(
                lambda kill=kill: sandbox.requests_seen("/v3/mail/send") == kill and horse_of(worker),
                timeout=60,
                what=f"send attempt {kill}",
            )
            horse.kill()
            wait_for(
                lambda kill=kill: failed.count == kill, timeout=30, what="the killed job on the failed list"
            )
            if kill == 1:
                drive(lambda: sandbox.requests_seen("/v3/mail/send") == 2, timeout=60)
        drive(lambda: settled(app, [email_id]), timeout=60)
        for _ in range(10):  # more sweeps and checks, past the grace: never a third handover
            time.sleep(0.3)  # real worker processes: a bounded wait of wall time
            maintenance.sweep()
            in_doubt.check_in_doubt()
        result = outcome(app, [email_id])
        report(
            capsys,
            result.line(
                "send job killed twice",
                f"{sandbox.requests_seen('/v3/mail/send')} send requests, "
                f"{db.session.get(Email, email_id).send_attempts} attempts",
            ),
        )
        assert (result.sent_once, result.lost, result.doubled, result.unresolved, result.held) == (
            0,
            0,
            0,
            0,
            1,
        )
        assert sandbox.requests_seen("/v3/mail/send") == 2


def test_a_worker_killed_mid_batch_sends_each_email_once(make_app, processes, capsys):
    """One job claims 20 emails as a batch and is killed while it waits on the provider: by then
    13 requests were answered (accepted, not yet recorded), 3 were taken and are held before their
    answer, 3 are held before the provider took them, and the first went alone. Every email of
    the batch is put in doubt, the accepted ones are found in the provider's records and the
    3 it never took are sent again: each exactly once. (Real worker; see FAST.)"""
    app = make_app(**FAST)
    with app.app_context():
        clients = add_clients(20)
        sandbox = get_sandbox(app.config)
        email_ids = [queue(client) for client in clients]  # queued before any worker: one batch
        # Failures are used up in the order they were queued: the first request (which goes
        # alone) uses the short holds, the next ones the long holds.
        sandbox.hold_next(count=1, seconds=0.01)
        sandbox.hold_next(count=3, seconds=120)
        sandbox.hold_next(count=1, seconds=0.01, after_accepting=True)
        sandbox.hold_next(count=3, seconds=120, after_accepting=True)
        worker = processes.worker(app)
        horse = wait_for(
            lambda: (
                sum(acceptances(app).values()) == 17
                and sandbox.requests_seen("/v3/mail/send") == 20
                and horse_of(worker)
            ),
            timeout=60,
            what="a batch waiting on its held requests",
        )
        claimed = db.session.execute(
            sa.select(sa.func.count()).where(Email.send_state == "claimed", Email.send_attempts == 1)
        ).scalar()
        horse.kill()
        drive(lambda: settled(app, email_ids), timeout=60)
        result = outcome(app, email_ids)
        attempts = db.session.execute(sa.select(sa.func.sum(Email.send_attempts))).scalar()
        report(
            capsys,
            result.line("worker killed mid-batch", f"{claimed} claimed by one job, {attempts} send attempts"),
        )
        assert claimed == 20
        assert (result.sent_once, result.lost, result.doubled, result.unresolved) == (20, 0, 0, 0)
        assert attempts == 23  # the three the provider never took were sent again, and only they


class Storm(httpx.BaseTransport):
    """The provider's network during a storm: Mail Send answers 500, times out, or takes the
    message and then drops the connection or answers 502; the activity API answers 503 or times
    out. Outside the storm it is the sandbox. Like SendGrid, it refuses activity requests beyond
    its per-minute limit with 429 and a reset time, and counts them."""

    def __init__(self, inner: httpx.BaseTransport, until: float, activity_limit: int) -> None:
        self.inner = inner
        self.until = until
        self.activity_limit = activity_limit
        self.turn = 0
        self.activity: Counter[int] = Counter()
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        now = clock.timestamp()
        path = request.url.path
        if path.startswith("/v3/messages"):
            minute = int(now // 60)
            self.activity[minute] += 1
            if self.activity[minute] > self.activity_limit:
                self.refused += 1
                return httpx.Response(
                    429,
                    json={"errors": [{"message": "too many requests"}]},
                    headers={"X-RateLimit-Reset": str((minute + 1) * 60)},
                )
        if now >= self.until:
            return self.inner.handle_request(request)
        self.turn += 1
        if path != "/v3/mail/send":
            if self.turn % 2:
                raise httpx.ConnectTimeout("timed out", request=request)
            return httpx.Response(503, json={"errors": [{"message": "service unavailable"}]})
        mode = self.turn % 4
        if mode == 0:
            return httpx.Response(500, json={"errors": [{"message": "internal error"}]})
        if mode == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        taken = self.inner.handle_request(request)  # the provider has it; its answer is lost
        taken.close()
        if mode == 2:
            raise httpx.RemoteProtocolError("connection dropped", request=request)
        return httpx.Response(502, json={"errors": [{"message": "bad gateway"}]})


def test_a_storm_of_server_errors_and_timeouts_over_300_sends_settles_within_15_minutes(
    make_app, app_clock, monkeypatch, capsys
):
    """300 sends, two a second, into a 150 s storm of 5xx answers and timeouts (a quarter of them
    taken by the provider before the answer was lost). With the default activity budget (6
    requests a minute), every email is sent once within 15 minutes of the storm's end, and the
    activity API never sees more requests than the budget. Simulated time (the app clock)."""
    app = make_app(ACTIVITY_REQUESTS_PER_MINUTE=6, SANDBOX_SPEED=1.0)
    with app.app_context():
        clients = add_clients(240, shared=40)  # some clients get two emails: batches must tell them apart
        storm_end = clock.timestamp() + 150
        storm = Storm(httpx.WSGITransport(app=get_sandbox(app.config)), storm_end, 6)
        provider = SendGridProvider(
            "sandbox", "http://sandbox.invalid", transport=storm, clock=clock.timestamp
        )
        monkeypatch.setattr("webapp.providers._sandbox_provider", lambda *args: provider)
        email_ids: list[int] = []
        elapsed = 0.0
        deadline = storm_end + 15 * 60
        while clock.timestamp() < deadline:
            if len(email_ids) < 300:
                for _ in range(5):
                    email_ids.append(queue(clients[len(email_ids) % len(clients)]))
            run_jobs(app)
            if elapsed % 5 == 0:
                run_cron_job(app, "jobs.polling.poll_provider")
            if elapsed % 15 == 0:
                run_cron_job(app, "jobs.maintenance.sweep")
            if len(email_ids) == 300 and clock.timestamp() > storm_end and settled(app, email_ids):
                break
            # Finer steps while the emails come in, coarser ones while they settle.
            step = 2.5 if elapsed < 150 else 5.0
            app_clock.advance(step)
            elapsed += step
        after_storm = (clock.timestamp() - storm_end) / 60
        result = outcome(app, email_ids)
        in_doubt_alerts = db.session.execute(
            sa.select(sa.func.count()).where(OperatorAlert.kind == "email_in_doubt")
        ).scalar()
        report(
            capsys,
            result.line(
                "5xx/timeout storm over 300 sends",
                f"settled {after_storm:.1f} min after the storm; activity API at most "
                f"{max(storm.activity.values())}/min, {storm.refused} refused; "
                f"{in_doubt_alerts} in-doubt alerts",
            ),
        )
        assert (result.sent_once, result.lost, result.doubled, result.unresolved) == (300, 0, 0, 0)
        assert after_storm <= 15
        assert storm.refused == 0 and max(storm.activity.values()) <= 6


def test_a_429_with_a_reset_time_holds_back_every_send_of_the_account(make_app, app_clock, capsys):
    """SendGrid answers one send with 429 and a reset 90 s away: no other send goes out before
    the reset, however many workers and sweeps try; then all go out once. Simulated time."""
    app = make_app()
    with app.app_context():
        clients = add_clients(10)
        sandbox = get_sandbox(app.config)
        sandbox.fail_next(429, path_prefix="/v3/mail/send", retry_after=90)
        before = sandbox.requests_seen("/v3/mail/send")
        email_ids = [queue(client) for client in clients]
        run_jobs(app)
        for _ in range(5):  # 75 s of sweeps inside the window
            app_clock.advance(15)
            run_cron_job(app, "jobs.maintenance.sweep")
        inside_window = sandbox.requests_seen("/v3/mail/send") - before
        app_clock.advance(16)
        run_cron_job(app, "jobs.maintenance.sweep")
        result = outcome(app, email_ids)
        report(
            capsys, result.line("429 with a reset time", f"{inside_window} send request(s) inside the window")
        )
        assert inside_window == 1
        assert (result.sent_once, result.lost, result.doubled, result.unresolved) == (10, 0, 0, 0)


def healthy(port: int, http: httpx.Client):
    """A check that the server on this port answers its health check, made with one client:
    httpx.get builds a TLS context each call (about 50 ms of CPU, ten times a second)."""

    def check() -> bool:
        try:
            return http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    return check


def child_named(parent: subprocess.Popen, word: str) -> psutil.Process | None:
    """Return the running child of `flask up` whose command is this word, if there is one."""
    for child in psutil.Process(parent.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE and any(
                part == word or part.endswith(f"/{word}") for part in child.cmdline()
            ):
                return child
    return None


def test_redis_killed_and_restarted_under_flask_up(make_app, processes, capsys):
    """`flask up` (what bin/run runs) on a private redis-server, which is SIGKILLed mid-run and
    started again empty. Web, worker and scheduler ride it out (none dies), and emails queued
    before, during and after the outage are each sent once. Then a worker killed outright is
    restarted by the supervisor, and Ctrl-C still stops everything. (Wall time.)"""
    redis_port = free_port()
    redis = processes.redis_server(redis_port)
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", SANDBOX_SPEED=20.0)
    with app.app_context():
        clients = add_clients(10)
        web_port = free_port()
        up = processes.start("up", [*FLASK, "up", "--port", str(web_port), "--no-demo"], child_env(app))
        with httpx.Client(timeout=2) as http:
            wait_for(healthy(web_port, http), 90, what="flask up to answer")
        children = {word: child_named(up, word) for word in ("gunicorn", "worker", "scheduler")}
        email_ids = [queue(client) for client in clients[:3]]
        wait_for(lambda: settled(app, email_ids), 60, what="the first emails")

        redis.kill()
        redis.wait()
        email_ids += [queue(client) for client in clients[3:6]]  # only the rows know of these
        time.sleep(3)  # a real outage, in wall time: the real processes must ride it out
        redis = processes.redis_server(redis_port)  # back, and empty
        email_ids += [queue(client) for client in clients[6:9]]
        wait_for(lambda: settled(app, email_ids), 90, what="the emails queued around the outage")
        assert "stopped unexpectedly" not in processes.log(up)
        assert all(child.is_running() for child in children.values())

        children["worker"].kill()
        wait_for(lambda: "worker stopped unexpectedly" in processes.log(up), 10, what="the supervisor")
        killed = children["worker"].pid
        wait_for(lambda: getattr(child_named(up, "worker"), "pid", killed) != killed, 10, what="a new worker")
        processes.remember(up)
        email_ids.append(queue(clients[9]))
        wait_for(lambda: settled(app, email_ids), 60, what="an email sent by the restarted worker")

        family = [psutil.Process(up.pid), *psutil.Process(up.pid).children(recursive=True)]
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=30) == 0
        time.sleep(0.5)  # real children reaped by the kernel after their parent exits
        assert [proc for proc in family if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE] == []
        result = outcome(app, email_ids)
        report(capsys, result.line("Redis killed and restarted under flask up", f"{len(email_ids)} emails"))
        assert (result.sent_once, result.lost, result.doubled, result.unresolved) == (10, 0, 0, 0)


def test_workers_killed_at_random_strand_nothing(make_app, processes, capsys):
    """Two workers, 60 emails queued two a second, and every 0.3 to 1 s a SIGKILL: of the
    work-horse running a job, or now and then of a whole worker (its horse finishes alone and a
    new worker takes its place). Sends are slowed down before and after the provider takes
    them, so kills land on both sides of it.

    Scaled in wall time: the time settings are shrunk 40-fold (a send is abandoned after 3 s,
    not 120 s; "not found" means "not sent" after 8 s, not 300 s; the activity budget is
    240 a minute, not 6), so the 30 s kill phase stands for 20 minutes of kills, and every email
    must be sent once within 22.5 s after it, the scaled 15 minutes. Killing a worker's whole
    process group at once leaves RQ's record of its running job alive for a 90 s heartbeat that
    does not scale; tests/test_queue.py covers that case with the heartbeat expired by hand.
    FAULT_SEED picks another sequence of kills."""
    app = make_app(
        SEND_TIMEOUT_SECONDS=2,
        SEND_ABANDONED_SECONDS=3,
        IN_DOUBT_GRACE_SECONDS=8,
        ACTIVITY_REQUESTS_PER_MINUTE=240,
        SANDBOX_SPEED=40.0,
    )
    with app.app_context():
        clients = add_clients(60)
        sandbox = get_sandbox(app.config)
        sandbox.hold_next(count=100_000, seconds=0.3)
        sandbox.hold_next(count=100_000, seconds=0.3, after_accepting=True)
        workers = [processes.worker(app) for _ in range(2)]
        wait_for(lambda: len(Worker.all(connection=get_queue().connection)) == 2, 60, what="two workers")
        rng = random.Random(int(os.environ.get("FAULT_SEED", "238")))
        kills: Counter[str] = Counter()
        email_ids: list[int] = []
        start = time.monotonic()
        next_email = next_sweep = start
        next_kill = start + rng.uniform(0.3, 1.0)
        while (now := time.monotonic()) - start < 30:
            if now >= next_email and len(email_ids) < len(clients):
                email_ids.append(queue(clients[len(email_ids)]))
                next_email += 0.5
            if now >= next_kill:
                worker = rng.choice(workers)
                if rng.random() < 0.1 and kills["worker"] < 3:
                    processes.remember(worker)
                    worker.kill()
                    workers[workers.index(worker)] = processes.worker(app)
                    kills["worker"] += 1
                elif (horse := horse_of(worker)) is not None:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        horse.kill()
                        kills["horse"] += 1
                next_kill = now + rng.uniform(0.3, 1.0)
            if now >= next_sweep:
                maintenance.sweep()
                in_doubt.check_in_doubt()
                next_sweep = now + 0.5
            time.sleep(0.05)  # the kill phase paces real workers in wall time
        kill_phase_end = time.monotonic()
        drive(lambda: settled(app, email_ids), timeout=60)
        settled_after = time.monotonic() - kill_phase_end
        result = outcome(app, email_ids)
        attempts = db.session.execute(sa.select(sa.func.sum(Email.send_attempts))).scalar()
        report(
            capsys,
            result.line(
                "workers killed at random",
                f"{kills['horse']} horses and {kills['worker']} workers killed, {attempts} send attempts "
                f"for {len(email_ids)} emails; all settled {settled_after:.1f} s after the kills (scaled "
                f"{settled_after * 40 / 60:.1f} min)",
            ),
        )
        # An email whose two handovers were both killed before the provider showed it is held (and
        # support alerted), never handed over a third time.
        assert (result.lost, result.doubled, result.unresolved) == (0, 0, 0)
        assert result.sent_once + result.held == len(email_ids)
        assert settled_after <= 22.5
        assert kills["horse"] >= 10
