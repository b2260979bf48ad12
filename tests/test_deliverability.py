"""The owner's deliverability view: numbers against hand-counted fixtures, and who may see it."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.helpers import login
from webapp.extensions import db
from webapp.models import Client, Email, EmailEvent, SpamListEntry
from webapp.owner.charts import stacked_bars
from webapp.services import deliverability

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
FIRST_DAY = datetime(2026, 2, 14, tzinfo=UTC)  # 30 UTC days: 14 Feb to 15 Mar


def add_email(clinic_id, client_id, created_at, status, failure=None) -> Email:
    email = Email(
        clinic_id=clinic_id,
        client_id=client_id,
        to_address="x@example.com",
        subject="Reminder",
        body="B",
        kind="appointment_reminder",
        provider="sandbox",
        status=status,
        created_at=created_at,
        status_changed_at=created_at,
    )
    db.session.add(email)
    db.session.flush()
    if failure:
        kind, reason = failure
        db.session.add(
            EmailEvent(
                email_id=email.id,
                occurred_at=created_at,
                kind=kind,
                reason=reason,
                source="webhook",
                dedupe_key=uuid.uuid4().hex,
            )
        )
    return email


@pytest.fixture
def counted(app, world):
    """Six emails in the last 30 days, three in the 30 before, two outside both or another clinic's."""
    a, c = world.clinic_a.id, world.client_a.id
    today = datetime(2026, 3, 15, 1, 0, tzinfo=UTC)
    add_email(a, c, today, "delivered")
    add_email(a, c, today, "delivered")
    add_email(a, c, today, "failed", ("bounce", "550 5.1.1 The email account does not exist"))
    add_email(a, c, today - timedelta(days=1), "open")
    add_email(a, c, today - timedelta(days=1), "spam-report")
    add_email(a, c, FIRST_DAY, "clicked")  # the first moment of the window
    add_email(a, c, FIRST_DAY - timedelta(seconds=1), "delivered")  # the last of the previous 30
    add_email(a, c, today - timedelta(days=45), "failed", ("dropped", "Spam Reporting Address"))
    add_email(a, c, today - timedelta(days=45), "delivered")
    add_email(a, c, today - timedelta(days=61), "failed", ("bounce", "550 5.1.1 no such user"))  # too old
    add_email(world.clinic_b.id, world.client_b.id, today, "failed", ("bounce", "mailbox full"))
    blocked = Client(clinic_id=a, name="Zed Blocked", email=" Zed@Example.com ")
    db.session.add(blocked)
    db.session.add_all(
        [
            SpamListEntry(address="zed@example.com", reported_at=today, source="webhook"),
            SpamListEntry(address=world.client_b.email, reported_at=today, source="webhook"),
        ]
    )
    db.session.commit()
    return world


def test_the_days_and_statuses_match_the_hand_count(counted):
    overview = deliverability.overview(counted.clinic_a.id, NOW)

    assert overview.days[0] == date(2026, 2, 14) and overview.days[-1] == date(2026, 3, 15)
    assert len(overview.days) == 30
    assert overview.daily[date(2026, 3, 15)] == {"delivered": 2, "failed": 1}
    assert overview.daily[date(2026, 3, 14)] == {"open": 1, "spam-report": 1}
    assert overview.daily[date(2026, 2, 14)] == {"clicked": 1}
    assert sum(sum(counts.values()) for counts in overview.daily.values()) == 6
    assert overview.current.counts == {"delivered": 2, "failed": 1, "open": 1, "spam-report": 1, "clicked": 1}
    assert overview.previous.counts == {"delivered": 2, "failed": 1}


def test_the_change_against_the_previous_30_days(counted):
    changes = {change.label: change for change in deliverability.overview(counted.clinic_a.id, NOW).changes}
    assert (changes["Emails sent"].current, changes["Emails sent"].previous) == (6, 3)
    accepted = changes["Accepted by the client's mail server"]
    # Delivered 2, open, clicked and the spam report (it came from the client's own mailbox): 5 of 6.
    assert accepted.current == pytest.approx(500 / 6)
    assert accepted.previous == pytest.approx(200 / 3)
    assert changes["Failed"].delta == pytest.approx(100 / 6 - 100 / 3)
    assert (changes["Reported as spam"].current, changes["Reported as spam"].previous) == (1, 0)


