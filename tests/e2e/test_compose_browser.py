"""Composing each kind of email in a real browser: the send form filled as a clinician would (the
appointment and practitioner, receipt lines added with "Add a line", a custom message with hostile
words), previewed (subject, the HTML part in its sandboxed frame, the text part), sent, handed to
the provider, and opened from the log's row as "View the email as sent", where the same facts,
the clinic's Reply-To and the reminder's calendar file show. axe-core finds nothing on the form
with its preview or on the copy, at 1280 and 375 px, and neither page (nor the email inside its
frame, a long pasted address in it) scrolls sideways. One signed-in page serves every kind."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from urllib.parse import urljoin

import icalendar
import pytest
from playwright.sync_api import Frame, Page, expect

from tests.e2e.helpers import LiveServer, axe_violations, seed_clinic, sign_in

ZONE = "America/Vancouver"
CLINIC_NAME = 'Harbour & "Bay" Physio'
REPLY_TO = "front.desk@harbourphysio.example"
PHONE = "+1 604 555 0142"
INTAKE = "https://harbourphysio.example/intake"
HOSTILE = "<img src=x onerror=alert(1)>"
# A long unbroken word, as a pasted address is: the email must still fit a phone's width.
LONG_WORD = "https://harbourphysio.example/parking/instructions-for-the-back-door-entrance-on-harbour-street"
NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
WIDTHS = (1280, 375)


@dataclass
class Kind:
    """One kind as the clinician composes it, and what its email must say."""

    kind: str
    subject: str
    facts: list[str]  # in the framed HTML part and the text part alike
    fields: dict[str, str] = field(default_factory=dict)  # selector -> value
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # receipt lines


def set_identity(live: LiveServer) -> None:
    """The owner has set the clinic's identity: every email carries it."""
    from webapp.extensions import db
    from webapp.models import Clinic

    def work() -> None:
        clinic = db.session.execute(db.select(Clinic)).scalar_one()
        clinic.name = CLINIC_NAME
        clinic.timezone = ZONE
        clinic.reply_to_address = REPLY_TO
        clinic.phone = PHONE
        clinic.postal_address = "1200 Harbour Street\nVancouver, BC V6B 1A1"
        clinic.brand_colour = "#0f766e"
        clinic.intake_form_url = INTAKE
        db.session.commit()

    live.run(work)


def hand_over(live: LiveServer, client_id: int) -> int:
    """Let a worker hand the queued email to the provider (the sandbox); return the newest email's id."""
    from webapp.extensions import db
    from webapp.models import Email
    from webapp.services import handover

    def work() -> int:
        handover.deliver_due()
        return db.session.execute(
            db.select(Email.id).where(Email.client_id == client_id).order_by(Email.id.desc()).limit(1)
        ).scalar_one()

    return live.run(work)


def appointment() -> tuple[str, str]:
    """A time 40 days ahead, 15:00 in the clinic's zone: as typed, and as the email says it."""
    from webapp import timezones

    day = (datetime.now(timezones.zone(ZONE)) + timedelta(days=40)).date()
    spoken = timezones.format_spoken(datetime.combine(day, time(15, 0), timezones.zone(ZONE)))
    assert re.search(r" at 15:00 [A-Z]{3,4}$", spoken), spoken  # with its zone's label
    return f"{day.isoformat()}T15:00", spoken


def kinds() -> list[Kind]:
    typed, spoken = appointment()
    return [
        Kind(
            "appointment_reminder",
            "Appointment reminder",
            [spoken, "Dr Maya Lee", "1200 Harbour Street", PHONE, CLINIC_NAME],
            {"#appointment": typed, "#practitioner": "Dr Maya Lee", "#minutes": "45"},
        ),
        Kind(
            "intake_form",
            "Your intake form",
            [spoken, "Dr Maya Lee", "intake form", CLINIC_NAME],
            {"#appointment": typed, "#practitioner": "Dr Maya Lee"},
        ),
        Kind(
            "receipt",
            "Your receipt",
            ["Massage therapy", "110.00", "Exercise band", "12.50", "Total", "122.50"],
            lines=[("Massage therapy", "2026-12-01", "110"), ("Exercise band", "2026-12-02", "12.5")],
        ),
        Kind(
            "free_text",
            f"Parking {HOSTILE}",
            [HOSTILE, LONG_WORD, CLINIC_NAME],
            {
                "#subject": f"Parking {HOSTILE}",
                "#body": f"Hi Jane,\nUse the back door: {LONG_WORD}\n{HOSTILE}",
            },
        ),
    ]


def html_frame(page: Page, path_part: str) -> Frame:
    return next(child for child in page.frames if path_part in child.url)


def check_framed(page: Page, selector: str, path_part: str, want: Kind) -> None:
    """The HTML part in its frame: the facts, nothing that ran or loaded, no sideways scroll."""
    frame = page.frame_locator(selector)
    body = frame.locator("body")
    for fact in want.facts:
        expect(body).to_contain_text(fact)
    expect(frame.locator("img")).to_have_count(0)  # the hostile <img> is words, not an image
    if want.kind == "intake_form":
        expect(frame.get_by_role("link", name="Fill in the intake form")).to_have_attribute("href", INTAKE)
    assert html_frame(page, path_part).evaluate(NO_SIDEWAYS_SCROLL), want.kind


