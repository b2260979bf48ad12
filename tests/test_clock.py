"""One clock (issue 18, items 1 and 2): zone rules come only from the pinned tzdata package; the
server formats every time shown, labelled with its zone; every "day" is the clinic's day; support
and operator pages show UTC, labelled once."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import re
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import tzdata

from tests.helpers import BOUNCED, DELIVERED, add_email, login, row_html, text
from webapp import timezones
from webapp.extensions import db
from webapp.models import Email
from webapp.services import deliverability, sending

ROOT = Path(__file__).resolve().parents[1]
# IANA 2026f (tzdata 2026.6): British Columbia keeps UTC-7 all year from November 2026, which the
# operating system's older copy (IANA 2025b here) does not know: it says UTC-8 (PST).
APPOINTMENT = datetime(2026, 12, 9, 10, 0)
APPOINTMENT_UTC = datetime(2026, 12, 9, 17, 0, tzinfo=UTC)


def use_zone(world, name: str) -> None:
    world.clinic_a.timezone = name
    db.session.commit()


# --- Item 1: one source of zone rules -----------------------------------------------------------


def test_the_pinned_tzdata_package_is_the_one_installed_and_the_one_read():
    pinned = re.search(r"^tzdata==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and importlib.metadata.version("tzdata") == pinned.group(1)
    assert timezones.RULES_VERSION == tzdata.IANA_VERSION == "2026f"
    # The process never looks in the system's zone files, so a ZoneInfo made anywhere agrees.
    assert zoneinfo.TZPATH == ()
    assert (
        datetime(2026, 12, 9, 10, tzinfo=zoneinfo.ZoneInfo("America/Vancouver"))
        .isoformat()
        .endswith("-07:00")
    )


def test_vancouver_in_december_2026_is_utc_minus_7_whatever_the_system_copy_says():
    assert timezones.to_utc(APPOINTMENT, "America/Vancouver") == APPOINTMENT_UTC
    here = timezones.local(APPOINTMENT_UTC, "America/Vancouver")
    assert here.isoformat() == "2026-12-09T10:00:00-07:00" and timezones.label(here) == "MST"
    # Even were zoneinfo pointed back at the system's files, the app still reads the package.
    try:
        zoneinfo.reset_tzpath()  # the default: /usr/share/zoneinfo and friends first
        zoneinfo.ZoneInfo.clear_cache()
        timezones.zone.cache_clear()
        assert timezones.to_utc(APPOINTMENT, "America/Vancouver") == APPOINTMENT_UTC
        assert timezones.local(APPOINTMENT_UTC, "America/Vancouver").utcoffset() == timedelta(hours=-7)
    finally:
        zoneinfo.reset_tzpath(to=[])
        zoneinfo.ZoneInfo.clear_cache()
        timezones.zone.cache_clear()


def test_names_outside_the_package_are_neither_offered_nor_read():
    assert "America/Vancouver" in timezones.choices() and "UTC" in timezones.choices()
    for name in ("../../../etc/passwd", "Mars/Olympus", "", "posixrules"):
        assert not timezones.is_valid(name)
        assert timezones.zone(name).key == "UTC"


def test_one_formatter_labels_every_time_with_its_zone():
    here = timezones.local(APPOINTMENT_UTC, "America/Vancouver")
    assert timezones.format_time(here) == "10:00 MST"
    assert timezones.format_datetime(here) == "09 Dec 10:00 MST"
    assert timezones.format_full(here) == "Wed 9 Dec 2026 at 10:00 MST"
    assert timezones.format_spoken(here) == "Wednesday 9 December 2026 at 10:00 MST"
    assert timezones.format_record(here) == "2026-12-09 10:00:00 MST"
    # A zone IANA names only by its offset is labelled as one, never as a bare "-03".
    assert timezones.format_time(timezones.local(APPOINTMENT_UTC, "America/Sao_Paulo")) == "14:00 UTC-03"
    assert timezones.format_time(timezones.local(APPOINTMENT_UTC, "Asia/Kathmandu")) == "22:45 UTC+05:45"
    assert timezones.format_time(timezones.local(APPOINTMENT_UTC, "UTC")) == "17:00 UTC"


def test_a_time_the_clocks_jump_over_does_not_exist():
    assert not timezones.exists(datetime(2026, 3, 8, 2, 30), "America/Vancouver")
    assert timezones.exists(datetime(2026, 3, 8, 3, 30), "America/Vancouver")
    assert timezones.exists(APPOINTMENT, "America/Vancouver")


def test_a_typed_appointment_comes_back_as_typed_on_the_page_and_in_the_email(app, world, client, app_clock):
    app_clock.now = datetime(2026, 12, 7, 20, 0, tzinfo=UTC).timestamp()
    use_zone(world, "America/Vancouver")
    login(client, "clinician@a.example")
    jane = world.client_a
    response = client.post(
        f"/clients/{jane.id}/emails", data={"kind": "appointment_reminder", "appointment": "2026-12-09T10:00"}
    )
    assert response.status_code == 303
    email = db.session.query(Email).filter_by(client_id=jane.id).one()
    assert email.appointment_at == APPOINTMENT_UTC
    assert "on Wednesday 9 December 2026 at 10:00 MST." in email.body
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert "for the appointment Wed 9 Dec 2026 at 10:00 MST" in text(row_html(page, email))


# --- Item 2: every time labelled, every day the clinic's ------------------------------------------


def time_texts(html: str) -> list[str]:
    """The text of every <time> a page shows, but the relative ones ("5 min ago")."""
    return [
        text(inner)
        for attributes, inner in re.findall(r"<time([^>]*)>(.*?)</time>", html, re.S)
        if "data-relative" not in attributes
    ]


def test_every_time_on_the_clinics_pages_is_labelled_with_the_clinics_zone(app, world, client, app_clock):
    app_clock.now = datetime(2026, 12, 7, 20, 0, tzinfo=UTC).timestamp()
    use_zone(world, "America/Vancouver")
    jane = world.client_a
    failed = add_email(jane, sent_at=datetime(2026, 12, 7, 18, 5, tzinfo=UTC), events=BOUNCED)
    failed.appointment_at = APPOINTMENT_UTC
    db.session.commit()
    login(client, "clinician@a.example")
    pages = {
        "file": client.get(f"/clients/{jane.id}").get_data(as_text=True),
        "attention": client.get("/attention").get_data(as_text=True),
        "timeline": client.get(f"/emails/{failed.id}/timeline").get_data(as_text=True),
        "help": client.get(f"/help/statuses/failed?email={failed.id}").get_data(as_text=True),
    }
    for name, html in pages.items():
        shown = time_texts(html)
        assert shown, name
        assert all(re.search(r"\d\d:\d\d MST$", when) for when in shown), (name, shown)
        # The server's text is final: no script re-reads it with the browser's zone data.
        assert "data-local" not in html and "data-timezone" not in html, name
        assert "Wed 9 Dec 2026 at 10:00 MST" in shown, name
    assert "07 Dec 11:05 MST" in time_texts(pages["file"])  # sent at 18:05 UTC
    script = (ROOT / "static/js/app.js").read_text()
    assert "toLocaleString" not in script and "data-local" not in script


def test_support_and_operator_pages_show_utc_labelled_once(app, world, client, app_clock):
    app_clock.now = datetime(2026, 12, 7, 20, 0, tzinfo=UTC).timestamp()
    use_zone(world, "America/Vancouver")
    email = add_email(world.client_a, sent_at=datetime(2026, 12, 7, 18, 5, tzinfo=UTC), events=DELIVERED)
    sending.alert_operators("email_stuck", "Stuck: a test alert", email)
    db.session.commit()
    login(client, "support@platform.example")
    operations = client.get("/support/operations").get_data(as_text=True)
    assert "UTC UTC" not in text(operations)
    assert "Read at 07 Dec 20:00 UTC" in text(operations)
    support_email = client.get(f"/support/emails/{email.id}").get_data(as_text=True)
    for html in (operations, support_email, client.get("/support/removal-requests").get_data(as_text=True)):
        shown = time_texts(html)
        assert all(re.search(r"\d\d:\d\d UTC$", when) for when in shown), shown
        assert "data-local" not in html
    assert "07 Dec 18:05 UTC" in time_texts(support_email)


def test_the_export_page_says_the_clinics_zone_and_its_today_is_the_clinics(app, world, client, app_clock):
    # 20:00 UTC on 7 December is 09:00 on 8 December in Auckland (UTC+13 in summer).
    app_clock.now = datetime(2026, 12, 7, 20, 0, tzinfo=UTC).timestamp()
    use_zone(world, "Pacific/Auckland")
    jane = world.client_a
    add_email(
        jane, sent_at=datetime(2026, 12, 7, 19, 30, tzinfo=UTC), subject="This morning's", events=DELIVERED
    )
    login(client, "clinician@a.example")
    form = client.get(f"/clients/{jane.id}/export").get_data(as_text=True)
    assert "in UTC" not in form and "Days and times are the clinic's, in Pacific/Auckland time." in form
    assert 'name="to" value="2026-12-08"' in form
    response = client.get(f"/clients/{jane.id}/export/csv?from=2026-12-08&to=2026-12-08")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    body = [dict(zip(rows[7], row, strict=True)) for row in rows[8:]]
    assert [(row["Subject"], row["Created"]) for row in body] == [
        ("This morning's", "2026-12-08 08:30:00 NZDT")
    ]
    assert client.get(f"/clients/{jane.id}/export/csv?from=2026-12-09&to=2026-12-09").status_code == 400


def test_the_owners_chart_counts_the_clinics_days(app, world, client, app_clock):
    now = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)  # 8 Dec 09:00 in Auckland
    app_clock.now = now.timestamp()
    use_zone(world, "Pacific/Auckland")
    jane = world.client_a
    add_email(jane, sent_at=datetime(2026, 12, 7, 11, 30, tzinfo=UTC), events=DELIVERED)  # 8 Dec 00:30
    add_email(jane, sent_at=datetime(2026, 12, 7, 10, 30, tzinfo=UTC), events=DELIVERED)  # 7 Dec 23:30
    # 30 days back from 8 Dec begins on 9 Nov at midnight in Auckland, 11:00 UTC on 8 Nov.
    add_email(jane, sent_at=datetime(2026, 11, 8, 11, 30, tzinfo=UTC), events=DELIVERED)  # 9 Nov 00:30
    add_email(jane, sent_at=datetime(2026, 11, 8, 10, 30, tzinfo=UTC), events=DELIVERED)  # 8 Nov 23:30
    overview = deliverability.overview(world.clinic_a.id, now, "Pacific/Auckland")
    assert overview.days[-1] == date(2026, 12, 8) and overview.days[0] == date(2026, 11, 9)
    assert sum(overview.daily[date(2026, 12, 8)].values()) == 1
    assert sum(overview.daily[date(2026, 12, 7)].values()) == 1
    assert sum(overview.daily[date(2026, 11, 9)].values()) == 1
    assert overview.current.total == 3 and overview.previous.total == 1

    login(client, "owner@a.example")
    page = text(client.get("/clinic/deliverability").get_data(as_text=True))
    assert "UTC days" not in page
    assert "(09 Nov to 08 Dec 2026, days of the clinic's calendar in Pacific/Auckland time)" in page
    assert "Emails per day by status (days in Pacific/Auckland time)" in page


def test_audit_sentences_name_times_in_the_clinics_zone(app, world, client, app_clock):
    app_clock.now = datetime(2026, 12, 7, 20, 0, tzinfo=UTC).timestamp()
    use_zone(world, "America/Vancouver")
    failed = add_email(world.client_a, sent_at=datetime(2026, 12, 7, 18, 5, tzinfo=UTC), events=BOUNCED)
    sending.resend(
        failed, to_address="jane.new@example.com", update_client=False, by=world.users["clinician"]
    )
    login(client, "owner@a.example")
    trail = text(client.get("/clinic/audit").get_data(as_text=True))
    assert "resend of the email of 07 Dec 2026 11:05 MST" in trail
    assert " UTC" not in trail
    # A clinic that moves changes how its trail reads, not what was recorded.
    use_zone(world, "Europe/Paris")
    trail = text(client.get("/clinic/audit").get_data(as_text=True))
    assert "resend of the email of 07 Dec 2026 19:05 CET" in trail


def test_a_kept_sentence_names_utc_and_reads_in_the_readers_zone():
    stamp = timezones.utc_stamp(datetime(2026, 12, 7, 11, 5, tzinfo=timezones.zone("America/Vancouver")))
    assert stamp == "07 Dec 2026 18:05 UTC"
    assert timezones.restamp(f"since {stamp}.", "Asia/Tokyo") == "since 08 Dec 2026 03:05 JST."
    assert timezones.restamp(f"since {stamp}.", "UTC") == f"since {stamp}."
    assert timezones.restamp("at 99 Dec 2026 18:05 UTC", "Asia/Tokyo") == "at 99 Dec 2026 18:05 UTC"


@pytest.mark.parametrize("zone", ["UTC", "America/Vancouver", "Pacific/Chatham"])
def test_day_boundaries_are_the_zones_midnights(zone):
    starts = timezones.day_starts(date(2026, 12, 8), 2, zone)
    assert [timezones.local(start, zone).strftime("%d %H:%M") for start in starts] == [
        "08 00:00",
        "09 00:00",
        "10 00:00",
    ]
