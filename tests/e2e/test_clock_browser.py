"""Issue 18, the clock, in a real browser: an appointment typed in a clinic whose zone rules changed
recently (America/Vancouver keeps UTC-7 all year from November 2026, IANA 2026f) comes back as
typed, with the same zone label, in the log, the timeline, the help panel, Needs attention, the CSV,
the printable page and the email the provider received, whatever zone the browser is in."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

from playwright.sync_api import Browser, expect

from tests.e2e.helpers import (
    CLINICIAN,
    RECORD_CSP_VIOLATIONS,
    LiveServer,
    PageProblems,
    attach_problem_listeners,
    sign_in,
)
from tests.helpers import PASSWORD, FakeClock, run_jobs

# Now, for the app and the sandbox: Tuesday 8 December 2026, 15:05 in Vancouver.
SENT_AT = datetime(2026, 12, 8, 22, 5, tzinfo=UTC)
ADDRESS = "ada.lovelace+bounced@example.com"  # the sandbox bounces it: the reminder fails
SENT = "08 Dec 15:05 MST"
APPOINTMENT = "Wed 9 Dec 2026 at 10:00 MST"
APPOINTMENT_UTC = "2026-12-09T17:00:00+00:00"


def seed_vancouver_clinic(live: LiveServer) -> int:
    """A clinic in Vancouver with a clinician and one client; return the client's id."""
    from webapp.extensions import db
    from webapp.models import Client, Clinic
    from webapp.services import accounts

    def work() -> int:
        clinic = Clinic(name="Harbour Physio", timezone="America/Vancouver")
        db.session.add(clinic)
        db.session.flush()
        accounts.create_user(CLINICIAN, "Cleo Clinician", "clinician", PASSWORD, clinic)
        ada = Client(clinic_id=clinic.id, name="Ada Lovelace", email=ADDRESS, phone="+1 555 0199")
        db.session.add(ada)
        db.session.commit()
        return ada.id

    return live.run(work)


def send_and_hear_back(live: LiveServer, clock: FakeClock, client_id: int) -> tuple[int, str]:
    """The worker sends what was queued; a minute on, the poller asks the provider, which reports
    the bounce. Return the email's id and its stored appointment time."""
    import sqlalchemy as sa

    from webapp.extensions import db
    from webapp.models import Email, utcnow
    from webapp.services.polling import poll_due

    run_jobs(live.app)
    clock.advance(60)

    def poll() -> tuple[int, str]:
        email = db.session.execute(sa.select(Email).where(Email.client_id == client_id)).scalar_one()
        email.next_poll_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
        poll_due()
        db.session.refresh(email)
        assert email.status == "failed", email.status
        return email.id, email.appointment_at.isoformat()

    return live.run(poll)


def text_the_provider_received(live: LiveServer) -> str:
    """The body the sandbox provider was handed for the client's address."""
    from webapp.providers import get_sandbox

    (message,) = get_sandbox(live.app.config).store.messages_where("to_email = ?", [ADDRESS])
    return message.text


def test_an_appointment_typed_in_vancouver_reads_the_same_everywhere(
    app_clock: FakeClock, live_server: LiveServer, browser: Browser, problems: PageProblems
):
    app_clock.now = SENT_AT.timestamp()
    client_id = seed_vancouver_clinic(live_server)
    # A browser in another zone (with its own zone data): it must not change what the page says.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo")
    context.set_default_timeout(10_000)
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    attach_problem_listeners(page, problems)
    try:
        sign_in(page, live_server.url)
        page.goto(f"{live_server.url}/clients/{client_id}")
        form = page.locator("#send-email")
        form.get_by_label("Kind of message").select_option(label="Appointment reminder")
        form.get_by_label("Appointment").fill("2026-12-09T10:00")
        form.get_by_role("button", name="Send email").click()
        expect(page.get_by_text("Sending “Appointment reminder”")).to_be_visible()

        email_id, stored = send_and_hear_back(live_server, app_clock, client_id)
        assert stored == APPOINTMENT_UTC  # 10:00 in Vancouver is 17:00 UTC (UTC-7)

        # The log row, once the refresh brings the failure.
        row = page.locator(f"#email-{email_id}")
        expect(page.locator(f"#badge-{email_id}")).to_have_text(re.compile("^Failed"), timeout=5_000)
        expect(row.locator(".log-date")).to_have_text(SENT)
        expect(row.locator(".log-appointment")).to_have_text(f"for the appointment {APPOINTMENT}")
        expect(row.locator(".log-appointment time")).to_have_attribute("datetime", APPOINTMENT_UTC)

        # The timeline: each event at the time the row gives.
        row.locator(f"#toggle-{email_id}").click()
        timeline = page.locator(f"#timeline-{email_id}")
        expect(timeline).to_contain_text("Queued for sending")
        times = timeline.locator(".event-time").all_inner_texts()
        assert times and set(times) == {SENT.split(" ", 2)[2]}, times

        # The help panel names the email's send time and its appointment.
        page.locator(f"#badge-{email_id}").click()
        panel = page.locator("#help-panel")
        expect(panel).to_contain_text(f"sent {SENT} to {ADDRESS}, for the appointment {APPOINTMENT}")

        # The timeline's own page (what the row links to without JavaScript).
        page.goto(f"{live_server.url}/emails/{email_id}/timeline")
        expect(page.locator("main")).to_contain_text(
            f"Sent {SENT} to {ADDRESS}, for the appointment {APPOINTMENT}"
        )

        # Needs attention: call the client about the appointment.
        page.goto(f"{live_server.url}/attention")
        item = page.locator(f"#attention-appointment-{email_id}")
        expect(item.get_by_role("heading")).to_have_text(
            f"Call the client Ada Lovelace: appointment {APPOINTMENT}"
        )

        # The CSV, for the clinic's today.
        page.goto(f"{live_server.url}/clients/{client_id}/export")
        expect(page.get_by_label("Last day")).to_have_value("2026-12-08")
        expect(
            page.get_by_text("Days and times are the clinic's, in America/Vancouver time.")
        ).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        with open(download.value.path(), encoding="utf-8") as saved:
            rows = list(csv.reader(io.StringIO(saved.read())))
        header = rows[7]
        (line,) = [dict(zip(header, row, strict=True)) for row in rows[8:]]
        assert line["Created"] == "2026-12-08 15:05:00 MST"
        assert line["Appointment"] == "2026-12-09 10:00:00 MST"
        assert line["Timeline"].startswith("2026-12-08 15:05:00 MST Queued for sending")

        # The printable page.
        page.get_by_role("button", name="Printable page").click()
        page.wait_for_url("**/export/print?**")
        export = page.locator(".export-email")
        expect(export.get_by_role("heading")).to_have_text(
            "Tue 8 Dec 2026 at 15:05 MST · Appointment reminder"
        )
        expect(export).to_contain_text(f"for the appointment {APPOINTMENT}")

        # The email itself, as the provider received it.
        assert "appointment at Harbour Physio on Wednesday 9 December 2026 at 10:00 MST." in (
            text_the_provider_received(live_server)
        )
        problems.assert_clean(page)
    finally:
        context.close()