def check_both_widths(page: Page, framed_part: str, want: Kind) -> None:
    """The page's (and the email's) width at desktop and phone size, and axe-core: at both for the
    first kind, at the phone's for the others (a run costs a second; the pages differ by kind only
    in the fields and facts shown, the same at either width)."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate(NO_SIDEWAYS_SCROLL), (want.kind, width, page.url)
        assert html_frame(page, framed_part).evaluate(NO_SIDEWAYS_SCROLL), (want.kind, width)
        if width == 375 or want.kind == "appointment_reminder":
            assert axe_violations(page) == "", (want.kind, width, page.url)
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def compose(page: Page, want: Kind) -> None:
    """Fill the send form for this kind, as a clinician would."""
    form = page.locator("#send-email form")
    form.locator("#kind").select_option(want.kind)
    for selector, value in want.fields.items():
        form.locator(selector).fill(value)
    if want.lines:
        # Previewed with no line, the form says what a receipt needs (a 422, swapped in place).
        with page.expect_response(lambda r: r.url.endswith("/emails/preview")) as answer:
            form.get_by_role("button", name="Preview").click()
        assert answer.value.status == 422
        expect(page.locator("#lines-error")).to_contain_text("at least one line")
        form = page.locator("#send-email form")
        first, second = want.lines
        for name, value in zip(("service", "day", "amount"), first, strict=True):
            form.locator(f"#lines-0-{name}").fill(value)
        form.get_by_role("button", name="Add a line").click()
        expect(form.locator("#lines-3-service")).to_be_visible()
        expect(form.locator("#lines-0-service")).to_have_value(first[0])  # what was typed is kept
        for name, value in zip(("service", "day", "amount"), second, strict=True):
            form.locator(f"#lines-3-{name}").fill(value)


def preview(page: Page, want: Kind) -> None:
    """Preview: the subject, the HTML part in the sandboxed frame, the text part; nothing sent."""
    with page.expect_response(lambda r: r.url.endswith("/emails/preview")) as answer:
        page.locator("#send-email").get_by_role("button", name="Preview").click()
    assert answer.value.status == 200, want.kind
    expect(page.locator("#preview-subject")).to_have_text(want.subject)
    expect(page.locator("#preview-status")).to_have_text("The preview is ready, below the form.")
    expect(page.locator(".preview-facts")).to_contain_text(REPLY_TO)
    text = page.locator("#preview-text")
    for fact in want.facts:
        expect(text).to_contain_text(fact)
    iframe = page.locator("iframe.preview-frame")
    expect(iframe).to_have_attribute("sandbox", "")
    check_framed(page, "iframe.preview-frame", "/emails/preview/", want)
    check_both_widths(page, "/emails/preview/", want)


def check_copy(page: Page, want: Kind, email_id: int) -> None:
    """The copy as sent, opened from the email's row in the log."""
    page.locator(f"#email-{email_id}").get_by_role("link", name="View the email as sent").click()
    page.wait_for_url(f"**/emails/{email_id}/as-sent")
    headers = page.locator(".as-sent-headers")
    expect(headers.locator("div", has=page.locator("dt", has_text="Subject")).locator("dd")).to_have_text(
        want.subject
    )
    expect(headers.locator("div", has=page.locator("dt", has_text="Reply-To")).locator("dd")).to_have_text(
        REPLY_TO
    )
    text = page.locator(".as-sent-text")
    for fact in want.facts:
        expect(text).to_contain_text(fact)
    check_framed(page, "iframe.as-sent-frame", "/as-sent.html", want)
    attachment = headers.locator("div", has=page.locator("dt", has_text="Attachment")).locator("dd")
    if want.kind == "appointment_reminder":
        link = attachment.get_by_role("link", name="appointment.ics")
        href = link.get_attribute("href")
        assert href == f"/emails/{email_id}/as-sent/appointment.ics"
        download = page.request.get(urljoin(page.url, href))
        assert download.ok and download.headers["content-type"].startswith("text/calendar")
        (event,) = icalendar.Calendar.from_ical(download.body()).events
        assert event["DTSTART"].params["TZID"] == ZONE
        assert event["DTSTART"].dt.strftime("%Y-%m-%dT%H:%M") == want.fields["#appointment"]
    else:
        expect(attachment).to_have_text("none")
    check_both_widths(page, "/as-sent.html", want)


def test_each_kind_is_composed_previewed_sent_and_seen_as_sent(live_server, page: Page, problems):
    seeded = seed_clinic(live_server)
    set_identity(live_server)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, live_server.url)
    client_file = f"{live_server.url}/clients/{seeded.client_id}"
    for want in kinds():
        page.goto(client_file)
        compose(page, want)
        preview(page, want)
        page.locator("#send-email").get_by_role("button", name="Send email").click()
        page.wait_for_url(client_file)
        expect(page.locator(".flash-success")).to_contain_text(f"Sending “{want.subject}”")
        email_id = hand_over(live_server, seeded.client_id)
        check_copy(page, want, email_id)
    assert dialogs == []
    problems.assert_clean(page, allow=("422",))


@pytest.mark.parametrize(
    "live_server_settings", [{"RATELIMIT_ENABLED": True, "PREVIEW_RATE_LIMIT": "1 per minute"}]
)
def test_a_preview_past_the_limit_says_in_place_how_long_to_wait(live_server, page: Page, problems):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    form = page.locator("#send-email form")
    form.locator("#kind").select_option("free_text")
    form.locator("#subject").fill("Parking")
    form.locator("#body").fill("Use the back door.")
    statuses = []
    for _ in range(2):
        with page.expect_response(lambda r: r.url.endswith("/emails/preview")) as answer:
            form.get_by_role("button", name="Preview").click()
        statuses.append(answer.value.status)
    assert statuses == [200, 429]
    alert = page.locator("#email-preview [role=alert]")
    expect(alert).to_contain_text("Too many previews in a short time: wait")
    expect(alert).to_contain_text("then press Preview again. Nothing was sent.")
    expect(form.locator("#subject")).to_have_value("Parking")  # the form stays as typed
    problems.assert_clean(page, allow=("429",))
