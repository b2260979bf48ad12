"""Fault tests of settling sends in doubt, on simulated time (the app clock), real PostgreSQL and
real Redis: one Postmark 5xx on a batch of 200, and a provider that takes emails and never reports
on them. Each prints its counts by the provider's own count of what it took (tests/faults.py)."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa

from tests.faults import acceptances, add_clients, outcome, queue, report, run_cron_job, settled
from tests.helpers import WIRE_FORMATS, run_jobs
from webapp import clock
from webapp.extensions import db
from webapp.models import Client, Clinic, Email, Incident, OperatorAlert
from webapp.providers import get_sandbox
from webapp.providers.postmark import PostmarkProvider


class LostBatchAnswer(httpx.BaseTransport):
    """Postmark's network: the `lose`-th /email/batch request reaches Postmark, which takes every
    message in it, but the answer is lost as a 500. It notes when each search was made."""

    def __init__(self, inner: httpx.BaseTransport, lose: int) -> None:
        self.inner = inner
        self.lose = lose
        self.batches = 0
        self.searches: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/email/batch":
            self.batches += 1
            if self.batches == self.lose:
                taken = self.inner.handle_request(request)  # Postmark has them all
                taken.read()
                taken.close()
                return httpx.Response(500, json={"ErrorCode": 0, "Message": "Internal server error."})
        elif path == "/messages/outbound":
            self.searches.append(clock.timestamp())
        return self.inner.handle_request(request)

    def busiest_minute(self) -> int:
        """The most searches made within any 60 seconds."""
        return max(
            (sum(start <= at < start + 60 for at in self.searches) for start in self.searches), default=0
        )


def in_state(email_ids: list[int], state: str) -> int:
    db.session.expire_all()
    return db.session.execute(
        sa.select(sa.func.count(Email.id)).where(Email.id.in_(email_ids), Email.send_state == state)
    ).scalar()


def test_one_postmark_5xx_on_a_batch_of_200_settles_within_5_minutes_none_twice(
    make_app, app_clock, monkeypatch, capsys
):
    """201 emails go out in one job: the first alone (the provider answers), then the other 200,
    whose answer is a 500 although Postmark took them. Postmark's lookup is one search an email;
    with Postmark's own budget (240 requests a minute, settling and polling each with a share) all
    200 are settled within 5 simulated minutes and none is sent twice."""
    app = make_app(SANDBOX_WIRE_FORMAT="postmark", ACTIVITY_REQUESTS_PER_MINUTE=0, SANDBOX_SPEED=1.0)
    with app.app_context():
        clients = add_clients(201)
        wire = LostBatchAnswer(httpx.WSGITransport(app=get_sandbox(app.config)), lose=2)
        provider = PostmarkProvider(
            "sandbox", "http://sandbox.invalid", transport=wire, clock=clock.timestamp
        )
        monkeypatch.setattr("webapp.providers._sandbox_provider", lambda *args: provider)
        email_ids = [queue(client) for client in clients]
        run_jobs(app)
        assert wire.batches == 2 and in_state(email_ids, "in_doubt") == 200
        lost_at = clock.timestamp()
        elapsed = 0
        in_doubt_by_minute = []
        while not settled(app, email_ids) and elapsed < 15 * 60:
            app_clock.advance(5)
            elapsed += 5
            run_cron_job(app, "jobs.polling.poll_provider")  # settles sends in doubt, then polls
            if elapsed % 15 == 0:
                run_cron_job(app, "jobs.maintenance.sweep")
            run_jobs(app)
            if elapsed % 60 == 0:
                in_doubt_by_minute.append(in_state(email_ids, "in_doubt"))
        minutes = (clock.timestamp() - lost_at) / 60
        result = outcome(app, email_ids)
        report(
            capsys,
            result.line(
                "one Postmark 5xx on a batch of 200",
                f"settled {minutes:.1f} min after the 5xx; in doubt at each minute {in_doubt_by_minute}; "
                f"{len(wire.searches)} searches, at most {wire.busiest_minute()} in a minute",
            ),
        )
        assert (result.sent_once, result.lost, result.doubled, result.unresolved) == (201, 0, 0, 0)
        assert minutes <= 5
        assert wire.busiest_minute() <= 240


def silent_clients(count: int) -> list[Client]:
    """Clients of one clinic whose address plays the account that accepts and never reports."""
    clinic = Clinic(name="Quiet Clinic")
    db.session.add(clinic)
    db.session.flush()
    clients = [
        Client(clinic_id=clinic.id, name=f"Client {n}", email=f"c{n}+silent@example.com")
        for n in range(count)
    ]
    db.session.add_all(clients)
    db.session.commit()
    return clients


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_a_provider_that_never_reports_gets_each_email_at_most_twice(
    make_app, app_clock, capsys, wire_format
):
    """20 emails to an account that takes every message, loses every answer (500) and never
    reports: not in its records, no event. Each email is handed over at most twice, then held,
    with one alert each in one incident; an hour more of sweeps and checks hands none over again."""
    app = make_app(ACTIVITY_REQUESTS_PER_MINUTE=0, SANDBOX_SPEED=1.0)
    started = time.monotonic()
    with app.app_context():
        email_ids = [queue(client) for client in silent_clients(20)]
        elapsed = 0

        def tick() -> None:
            nonlocal elapsed
            run_jobs(app)
            run_cron_job(app, "jobs.polling.poll_provider")
            if elapsed % 15 == 0:
                run_cron_job(app, "jobs.maintenance.sweep")
            app_clock.advance(5)
            elapsed += 5

        while in_state(email_ids, "held") < 20 and elapsed < 60 * 60:
            tick()
        held_after = elapsed / 60
        taken_then = acceptances(app)
        for _ in range(0, 60 * 60, 60):  # an hour more, a minute a step
            app_clock.advance(55)
            elapsed += 55
            tick()
        taken = acceptances(app)
        ours = sa.select(Email.app_message_id).where(Email.id.in_(email_ids))
        handovers = Counter(taken[app_id] for app_id in db.session.execute(ours).scalars())
        held = in_state(email_ids, "held")
        alerted = db.session.execute(
            sa.select(sa.func.count(OperatorAlert.id)).where(
                OperatorAlert.kind == "email_unreported", OperatorAlert.resolved_at.is_(None)
            )
        ).scalar()
        incidents = db.session.execute(
            sa.select(sa.func.count(Incident.id)).where(Incident.kind == "email_unreported")
        ).scalar()
        more = sum(count for times, count in handovers.items() if times > 2)
        report(
            capsys,
            f"[fault] provider that never reports ({wire_format}): 20 emails taken once {handovers[1]}, "
            f"twice {handovers[2]}, more often {more}; held {held}, alerted {alerted} in {incidents} "
            f"incident(s); all held after {held_after:.1f} simulated minutes, none taken in the hour "
            f"after ({time.monotonic() - started:.0f} s of wall time)",
        )
        assert more == 0 and handovers[0] == 0
        assert held == 20 and alerted == 20 and incidents == 1
        # The held emails' other alerts (stuck, in doubt) gave way to the one that says what happened.
        others = sa.select(sa.func.count(OperatorAlert.id)).where(
            OperatorAlert.kind != "email_unreported", OperatorAlert.resolved_at.is_(None)
        )
        assert db.session.execute(others).scalar() == 0
        assert taken == taken_then