def test_accepted_by_the_mail_server_counts_what_the_server_took_whatever_came_after(
    app, world, client, app_clock
):
    """Delivered, opened, filed as spam, reported as spam, or bounced after delivery: each was accepted
    by the client's mail server. Bounced or dropped without delivery: not."""
    a, c = world.clinic_a.id, world.client_a.id
    today = datetime(2026, 3, 15, 1, 0, tzinfo=UTC)
    add_email(a, c, today, "delivered")
    add_email(a, c, today, "spam-report", ("spamreport", None))
    filed = add_email(
        a, c, today, "open", ("spam_filtered", "The message was delivered, but was filed as spam")
    )
    late = add_email(a, c, today, "failed", ("delivered", "250 2.0.0 OK"))
    db.session.add(
        EmailEvent(
            email_id=late.id,
            occurred_at=today + timedelta(hours=2),
            kind="bounce",
            reason="550 5.1.1 no such user",
            source="webhook",
            dedupe_key=uuid.uuid4().hex,
        )
    )
    add_email(a, c, today, "failed", ("bounce", "550 5.1.1 no such user"))
    add_email(a, c, today, "failed", ("dropped", "Bounced Address"))
    db.session.commit()
    assert filed.status == "open"

    changes = {change.label: change for change in deliverability.overview(a, NOW).changes}
    assert changes["Accepted by the client's mail server"].current == pytest.approx(400 / 6)
    assert changes["Failed"].current == pytest.approx(300 / 6)

    login(client, "owner@a.example")
    app_clock.now = NOW.timestamp()
    page = client.get("/clinic/deliverability").get_data(as_text=True)
    assert "Reached the inbox server" not in page
    assert "Accepted by the client&#39;s mail server</th>" in page and "<td>66.7 %</td>" in page
    assert "Accepted does not mean it reached the inbox" in page


def test_failure_reasons_are_in_plain_words_and_only_this_clinics(counted):
    reasons = deliverability.overview(counted.clinic_a.id, NOW).reasons
    assert reasons == [("The address does not exist", 1)]


def test_blocked_clients_are_this_clinics_only(counted):
    blocked = deliverability.overview(counted.clinic_a.id, NOW).blocked
    assert [row.client.name for row in blocked] == ["Zed Blocked"]


def test_the_chart_bars_are_as_tall_as_their_counts(counted):
    overview = deliverability.overview(counted.clinic_a.id, NOW)
    chart = stacked_bars(overview.days, overview.daily)
    assert chart.top_value == 5  # the busiest day had 3
    today = chart.bars[-1]
    assert today.total == 3 and [s.status.key for s in today.segments] == ["delivered", "failed"]
    unit = (chart.plot_bottom - chart.plot_top) / chart.top_value
    assert [s.height for s in today.segments] == [
        pytest.approx(2 * unit, abs=0.01),
        pytest.approx(unit, abs=0.01),
    ]
    # Stacked: the second segment sits on the first.
    assert today.segments[1].y + today.segments[1].height == pytest.approx(today.segments[0].y, abs=0.02)
    assert sum(1 for bar in chart.bars if bar.segments) == 3


def test_the_owner_sees_the_page_with_chart_table_reasons_and_blocks(counted, client, app_clock):
    login(client, "owner@a.example")
    app_clock.now = NOW.timestamp()
    response = client.get("/clinic/deliverability")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<svg" in page and 'role="img"' in page
    assert len(re.findall(r'<rect class="bar bar-', page)) == 5  # five day-and-status pairs
    assert " style=" not in page and "<script>" not in page
    assert "The address does not exist: <strong>1</strong>" in page
    assert "Zed Blocked" in page and "Bob Other" not in page
    row = re.search(r"15 Mar 2026</time></th>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td>(\d+)</td>", row) == ["0", "0", "0", "2", "0", "0", "1", "0", "3"]


@pytest.mark.parametrize("who", ["clinician@a.example", "support@platform.example"])
def test_only_owners_see_it(app, world, client, who):
    login(client, who)
    assert client.get("/clinic/deliverability").status_code == 404


def test_an_empty_clinic_gets_a_calm_page(app, world, client):
    login(client, "owner@b.example")
    page = client.get("/clinic/deliverability").get_data(as_text=True)
    assert "No email failed in the last 30 days." in page
    assert "No client of the clinic is on the spam list." in page
