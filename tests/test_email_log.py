"""The clinician's side: client list, client file, the email log and its live refresh, sending
and resending, all through the Flask test client and asserted on the HTML a clinician gets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask, template_rendered
from markupsafe import Markup

from tests.helpers import (
    BOUNCE,
    BOUNCED,
    CLINICIAN,
    DELIVERED,
    add_email,
    emails_of,
    htmx_get,
    login,
    poll_url,
    row_html,
    text,
    timeline_html,
)
from webapp.extensions import db
from webapp.models import Client, Email, utcnow
from webapp.providers.base import ProviderEvent
from webapp.queue import get_queue
from webapp.services.events import add_to_spam_list, apply_events

XSS = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'


# --- Helpers -----------------------------------------------------------------------------------


@pytest.fixture
def signed_in(client, world):
    login(client, CLINICIAN)
    return client


@contextmanager
def count_work(app: Flask) -> Iterator[dict[str, list]]:
    """Record every SQL statement run and every template rendered inside the block."""
    seen: dict[str, list] = {"sql": [], "templates": []}

    def on_sql(conn, cursor, statement, parameters, context, executemany) -> None:
        seen["sql"].append(statement)

    def on_template(sender, template, context, **extra) -> None:
        seen["templates"].append(template.name)

    sa.event.listen(db.engine, "before_cursor_execute", on_sql)
    template_rendered.connect(on_template, app)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", on_sql)
        template_rendered.disconnect(on_template, app)


# --- 1. Client list ----------------------------------------------------------------------------


def add_clients(clinic, count: int, prefix: str = "Client") -> list[Client]:
    clients = [
        Client(clinic_id=clinic.id, name=f"{prefix} {n:02d}", email=f"{prefix.lower()}{n:02d}@example.com")
        for n in range(count)
    ]
    db.session.add_all(clients)
    db.session.commit()
    return clients


@pytest.mark.engine  # lower() and LIKE are each engine's own
def test_search_by_name_or_email_ignores_case_and_stays_in_the_clinic(signed_in, world):
    db.session.add(Client(clinic_id=world.clinic_a.id, name="Ann Other", email="A.Other@Example.COM"))
    db.session.add(Client(clinic_id=world.clinic_b.id, name="Jane Elsewhere", email="jane@b.example"))
    db.session.commit()

    by_name = signed_in.get("/clients?q=jANE").get_data(as_text=True)
    assert "Jane Doe" in by_name and "Ann Other" not in by_name
    assert "Jane Elsewhere" not in by_name  # another clinic's client
    by_email = signed_in.get("/clients?q=a.other@EXAMPLE").get_data(as_text=True)
    assert "Ann Other" in by_email and "Jane Doe" not in by_email
    # Wildcards are searched for literally.
    assert "No clients match" in signed_in.get("/clients?q=%25").get_data(as_text=True)
    assert "No clients match" in signed_in.get("/clients?q=_").get_data(as_text=True)


def test_the_client_list_is_paginated_and_pages_keep_the_search(signed_in, world):
    add_clients(world.clinic_a, 30, prefix="Zed")

    first = signed_in.get("/clients?q=zed").get_data(as_text=True)
    assert first.count('href="/clients/') == 25
    assert "Page 1 of 2 · 30 clients" in first
    assert 'href="/clients?q=zed&amp;page=2"' in first
    second = signed_in.get("/clients?q=zed&page=2").get_data(as_text=True)
    assert second.count('href="/clients/') == 5
    assert "Zed 29" in second and "Zed 00" not in second
    assert 'href="/clients?q=zed&amp;page=1"' in second


def test_an_htmx_search_returns_only_the_list(signed_in, world):
    response = signed_in.get("/clients?q=jane", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="client-list"')
    assert "<html" not in html and "Jane Doe" in html
    assert "HX-Request" in response.vary
    # The result count is swapped beside the list, into a status region screen readers announce.
    count = re.search(r'<p id="client-count"([^>]*)>([^<]*)</p>', html)
    assert count.groups() == (
        ' class="visually-hidden" role="status" hx-swap-oob="true"',
        "1 client matches “jane”",
    )
    db.session.add(Client(clinic_id=world.clinic_a.id, name="Eve Example", email="eve@example.com"))
    db.session.commit()
    page = signed_in.get("/clients?q=E").get_data(as_text=True)
    count = re.search(r'<p id="client-count"([^>]*)>([^<]*)</p>', page)
    assert count.groups() == (' class="visually-hidden" role="status"', "2 clients match “E”")


def test_each_client_shows_how_mail_to_their_address_fares(signed_in, world):
    fine, failing, spam, corrected = add_clients(world.clinic_a, 4, prefix="Health")
    add_email(fine, events=DELIVERED)
    add_email(failing, events=BOUNCED)
    add_email(spam, events=[*DELIVERED, (60, "spamreport", {})])
    add_email(corrected, events=BOUNCED, to_address="old@example.com")  # the file has a new address
    db.session.commit()

    html = signed_in.get("/clients?q=health").get_data(as_text=True)
    marks = dict(re.findall(r">(Health \d\d)</a>.*?class=\"health health-(\w+)\">", html, re.S))
    assert marks == {"Health 00": "fine", "Health 01": "failure", "Health 02": "spam", "Health 03": "fine"}
    assert "Recent failure" in html and "On the spam list" in html
    # A block that is not this clinic's own spam report is only called a block.
    add_to_spam_list(fine.email, utcnow(), None, "sync")
    db.session.commit()
    html = signed_in.get("/clients?q=health").get_data(as_text=True)
    assert html.count("On the spam list") == 1 and "Blocked" in html


def test_the_client_list_and_file_need_a_clinic_role(client, world):
    assert client.get("/clients").status_code == 302
    login(client, "support@platform.example")
    assert client.get("/clients").status_code == 404
    assert client.get(f"/clients/{world.client_a.id}").status_code == 404


# --- 2. Client file banner ---------------------------------------------------------------------


def test_a_spam_report_blocks_the_address_and_says_how_the_client_can_lift_it(signed_in, app, world):
    jane = world.client_a
    reported = add_email(jane, subject="Intake form for you", events=[*DELIVERED, (3600, "spamreport", {})])
    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    banner = text(html[html.index('class="banner banner-danger"') : html.index('id="email-log"')])

    assert "Emails to this address are blocked" in banner
    assert "Jane Doe reported the email “Intake form for you” as spam on" in banner
    assert reported.created_at.strftime("%d %b %Y") in banner
    support = app.config["SUPPORT_ADDRESS"]
    assert f"Only Jane Doe can lift this, by emailing {support} from {jane.email}" in banner
    assert "must come from the client" in banner
    # The ready-to-copy text for the client names the address to write to and from.
    instructions = re.search(r'<p id="client-instructions"[^>]*>(.*?)</p>', html, re.S).group(1)
    assert support in instructions and jane.email in instructions and "Clinic A" in instructions
    assert 'data-copy-target="client-instructions"' in html
    # Sending is not offered.
    assert "Sending is not possible" in html
    assert f'action="/clients/{jane.id}/emails"' not in html


@pytest.mark.engine  # lower() is each engine's own
@pytest.mark.parametrize("address", ["Jane.Doe@Example.com", "ÅSA.Berg@example.com", " jane@example.com "])
def test_the_log_partial_finds_the_spam_list_entry_however_the_address_is_written(signed_in, world, address):
    # The client and its entry are read in one query, joined on the database's lower(): letters
    # past ASCII and surrounding spaces it lowers otherwise than the spam list, which the
    # partial must still find.
    jane = world.client_a
    jane.email = address
    db.session.commit()
    add_to_spam_list(address, utcnow(), None, "sync")
    db.session.commit()
    html = htmx_get(signed_in, f"/clients/{jane.id}/emails").get_data(as_text=True)
    assert "Emails to this address are blocked" in text(html)


def test_a_spam_report_made_to_another_clinic_does_not_reveal_its_email(signed_in, world):
    other = Client(clinic_id=world.clinic_b.id, name="Jane at B", email=world.client_a.email)
    db.session.add(other)
    db.session.commit()
    add_email(other, subject="Secret subject of clinic B", events=[*DELIVERED, (60, "spamreport", {})])

    html = signed_in.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert "Emails to this address are blocked" in html
    # Neither that there was a report, nor when (tests/test_security_disclosure.py).
    assert "Our email provider does not deliver to" in text(html)
    assert "reported" not in text(html)
    assert "Secret subject" not in html


def test_a_recent_failure_says_why_in_plain_words_and_what_to_check(signed_in, world):
    jane = world.client_a
    add_email(jane, subject="Your receipt", events=BOUNCED)

    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    banner = text(html[html.index('class="banner banner-warning"') : html.index('id="email-log"')])
    assert "The last email to this address failed" in banner
    assert (
        "“Your receipt” could not be delivered: the address does not exist (check it with the client"
        in banner
    )
    assert "550 5.1.1" not in banner  # plain words here; the server's own are on the timeline
    assert f"Check with Jane Doe that {jane.email} is current and spelled correctly" in banner
    assert "typo" in banner


def test_a_failure_followed_by_a_delivery_clears_the_banner(signed_in, world):
    add_email(world.client_a, sent_at=utcnow() - timedelta(hours=2), events=BOUNCED)
    add_email(world.client_a, events=DELIVERED)
    html = signed_in.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert 'class="banner' not in html


# --- 3. The log --------------------------------------------------------------------------------


def test_the_log_lists_the_past_30_days_newest_first_with_every_column(signed_in, world):
    jane = world.client_a
    now = utcnow()
    old = add_email(jane, sent_at=now - timedelta(days=31), subject="Too old to show", events=DELIVERED)
    older = add_email(
        jane, sent_at=now - timedelta(days=29), subject="Intake please", kind="intake_form", events=DELIVERED
    )
    newer = add_email(
        jane,
        sent_at=now - timedelta(hours=3),
        subject="See you Monday",
        to_address="jane@other.example",
        events=BOUNCED,
    )
    deferred = add_email(
        jane,
        sent_at=now - timedelta(minutes=20),
        subject="Your receipt",
        kind="receipt",
        events=[(5, "processed", {}), (60, "deferred", {"attempt": 1, "reason": "421 busy"})],
    )

    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert "Too old to show" not in html and f'id="email-{old.id}"' not in html
    order = [int(n) for n in re.findall(r'<li class="log-row" id="email-(\d+)"', html)]
    assert order == [deferred.id, newer.id, older.id]

    row = row_html(html, older)
    assert older.created_at.strftime("%d %b %H:%M UTC") in row
    assert f'datetime="{older.created_at.isoformat()}"' in row
    assert '<span class="log-subject">Intake please</span>' in row
    assert '<span class="log-kind">Intake form</span>' in row
    assert jane.email in row
    assert re.search(r'class="badge badge-ok"[^>]*>Delivered<', row)
    assert "29 days ago" in row  # when its status last changed

    row = row_html(html, newer)
    assert "jane@other.example" in row  # the address used, not the one on file
    assert re.search(r'class="badge badge-danger"[^>]*>Failed<', row)
    assert "3 hours ago" in row
    row = row_html(html, deferred)
    assert re.search(r'class="badge badge-warning"[^>]*>Deferred<', row)
    assert "19 min ago" in row


def test_a_row_rendered_before_changes_with_its_email_the_time_zone_and_the_time(
    signed_in, app, world, app_clock
):
    jane = world.client_a
    email = add_email(jane, sent_at=utcnow() - timedelta(hours=2), subject="Kept row", events=DELIVERED)
    url = f"/clients/{jane.id}/emails"
    first = htmx_get(signed_in, url).get_data(as_text=True)
    assert len(app.extensions["log_rows"]) == 1  # kept for the next render
    again = htmx_get(signed_in, url).get_data(as_text=True)
    assert row_html(again, email) == row_html(first, email)
    assert "2 hours ago" in row_html(again, email)

    # A new status (its version bumped).
    apply_events(email, [ProviderEvent("open", utcnow(), app_message_id=email.app_message_id)], "webhook")
    db.session.commit()
    row = row_html(htmx_get(signed_in, url).get_data(as_text=True), email)
    assert re.search(r'class="badge badge-ok"[^>]*>Open<', row) and "just now" in row
    # Time moves on: the relative time with it.
    app_clock.advance(3 * 3600)
    assert "3 hours ago" in row_html(htmx_get(signed_in, url).get_data(as_text=True), email)
    # Another time zone: the row's times in it.
    world.clinic_a.timezone = "Asia/Tokyo"
    db.session.commit()
    row = row_html(htmx_get(signed_in, url).get_data(as_text=True), email)
    assert email.created_at.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%d %b %H:%M JST") in row
    # The sender's name as it is now, though no version was bumped for it.
    sender = world.users["clinician"].id
    db.session.execute(sa.update(Email).where(Email.id == email.id).values(sent_by_id=sender))
    db.session.commit()
    assert "sent by Cleo A" in row_html(htmx_get(signed_in, url).get_data(as_text=True), email)
    world.users["clinician"].name = "Cleo Renamed"
    db.session.commit()
    assert "sent by Cleo Renamed" in row_html(htmx_get(signed_in, url).get_data(as_text=True), email)


def test_the_row_cache_keeps_at_most_its_size():
    from webapp.freshness.row_cache import RowCache

    cache = RowCache(size=2)
    rows = cache.for_request(("UTC", "/help"))
    for key in ("a", "b", "c"):
        rows.keep(key, Markup(key))
    assert len(cache) == 2 and rows.get("a") is None and rows.get("c") == "c"
    assert rows.keep(None, Markup("x")) == "x" and len(cache) == 2  # a row with notices is not kept
    assert cache.for_request(("Asia/Tokyo", "/help")).get("c") is None  # another context


def test_the_log_filters_by_status(signed_in, world):
    jane = world.client_a
    delivered = add_email(jane, subject="Fine one", events=DELIVERED)
    failed = add_email(jane, subject="Broken one", events=BOUNCED)

    html = htmx_get(signed_in, f"/clients/{jane.id}/emails?status=failed", trigger="log-filter")
    body = html.get_data(as_text=True)
    assert f'id="email-{failed.id}"' in body and f'id="email-{delivered.id}"' not in body
    assert '<option value="failed" selected>' in body
    # The filter goes into the page address, and the log keeps it while it polls.
    assert html.headers["HX-Push-Url"] == f"/clients/{jane.id}?status=failed"
    assert "status=failed" in poll_url(body)
    # The full page honours it too, and an unknown status shows everything.
    page = signed_in.get(f"/clients/{jane.id}?status=delivered").get_data(as_text=True)
    assert f'id="email-{delivered.id}"' in page and f'id="email-{failed.id}"' not in page
    page = signed_in.get(f"/clients/{jane.id}?status=nonsense").get_data(as_text=True)
    assert f'id="email-{delivered.id}"' in page and f'id="email-{failed.id}"' in page
    empty = signed_in.get(f"/clients/{jane.id}?status=clicked").get_data(as_text=True)
    assert "No emails with this status in the past 30 days." in empty


def test_a_rows_timeline_is_fetched_when_opened_with_every_event_and_its_detail(signed_in, world):
    jane = world.client_a
    sent = (utcnow() - timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
    email = add_email(
        jane,
        sent_at=sent,
        events=[
            (5, "processed", {}),
            (60, "deferred", {"attempt": 1, "reason": "421 4.7.0 Try again later"}),
            (600, "deferred", {"attempt": 2, "reason": "421 4.7.0 Try again later"}),
            (1200, "delivered", {"raw": {"response": "250 2.0.0 OK"}}),
            (1203, "click", {"url": "https://clinic.example/scan-me"}),  # seconds after delivery
            (3600, "open", {"machine": True}),
            (3700, "click", {"url": "https://clinic.example/intake?a=1&b=2"}),
        ],
    )
    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    row = row_html(html, email)
    assert f'aria-controls="timeline-{email.id}"' in row and 'aria-expanded="false"' in row
    assert 'data-timeline-url="/emails/{}/timeline"' in html  # where the toggle fetches it
    # The closed row carries an empty timeline: its content comes when the row is opened.
    assert re.search(rf'<div class="timeline" id="timeline-{email.id}" aria-live="polite" hidden></div>', row)
    assert "Queued for sending" not in html and "scan-me" not in html
    # Without JavaScript the row links to the email's timeline page.
    assert f'<noscript><p class="timeline-link"><a href="/emails/{email.id}/timeline">' in row
    words = text(timeline_html(signed_in, email))
    assert "09:00 UTC Queued for sending" in words
    assert "09:01 UTC Deferred by the receiving server attempt 1; 421 4.7.0 Try again later" in words
    assert "09:10 UTC Deferred by the receiving server attempt 2; 421 4.7.0 Try again later" in words
    assert "09:20 UTC Delivered to the receiving server 250 2.0.0 OK" in words
    assert "09:20 UTC Link clicked https://clinic.example/scan-me likely automated" in words
    assert "10:00 UTC Opened machine open" in words
    assert "10:01 UTC Link clicked https://clinic.example/intake?a=1&amp;b=2" in words
    assert "10:01 UTC Link clicked https://clinic.example/intake?a=1&b=2 likely automated" not in words
    # A clicked URL is text, never a link the clinician could follow by accident.
    assert '<a href="https://clinic.example' not in html


def test_the_log_renders_only_the_timelines_the_browser_has_open(signed_in, world, monkeypatch):
    from webapp.services import log_rows

    jane = world.client_a
    shut = add_email(
        jane, subject="Shut one", events=[*DELIVERED, (60, "click", {"url": "https://shut.example"})]
    )
    opened = add_email(
        jane, subject="Open one", events=[*DELIVERED, (60, "click", {"url": "https://open.example"})]
    )
    other_clinic = add_email(world.client_b, events=DELIVERED)
    # The log's automatic refresh says which rows are open; anything else in `open` is ignored.
    query = f"open={opened.id},{other_clinic.id},abc,-3,99999999999999999999,,{2**31}"
    response = htmx_get(signed_in, f"/clients/{jane.id}/emails?{query}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    row = row_html(html, opened)
    assert 'aria-expanded="true"' in row and "data-loaded" in row
    assert "https://open.example" in row and "Link clicked" in row
    assert "Jane Doe says it never arrived?" not in row  # clicked: it arrived
    # The rows it was not asked for carry no timeline at all.
    assert re.search(rf'<div class="timeline" id="timeline-{shut.id}" aria-live="polite" hidden></div>', html)
    assert "https://shut.example" not in html
    assert html.count('class="event-label"') == 4  # the open row's: sending, processed, delivered, click
    assert f"email-{other_clinic.id}" not in html

    # At most MAX_OPEN_TIMELINES of them, however many the browser names.
    monkeypatch.setattr(log_rows, "MAX_OPEN_TIMELINES", 1)
    html = htmx_get(signed_in, f"/clients/{jane.id}/emails?open={shut.id},{opened.id}").get_data(as_text=True)
    assert html.count("data-loaded") == 1
    long = ",".join(str(shut.id) for _ in range(5000))
    assert htmx_get(signed_in, f"/clients/{jane.id}/emails?open={long}").status_code == 200


def test_a_timeline_is_shown_only_to_its_clinic_and_bounded(app, signed_in, world, monkeypatch):
    from webapp.services import timelines

    email = add_email(world.client_a, events=[*DELIVERED, *((60 + n, "open", {}) for n in range(5))])
    theirs = add_email(world.client_b, events=DELIVERED)
    assert "Opened" in text(timeline_html(signed_in, email))
    for url in (f"/emails/{theirs.id}/timeline", "/emails/999999/timeline", f"/emails/{2**31}/timeline"):
        assert htmx_get(signed_in, url).status_code == 404
        assert signed_in.get(url).status_code == 404
    other = app.test_client()
    login(other, "clinician@b.example")
    assert htmx_get(other, f"/emails/{email.id}/timeline").status_code == 404
    assert htmx_get(other, f"/emails/{theirs.id}/timeline").status_code == 200
    anonymous = app.test_client().get(f"/emails/{email.id}/timeline")
    assert anonymous.status_code in (302, 401) and "Opened" not in anonymous.get_data(as_text=True)

    monkeypatch.setattr(timelines, "MAX_TIMELINE_EVENTS", 4)
    words = text(timeline_html(signed_in, email))
    assert words.count("Opened") == 1 and "Only the first 4 events are shown." in words


def test_without_javascript_a_timeline_is_a_page_of_its_own(signed_in, world):
    jane = world.client_a
    email = add_email(jane, subject="Your intake form", events=DELIVERED)
    page = signed_in.get(f"/emails/{email.id}/timeline")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Timeline of “Your intake form”</h1>" in html
    assert f'href="/clients/{jane.id}#email-{email.id}"' in html  # back to its row
    words = text(html)
    assert "Delivered to the receiving server" in words and "Jane Doe says it never arrived?" in words


def test_a_late_bounce_or_drop_is_explained_in_a_sentence(signed_in, world):
    jane = world.client_a
    sent = (utcnow() - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    late = add_email(
        jane,
        sent_at=sent,
        events=[
            (5, "processed", {}),
            (120, "delivered", {}),
            (3 * 3600 + 15 * 60, "bounce", {"reason": BOUNCE}),
        ],
    )
    dropped = add_email(
        jane,
        sent_at=sent + timedelta(minutes=1),
        subject="Dropped one",
        events=[
            (5, "processed", {}),
            (30, "dropped", {"reason": "Bounced Address", "reject_reason": "bounced_address"}),
        ],
    )
    reported = add_email(
        jane,
        sent_at=sent - timedelta(days=1),
        subject="Reported",
        events=[(5, "processed", {}), (120, "delivered", {}), (7200, "spamreport", {})],
    )

    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    row = text(row_html(html, late))
    assert "Delivered at 10:02 UTC, then bounced at 13:15 UTC." in row
    assert "Not delivered: the address does not exist (check it with the client" in row
    row = text(row_html(html, dropped))
    assert "then" not in row  # never delivered: nothing late about it
    assert "Not delivered:" in row and "Dropped by the email provider" in text(
        timeline_html(signed_in, dropped)
    )
    assert "Delivered at 10:02 UTC, then reported as spam at 12:00 UTC." in text(row_html(html, reported))


def test_a_row_stuck_in_sending_or_processed_says_so_and_that_support_knows(signed_in, world):
    jane = world.client_a
    now = utcnow()
    stuck_sending = add_email(jane, sent_at=now - timedelta(minutes=11))
    stuck_processed = add_email(jane, sent_at=now - timedelta(minutes=30), events=[(5, "processed", {})])
    young = add_email(jane, sent_at=now - timedelta(minutes=5), events=[(5, "processed", {})])
    deferred = add_email(jane, sent_at=now - timedelta(hours=2), events=[(60, "deferred", {"attempt": 1})])

    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    for email, label in ((stuck_sending, "Sending"), (stuck_processed, "Processed")):
        row = text(row_html(html, email))
        assert f"This email has been in {label} for more than 10 minutes, so it looks stuck." in row
        assert "Support has been told automatically" in row
        # One story with the help: the reference support knows it by, and when to get in touch.
        assert f"under reference E-{email.id}; you do not need to contact them." in row
        assert f"quoting E-{email.id}, only if it is still stuck 1 hour after it was sent" in row
    for email in (young, deferred):
        assert "stuck" not in text(row_html(html, email))


def test_a_row_whose_send_is_in_doubt_says_we_are_checking_with_the_provider(signed_in, world):
    jane = world.client_a
    now = utcnow()
    checking = add_email(jane, sent_at=now - timedelta(minutes=2))
    long_checking = add_email(jane, sent_at=now - timedelta(minutes=12))
    for email in (checking, long_checking):
        email.send_state = "in_doubt"
        email.in_doubt_since = email.created_at
    db.session.commit()

    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    row = text(row_html(html, checking))
    assert "we are checking whether the provider received it" in row
    assert "the client does not get it twice" in row
    assert "Support has been told" not in row and "stuck" not in row
    row = text(row_html(html, long_checking))
    assert "we are checking whether the provider received it" in row
    assert "support has been told automatically" in row
    assert "looks stuck" not in row  # one notice, the one that says what is going on


def test_badges_open_the_help_for_their_status_in_the_panel(signed_in, world):
    email = add_email(world.client_a, events=[*DELIVERED, (60, "spamreport", {})])
    html = signed_in.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    badge = re.search(
        r"<a id=\"badge-\d+\" class=\"badge badge-danger\"(.*?)</a>", row_html(html, email), re.S
    )
    assert 'href="/help#spam-report"' in badge.group(1)  # without JavaScript: the whole guide
    assert f'hx-get="/help/statuses/spam-report?email={email.id}"' in badge.group(1)
    assert 'hx-target="#help-panel"' in badge.group(1)
    assert "Spam report" in badge.group(1) and "what this status means" in badge.group(1)
    assert '<section id="help-panel"' in html


def test_another_clinics_client_and_log_are_not_found(signed_in, world):
    add_email(world.client_b, subject="B's email", events=DELIVERED)
    assert signed_in.get(f"/clients/{world.client_b.id}").status_code == 404
    response = htmx_get(signed_in, f"/clients/{world.client_b.id}/emails")
    assert response.status_code == 404 and b"B's email" not in response.data
    # Even with a change marker guessed from Redis, the cheap path never answers for it.
    assert htmx_get(signed_in, f"/clients/{world.client_b.id}/emails?v=1-9999999999").status_code == 404


# --- 4. Live refresh ---------------------------------------------------------------------------


def test_the_log_polls_fast_while_a_row_can_change_soon_and_slowly_otherwise(signed_in, app, world):
    jane = world.client_a
    fast, slow = app.config["LOG_POLL_FAST_SECONDS"], app.config["LOG_POLL_SLOW_SECONDS"]
    assert fast < slow

    def poll_seconds() -> int:
        html = htmx_get(signed_in, f"/clients/{jane.id}/emails").get_data(as_text=True)
        return int(re.search(r'data-poll-seconds="(\d+)"', html).group(1))

    assert poll_seconds() == slow  # an empty log
    email = add_email(jane, events=DELIVERED)
    assert poll_seconds() == slow
    for kind, details in (("processed", {}), ("deferred", {"attempt": 1})):
        pending = add_email(jane, events=[(1, kind, details)])
        assert poll_seconds() == fast, kind
        apply_events(
            pending, [ProviderEvent("delivered", utcnow(), app_message_id=pending.app_message_id)], "poll"
        )
        db.session.commit()
        assert poll_seconds() == slow
    add_email(jane)  # Sending
    assert poll_seconds() == fast
    assert email.id  # the delivered one stayed in the log throughout


def test_an_unchanged_log_answers_204_without_the_database_or_a_template(signed_in, app, world):
    jane = world.client_a
    email = add_email(jane, sent_at=utcnow() - timedelta(minutes=1), events=[(5, "processed", {})])
    first = htmx_get(signed_in, f"/clients/{jane.id}/emails")
    assert first.status_code == 200
    url = poll_url(first.get_data(as_text=True))

    with count_work(app) as seen:
        again = htmx_get(signed_in, url)
    assert again.status_code == 204 and again.data == b""
    assert seen == {"sql": [], "templates": []}

    # Once one of the client's emails changes, the same URL renders the new status.
    apply_events(email, [ProviderEvent("delivered", utcnow(), app_message_id=email.app_message_id)], "poll")
    db.session.commit()
    with count_work(app) as seen:
        changed = htmx_get(signed_in, url)
    assert changed.status_code == 200
    assert re.search(r'class="badge badge-ok"[^>]*>Delivered<', changed.get_data(as_text=True))
    assert seen["sql"] and seen["templates"] == ["clients/_email_log.html"]
    assert htmx_get(signed_in, poll_url(changed.get_data(as_text=True))).status_code == 204


def test_another_clients_change_does_not_wake_this_log(signed_in, world):
    other = Client(clinic_id=world.clinic_a.id, name="Other Client", email="other@example.com")
    db.session.add(other)
    db.session.commit()
    url = poll_url(htmx_get(signed_in, f"/clients/{world.client_a.id}/emails").get_data(as_text=True))
    add_email(other, events=DELIVERED)
    assert htmx_get(signed_in, url).status_code == 204


def test_the_log_is_rendered_again_when_its_marker_is_stale(signed_in, app, world):
    jane = world.client_a
    url = poll_url(htmx_get(signed_in, f"/clients/{jane.id}/emails").get_data(as_text=True))
    marker = re.search(r"v=(\d+)-(\d+)", url)
    # Past the time the server said the page stays valid (relative times, a row going stuck).
    expired = url.replace(marker.group(0), f"v={marker.group(1)}-{int(utcnow().timestamp()) - 1}")
    assert htmx_get(signed_in, expired).status_code == 200
    # Redis lost the counter: render from the database rather than claim nothing changed.
    app.extensions["redis"].flushdb()
    assert htmx_get(signed_in, url).status_code == 200
    # A tampered or missing marker renders too.
    assert htmx_get(signed_in, f"/clients/{jane.id}/emails?v=garbage").status_code == 200
    assert htmx_get(signed_in, f"/clients/{jane.id}/emails").status_code == 200


def test_a_row_about_to_go_stuck_limits_how_long_the_log_counts_as_unchanged(signed_in, world):
    jane = world.client_a
    email = add_email(jane, sent_at=utcnow() - timedelta(minutes=9, seconds=30))
    url = poll_url(htmx_get(signed_in, f"/clients/{jane.id}/emails").get_data(as_text=True))
    fresh_until = int(re.search(r"v=\d+-(\d+)", url).group(1))
    stuck_at = email.status_changed_at + timedelta(minutes=10)
    assert fresh_until == int(stuck_at.timestamp())


def test_the_log_shows_when_it_last_checked(signed_in, world):
    html = htmx_get(signed_in, f"/clients/{world.client_a.id}/emails").get_data(as_text=True)
    checked = int(re.search(r'class="updated" data-checked-at="(\d+)"', html).group(1))
    assert abs(checked - utcnow().timestamp()) < 5
    assert "updated just now" in html


def test_an_expired_session_sends_the_whole_page_to_the_login_screen(signed_in, app, world, monkeypatch):
    from webapp import security

    jane = world.client_a
    url = poll_url(htmx_get(signed_in, f"/clients/{jane.id}/emails").get_data(as_text=True))
    monkeypatch.setattr(security, "IDLE_TIMEOUT_SECONDS", -1)

    response = htmx_get(signed_in, url)
    assert response.headers["HX-Redirect"] == "/login"
    assert response.status_code == 204  # never 3xx: the browser would follow it inside the log
    assert b"<form" not in response.data and b"password" not in response.data.lower()
    # The session is over: later polls and the page itself go to the login screen as well.
    monkeypatch.setattr(security, "IDLE_TIMEOUT_SECONDS", 30 * 60)
    assert htmx_get(signed_in, url).headers["HX-Redirect"] == "/login"
    page = signed_in.get(f"/clients/{jane.id}")
    assert page.status_code == 302 and page.headers["Location"].endswith("/login")


def test_polling_does_not_keep_an_idle_session_alive(signed_in, world):
    url = f"/clients/{world.client_a.id}/emails"
    with signed_in.session_transaction() as session:
        session["seen_at"] -= 600
        seen_at = session["seen_at"]
    assert htmx_get(signed_in, url).status_code == 200
    with signed_in.session_transaction() as session:
        assert session["seen_at"] == seen_at
    # Choosing a filter is the clinician acting: that does count.
    htmx_get(signed_in, url + "?status=failed", trigger="log-filter")
    with signed_in.session_transaction() as session:
        assert session["seen_at"] > seen_at


# --- 7. Send and resend ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "subject", "typed"),
    [
        ("appointment_reminder", "Appointment reminder", {}),
        ("intake_form", "Your intake form", {}),
        (
            "receipt",
            "Your receipt",
            {"lines-0-service": "Massage", "lines-0-day": "2026-03-02", "lines-0-amount": "80.00"},
        ),
    ],
)
def test_each_kind_of_message_is_queued_with_its_ready_made_text(signed_in, world, kind, subject, typed):
    jane = world.client_a
    world.clinic_a.intake_form_url = "https://clinic-a.example/intake"  # an intake form needs one
    db.session.commit()
    response = signed_in.post(f"/clients/{jane.id}/emails", data={"kind": kind, **typed})
    assert response.status_code == 303 and response.headers["Location"] == f"/clients/{jane.id}"
    (email,) = emails_of(jane)
    assert (email.kind, email.subject, email.status, email.to_address) == (
        kind,
        subject,
        "sending",
        jane.email,
    )
    assert "Hello Jane Doe" in email.body and "Clinic A" in email.body
    assert len(get_queue()) == 1
    page = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert f"Sending “{subject}” to {jane.email}." in page
    assert re.search(r'class="badge badge-pending"[^>]*>Sending<', row_html(page, email))


def test_a_custom_message_needs_a_subject_and_a_text(signed_in, world):
    jane = world.client_a
    response = signed_in.post(f"/clients/{jane.id}/emails", data={"kind": "free_text", "subject": " "})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert html.count("Required for a custom message.") == 2
    assert '<option selected value="free_text">' in html or 'value="free_text" selected' in html
    response = signed_in.post(f"/clients/{jane.id}/emails", data={"kind": "nonsense"})
    assert response.status_code == 422 and "Not a valid choice" in response.get_data(as_text=True)
    assert emails_of(jane) == [] and len(get_queue()) == 0

    response = signed_in.post(
        f"/clients/{jane.id}/emails",
        data={"kind": "free_text", "subject": "Parking", "body": "Use the back door"},
    )
    assert response.status_code == 303
    (email,) = emails_of(jane)
    assert (email.kind, email.subject) == ("free_text", "Parking")
    assert email.body.startswith("Use the back door\n")  # the clinician's words, then the clinic's footer
    assert '<span class="log-kind">Custom message</span>' in signed_in.get(f"/clients/{jane.id}").get_data(
        as_text=True
    )


def test_sending_to_an_address_on_the_spam_list_is_refused_before_anything_is_queued(signed_in, app, world):
    jane = world.client_a
    add_email(jane, events=[*DELIVERED, (60, "spamreport", {})])

    response = signed_in.post(f"/clients/{jane.id}/emails", data={"kind": "appointment_reminder"})
    assert response.status_code == 422
    words = text(response.get_data(as_text=True))
    assert (
        f"Not sent: {jane.email} is on the spam list: the client reported an earlier email as spam." in words
    )
    assert (
        f"Only Jane Doe can lift this, by emailing {app.config['SUPPORT_ADDRESS']} from {jane.email}" in words
    )
    assert len(emails_of(jane)) == 1 and len(get_queue()) == 0


def test_a_failed_email_is_resent_after_a_confirmation_to_a_corrected_address(signed_in, world):
    jane = world.client_a
    failed = add_email(
        jane, subject="Intake form", kind="intake_form", to_address="jane@typo.example", events=BOUNCED
    )
    page = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert f'action="/emails/{failed.id}/resend"' in row_html(page, failed)

    confirm = signed_in.post(f"/emails/{failed.id}/resend")
    assert confirm.status_code == 200
    html = confirm.get_data(as_text=True)
    assert "Resend “Intake form”?" in html and "jane@typo.example" in html
    assert re.search(r'<input[^>]*id="to_address"[^>]*value="jane.doe\+delivered@example.com"', html)
    assert re.search(r'<input[^>]*checked[^>]*name="update_client"|name="update_client"[^>]*checked', html)
    assert emails_of(jane) == [failed]  # nothing sent before the confirmation

    done = signed_in.post(
        f"/emails/{failed.id}/resend",
        data={"confirm": "yes", "to_address": "jane.new@example.com", "update_client": "y"},
    )
    assert done.status_code == 303
    _, resent = emails_of(jane)
    assert (resent.to_address, resent.subject, resent.kind) == (
        "jane.new@example.com",
        "Intake form",
        "intake_form",
    )
    assert resent.resend_of_id == failed.id
    db.session.refresh(jane)
    assert jane.email == "jane.new@example.com"
    assert len(get_queue()) == 1

    page = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    opened = timeline_html(signed_in, resent)
    timeline = text(opened)
    assert "Resend of the email of" in timeline and "to jane@typo.example, which failed." in timeline
    # The original's row on the client file (the log may be filtered to hide it: the link unfilters).
    assert f'href="/clients/{jane.id}#email-{failed.id}"' in opened
    assert "Resending “Intake form” to jane.new@example.com." in page
    # The failed email now says it was resent, and offers no second resend.
    assert f'action="/emails/{failed.id}/resend"' not in row_html(page, failed)
    assert "to jane.new@example.com" in text(row_html(page, failed))


def test_a_resend_can_leave_the_client_file_alone(signed_in, world):
    jane = world.client_a
    failed = add_email(jane, events=BOUNCED)
    signed_in.post(f"/emails/{failed.id}/resend", data={"confirm": "yes", "to_address": "jane@work.example"})
    db.session.refresh(jane)
    assert jane.email == "jane.doe+delivered@example.com"
    assert emails_of(jane)[-1].to_address == "jane@work.example"


def test_a_resend_is_refused_with_the_reason_when_it_cannot_go(signed_in, app, world):
    jane = world.client_a
    failed = add_email(jane, events=BOUNCED)
    delivered = add_email(jane, events=[(5, "processed", {})])  # on its way: nothing to resend

    bad = signed_in.post(
        f"/emails/{failed.id}/resend", data={"confirm": "yes", "to_address": "not an address"}
    )
    assert bad.status_code == 422 and "Invalid email address" in bad.get_data(as_text=True)

    add_to_spam_list("blocked@example.com", utcnow(), None, "webhook")
    db.session.commit()
    refused = signed_in.post(
        f"/emails/{failed.id}/resend",
        data={"confirm": "yes", "to_address": "blocked@example.com", "update_client": "y"},
    )
    assert refused.status_code == 422
    words = text(refused.get_data(as_text=True))
    assert "Not sent: blocked@example.com is blocked: our email provider does not deliver to it" in words
    assert f"by emailing {app.config['SUPPORT_ADDRESS']} from blocked@example.com" in words
    db.session.refresh(jane)
    assert jane.email == "jane.doe+delivered@example.com"  # the corrected address was not kept

    assert signed_in.post(f"/emails/{delivered.id}/resend").status_code == 303
    assert "Only a failed email, or a delivered one the client cannot find, can be resent." in signed_in.get(
        f"/clients/{jane.id}"
    ).get_data(as_text=True)
    assert len(emails_of(jane)) == 2 and len(get_queue()) == 0
    assert f'action="/emails/{delivered.id}/resend"' not in signed_in.get(f"/clients/{jane.id}").get_data(
        as_text=True
    )


def test_another_clinics_email_cannot_be_resent(signed_in, world):
    theirs = add_email(world.client_b, events=BOUNCED)
    assert (
        signed_in.post(
            f"/emails/{theirs.id}/resend", data={"confirm": "yes", "to_address": "x@example.com"}
        ).status_code
        == 404
    )
    assert len(get_queue()) == 0


# --- 8. Escaping -------------------------------------------------------------------------------


def assert_escaped(html: str) -> None:
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_provider_and_user_text_is_shown_as_text(signed_in, world):
    jane = world.client_a
    jane.name = XSS
    db.session.commit()
    add_email(
        jane,
        subject=XSS,
        events=[
            *DELIVERED,
            (30, "deferred", {"attempt": 1, "reason": XSS}),
            (40, "click", {"url": "https://x.example/" + XSS}),
            (50, "bounce", {"reason": XSS}),
        ],
    )
    failed = add_email(jane, subject=XSS, to_address=XSS, events=[(5, "dropped", {"reason": XSS})])

    for html in (
        signed_in.get(f"/clients/{jane.id}").get_data(as_text=True),
        htmx_get(signed_in, f"/clients/{jane.id}/emails").get_data(as_text=True),
        signed_in.get("/clients").get_data(as_text=True),
        signed_in.get("/clients?q=script", headers={"HX-Request": "true"}).get_data(as_text=True),
        signed_in.post(f"/emails/{failed.id}/resend").get_data(as_text=True),
    ):
        assert_escaped(html)
    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_typed_subject_and_the_flash_that_repeats_it_are_escaped(signed_in, world):
    jane = world.client_a
    response = signed_in.post(
        f"/clients/{jane.id}/emails",
        data={"kind": "free_text", "subject": XSS, "body": XSS},
        follow_redirects=True,
    )
    html = response.get_data(as_text=True)
    assert_escaped(html)
    assert (
        "Sending “&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;”" in html
    )


def test_a_spam_banner_escapes_the_reported_subject(signed_in, world):
    jane = world.client_a
    add_email(jane, subject=XSS, events=[*DELIVERED, (60, "spamreport", {})])
    html = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    banner = html[html.index('class="banner banner-danger"') : html.index('id="email-log"')]
    assert_escaped(banner)


def test_the_client_file_still_opens_when_redis_is_away(signed_in, app, world, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    def unreachable(*args, **kwargs):
        raise RedisConnectionError("Redis is away")

    monkeypatch.setattr(app.extensions["redis"], "get", unreachable)
    monkeypatch.setattr(app.extensions["redis"], "incr", unreachable)
    page = signed_in.get(f"/clients/{world.client_a.id}")
    assert page.status_code == 200
    assert "Email log" in page.get_data(as_text=True)


def test_a_second_confirmation_does_not_resend_twice(signed_in, world):
    jane = world.client_a
    failed = add_email(
        jane, subject="Intake form", kind="intake_form", to_address="jane@typo.example", events=BOUNCED
    )
    data = {"confirm": "yes", "to_address": "jane.new@example.com"}
    assert signed_in.post(f"/emails/{failed.id}/resend", data=data).status_code == 303
    again = signed_in.post(f"/emails/{failed.id}/resend", data=data)
    assert again.status_code == 422
    assert "already been resent" in again.get_data(as_text=True)
    assert len(emails_of(jane)) == 2
