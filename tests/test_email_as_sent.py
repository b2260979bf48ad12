"""A copy of what was sent, and the clinic's identity behind it: "View the email as sent" (its page,
its HTML part under a policy that lets nothing run or load, its calendar file), who may see it, the
owner's settings for Reply-To, phone, postal address, brand colour and intake link (strictly read,
audited), and the export carrying the text part."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from html import unescape

import pytest
import sqlalchemy as sa

from tests.helpers import CLINICIAN, DELIVERED, add_email, login, row_html, scan, text
from webapp.email_frame import EMAIL_FRAME_POLICY
from webapp.extensions import db
from webapp.models import AuditEntry, Email, EmailContent
from webapp.security import CONTENT_SECURITY_POLICY
from webapp.services import sending

# Each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests")

OWNER = "owner@a.example"
BEYOND_64_BITS_ID = str(2**64 + 1)
HOSTILE_HTML = (
    '<!doctype html><html><head><meta http-equiv="refresh" content="0;url=https://evil.example/">'
    "<script>parent.document.title='owned'</script>"
    '<link rel="stylesheet" href="https://fonts.example/x.css"></head>'
    '<body style="background:url(https://track.example/bg.png)">'
    '<p style="color:#1f5fbf">Your appointment is on <b>Monday at 3 pm</b>.</p>'
    '<img src="https://track.example/open.gif" width="1" height="1" alt="">'
    '<a href="https://forms.example/intake">Fill in the form</a>'
    '<form action="https://evil.example/"><input name="q"></form></body></html>'
)
ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Clinic//EN\r\nBEGIN:VEVENT\r\nUID:e-1@clinic\r\n"
    "DTSTART;TZID=America/Vancouver:20261214T150000\r\nSUMMARY:Appointment\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
TEXT_PART = "Dear Jane,\n\n  Your appointment is on Monday at 3 pm.\n<b>not markup</b> & more\n-- \nClinic A"


def with_content(email: Email, html: str = HOSTILE_HTML, reply_to: str = "front@clinic-a.example", ics=ICS):
    """Give an email the content it was handed over with (as the compose step stores it, its From
    and To names too)."""
    email.body = TEXT_PART
    headers = sending.headers_for(email.client, email.clinic)
    db.session.add(
        EmailContent(email_id=email.id, body_html=html, reply_to=reply_to, calendar_ics=ics, **headers)
    )
    db.session.commit()
    db.session.expire(email)
    return email


@pytest.fixture
def sent(world):
    return with_content(add_email(world.client_a, events=DELIVERED, subject="Your appointment on Monday"))


@pytest.fixture
def plain(world):
    return add_email(world.client_a, events=DELIVERED, subject="A plain reminder")


def seen(html: str) -> str:
    """The words a reader sees, entities read."""
    return unescape(text(html))


def signed_in(app, email: str = CLINICIAN):
    client = app.test_client()
    login(client, email)
    return client


# --- The page ----------------------------------------------------------------------------------


def test_the_page_shows_the_headers_the_html_part_framed_and_the_text_part(app, sent):
    response = signed_in(app).get(f"/emails/{sent.id}/as-sent")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    words = seen(page)
    assert "Subject Your appointment on Monday" in words
    assert "From Clinic A <no-reply@clinicmail.example>" in words
    assert "To Jane Doe <jane.doe+delivered@example.com>" in words
    assert "rebuilt" not in words  # kept with the email: see tests/test_as_sent_headers.py
    assert "Reply-To front@clinic-a.example" in words
    assert re.search(r"Sent \d{2} \w{3} \d{2}:\d{2} UTC", words), words
    # The text part as sent: its line breaks and spaces kept, its markup shown as text.
    assert (
        '<pre class="as-sent-text">Dear Jane,\n\n  Your appointment is on Monday at 3 pm.\n'
        "&lt;b&gt;not markup&lt;/b&gt; &amp; more\n-- \nClinic A</pre>"
    ) in page
    # The HTML part only in a frame with every sandbox restriction, never inline in the page.
    frames = re.findall(r"<iframe[^>]*>", page)
    assert len(frames) == 1
    frame = frames[0]
    assert re.search(r"\ssandbox[\s>]", frame) and "allow-" not in frame, frame
    assert f'src="/emails/{sent.id}/as-sent.html"' in frame and 'referrerpolicy="no-referrer"' in frame
    assert 'title="The HTML part of “Your appointment on Monday”"' in frame
    assert "track.example" not in page and "parent.document" not in page
    assert f'href="/emails/{sent.id}/as-sent/appointment.ics"' in page and "appointment.ics" in words
    # The page itself is an ordinary page of the app: its strict policy, framed by nobody.
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert scan(page).problems == []


def test_the_html_part_is_served_as_sent_under_a_policy_that_lets_nothing_run_or_load(app, sent):
    response = signed_in(app).get(f"/emails/{sent.id}/as-sent.html")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.get_data(as_text=True) == HOSTILE_HTML  # exactly as handed to the provider
    headers = response.headers
    policy = headers["Content-Security-Policy"]
    assert policy == EMAIL_FRAME_POLICY
    directives = {part.split()[0]: part.split()[1:] for part in policy.split("; ")}
    assert directives["default-src"] == ["'none'"]  # no script, font, frame, connection or media
    assert directives["img-src"] == ["data:"]  # no remote image: no tracking pixel fires
    assert directives["style-src"] == ["'unsafe-inline'"]  # an email's inline CSS, nothing fetched
    assert directives["sandbox"] == []  # no allow-scripts, no allow-same-origin, no forms, no popups
    assert directives["frame-ancestors"] == ["'self'"] and directives["form-action"] == ["'none'"]
    assert "script-src" not in directives and "unsafe-eval" not in policy and "http" not in policy
    assert len(headers.getlist("Content-Security-Policy")) == 1
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert headers["Cache-Control"] == "no-store"


def test_the_other_pages_keep_the_apps_own_headers(app, sent):
    client = signed_in(app)
    client.get(f"/emails/{sent.id}/as-sent.html")
    for url in (f"/emails/{sent.id}/as-sent", f"/emails/{sent.id}/timeline", "/clients"):
        headers = client.get(url).headers
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url
        assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "same-origin", url


def test_the_calendar_entry_downloads_as_sent(app, sent):
    response = signed_in(app).get(f"/emails/{sent.id}/as-sent/appointment.ics")
    assert response.status_code == 200
    # No METHOD in this file, so none in its type.
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="appointment.ics"'
    assert response.get_data(as_text=True) == ICS
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_calendar_entry_downloads_in_utf_8_with_the_method_it_says(app, world):
    ics = ICS.replace("VERSION:2.0\r\n", "VERSION:2.0\r\nMETHOD:PUBLISH\r\n").replace(
        "SUMMARY:Appointment", "SUMMARY:Appointment at Clínica Søndre with Dr Siobhán Ó Súilleabháin"
    )
    email = with_content(add_email(world.client_a, events=DELIVERED), ics=ics)
    response = signed_in(app).get(f"/emails/{email.id}/as-sent/appointment.ics")
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8; method=PUBLISH"
    assert response.get_data() == ics.encode()


def test_a_text_only_email_says_so_and_shows_its_text(app, plain):
    client = signed_in(app)
    page = client.get(f"/emails/{plain.id}/as-sent").get_data(as_text=True)
    assert "sent as plain text only, with no HTML part" in seen(page)
    assert "<iframe" not in page and '<pre class="as-sent-text">Hello</pre>' in page
    assert "Reply-To none" in seen(page) and "Attachment none" in seen(page)
    assert client.get(f"/emails/{plain.id}/as-sent.html").status_code == 404
    assert client.get(f"/emails/{plain.id}/as-sent/appointment.ics").status_code == 404


def test_an_email_with_content_but_no_html_part_or_attachment_is_text_only(app, world):
    email = with_content(add_email(world.client_a, events=DELIVERED), html="", ics=None)
    client = signed_in(app)
    page = client.get(f"/emails/{email.id}/as-sent").get_data(as_text=True)
    assert "plain text only" in seen(page) and "Reply-To front@clinic-a.example" in seen(page)
    assert client.get(f"/emails/{email.id}/as-sent.html").status_code == 404
    assert client.get(f"/emails/{email.id}/as-sent/appointment.ics").status_code == 404


def test_an_email_still_being_handed_over_says_so(app, sent):
    sent.send_state = "queued"
    db.session.commit()
    page = signed_in(app).get(f"/emails/{sent.id}/as-sent").get_data(as_text=True)
    assert "still being handed to the email provider" in seen(page)


# --- Who may see it ----------------------------------------------------------------------------


def urls_of(email: Email) -> list[str]:
    return [
        f"/emails/{email.id}/as-sent",
        f"/emails/{email.id}/as-sent.html",
        f"/emails/{email.id}/as-sent/appointment.ics",
    ]


def test_the_clinics_own_staff_see_it_and_nobody_else(app, world, sent):
    for who in (CLINICIAN, OWNER):
        client = signed_in(app, who)
        assert [client.get(url).status_code for url in urls_of(sent)] == [200, 200, 200], who
    # Another clinic's staff, and support (as for the email's timeline page): not found.
    for who in ("clinician@b.example", "owner@b.example", "support@platform.example"):
        client = signed_in(app, who)
        for url in urls_of(sent):
            response = client.get(url)
            assert response.status_code == 404, (who, url)
            assert "track.example" not in response.get_data(as_text=True)
    anonymous = app.test_client()
    for url in urls_of(sent):
        response = anonymous.get(url)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), url


@pytest.mark.parametrize(
    "path",
    [
        f"/emails/{BEYOND_64_BITS_ID}/as-sent",
        f"/emails/{BEYOND_64_BITS_ID}/as-sent.html",
        "/emails/-1/as-sent",
        "/emails/1e3/as-sent",
        "/emails/%EF%BC%91/as-sent",  # a full-width digit
        "/emails/0/as-sent/appointment.ics",
        "/emails/999999/as-sent.html",
        "/emails/1/as-sent/other.ics",
    ],
)
def test_hostile_ids_are_not_found(app, world, path):
    assert signed_in(app).get(path).status_code == 404


def test_a_query_string_changes_nothing(app, sent):
    client = signed_in(app)
    response = client.get(f"/emails/{sent.id}/as-sent.html?url=https://evil.example&csp=none")
    assert response.status_code == 200 and response.headers["Content-Security-Policy"] == EMAIL_FRAME_POLICY
    assert client.get(f"/emails/{sent.id}/as-sent?id=%00&x=<script>").status_code == 200
    assert client.post(f"/emails/{sent.id}/as-sent").status_code == 405


# --- Where it is linked from -------------------------------------------------------------------


def test_each_log_row_and_the_timeline_page_link_to_it(app, world, sent, plain):
    client = signed_in(app)
    for _ in range(2):  # rendered, then from the row cache: the link is part of the kept row
        page = client.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
        for email in (sent, plain):
            row = row_html(page, email)
            assert f'<a class="log-copy" href="/emails/{email.id}/as-sent">View the email as sent' in row
    timeline = client.get(f"/emails/{sent.id}/timeline").get_data(as_text=True)
    assert f'<a href="/emails/{sent.id}/as-sent">View the email as sent</a>' in timeline


def test_the_row_cache_is_keyed_on_the_link(app, world, plain):
    from webapp.freshness import row_cache

    client = signed_in(app)
    client.get(f"/clients/{world.client_a.id}")
    kept = row_cache.rows(app)._rows
    assert kept and all("/emails/{}/as-sent" in key[1] for key in kept)


# --- The owner's settings ----------------------------------------------------------------------

GOOD = {
    "timezone": "America/Vancouver",
    "reply_to_address": "front.desk@clinic-a.example",
    "phone": "+1 604 555 0100 ext 12",
    "postal_address": "12 Harbour Road\r\n\r\n  Suite 4  \r\nVancouver BC V6B 1A1\r\n",
    "brand_colour": "#1F5FBF",
    "intake_form_url": "https://forms.clinic-a.example/intake?clinic=a#start",
}


def test_owners_set_the_clinics_identity_and_every_change_is_audited(app, world):
    owner = signed_in(app, OWNER)
    page = owner.get("/clinic/settings").get_data(as_text=True)
    words = seen(page)
    assert "The Reply-To of every email" in words and "Shown in the footer of every email" in words
    assert "The link in every intake-form email" in words and "header band and buttons" in words
    response = owner.post("/clinic/settings", data=GOOD)
    assert response.status_code == 303
    db.session.refresh(world.clinic_a)
    clinic = world.clinic_a
    assert clinic.reply_to_address == "front.desk@clinic-a.example"
    assert clinic.phone == "+1 604 555 0100 ext 12"
    assert clinic.postal_address == "12 Harbour Road\nSuite 4\nVancouver BC V6B 1A1"
    assert clinic.brand_colour == "#1f5fbf"
    assert clinic.intake_form_url == GOOD["intake_form_url"]
    details = set(
        db.session.execute(
            sa.select(AuditEntry.detail).where(AuditEntry.action == "clinic.identity")
        ).scalars()
    )
    assert details == {
        "Reply-to address: (none) → front.desk@clinic-a.example",
        "Phone: (none) → +1 604 555 0100 ext 12",
        "Postal address: (none) → 12 Harbour Road, Suite 4, Vancouver BC V6B 1A1",
        "Brand colour: (none) → #1f5fbf",
        f"Intake form link: (none) → {GOOD['intake_form_url']}",
    }
    # Saved again unchanged: nothing new in the trail; one part cleared: one line.
    assert owner.post("/clinic/settings", data=GOOD).status_code == 303
    assert owner.post("/clinic/settings", data={**GOOD, "phone": ""}).status_code == 303
    lines = db.session.execute(
        sa.select(AuditEntry.detail).where(AuditEntry.action == "clinic.identity")
    ).scalars()
    assert len(list(lines)) == 6
    trail = seen(owner.get("/clinic/audit").get_data(as_text=True))
    assert (
        "Changed the clinic's details in its emails" in trail
        and "Phone: +1 604 555 0100 ext 12 → (none)" in trail
    )
    page = owner.get("/clinic/settings").get_data(as_text=True)
    assert 'value="front.desk@clinic-a.example"' in page and "Saved colour: #1f5fbf" in seen(page)
    assert 'fill="#1f5fbf"' in page and scan(page).problems == []


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("brand_colour", "red;background:url(x)", "# and six hexadecimal digits"),
        ("brand_colour", "red", "# and six hexadecimal digits"),
        ("brand_colour", "#12345", "# and six hexadecimal digits"),
        ("brand_colour", "#1234567", "# and six hexadecimal digits"),
        ("brand_colour", "#12345g", "# and six hexadecimal digits"),
        ("brand_colour", "#123456;}", "# and six hexadecimal digits"),
        ("brand_colour", "rgb(1,2,3)", "# and six hexadecimal digits"),
        ("intake_form_url", "javascript:alert(1)", "must start with https://"),
        ("intake_form_url", "JaVaScRiPt:alert(1)//https://x.example", "must start with https://"),
        ("intake_form_url", "http://forms.example.com/intake", "must start with https://"),
        ("intake_form_url", "data:text/html,<script>x</script>", "as your browser shows it"),
        ("intake_form_url", "https://", "as your browser shows it"),
        ("intake_form_url", "https://localhost/form", "as your browser shows it"),
        ("intake_form_url", "https://forms.example.com:99999/", "as your browser shows it"),
        ("intake_form_url", "https://user:pw@forms.example.com/", "user name or password"),
        ("intake_form_url", 'https://forms.example.com/"><script>', "as your browser shows it"),
        ("intake_form_url", "https://forms.example.com/a b", "as your browser shows it"),
        ("intake_form_url", "https://forms.example.com/" + "a" * 500, "at most 500 characters"),
        ("intake_form_url", "//forms.example.com/intake", "must start with https://"),
        ("reply_to_address", "not an address", "Enter one email address"),
        ("reply_to_address", "front@clinic.example\r\nBcc: all@example.com", "Enter one email address"),
        ("reply_to_address", "Front <front@clinic-a.example>", "Enter one email address"),
        ("reply_to_address", "a@b.example, c@d.example", "Enter one email address"),
        ("reply_to_address", "zoë@clinic-a.example", "Enter one email address"),
        ("phone", "call us!", "Enter a phone number"),
        ("phone", "12", "Enter a phone number"),
        ("phone", "1" * 51, "at most 50 characters"),
        ("postal_address", "1\n2\n3\n4\n5\n6\n7", "at most 6 lines"),
        ("postal_address", "x" * 501, "at most 500 characters"),
        ("postal_address", "12 Road\u202e\nTown", "control or invisible character"),
    ],
)
def test_a_bad_value_is_refused_on_its_field_and_nothing_typed_is_lost(app, world, field, value, error):
    owner = signed_in(app, OWNER)
    typed = {**GOOD, field: value}
    response = owner.post("/clinic/settings", data=typed)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    message = re.search(rf'<p class="field-error" id="{field}-error">(.*?)</p>', page, re.S)
    assert message and error in message.group(1).replace("&#39;", "'"), page
    assert re.search(
        rf'<[a-z]+ [^>]*aria-describedby="{field}-hint {field}-error"[^>]*aria-invalid="true"', page
    )
    # Every other value is still in the form; nothing was saved (the time zone neither).
    assert 'value="front.desk@clinic-a.example"' in page or field == "reply_to_address"
    assert "12 Harbour Road" in page or field == "postal_address"
    db.session.refresh(world.clinic_a)
    assert world.clinic_a.timezone == "UTC" and world.clinic_a.brand_colour == ""
    assert world.clinic_a.intake_form_url == "" and world.clinic_a.reply_to_address == ""
    assert not db.session.execute(sa.select(AuditEntry).where(AuditEntry.action.like("clinic.%"))).first()


def test_the_service_refuses_what_the_form_would(app, world):
    from webapp.services import clinic_identity

    with pytest.raises(clinic_identity.IdentityError) as refused:
        clinic_identity.save(world.users["owner"], clinic_identity.ClinicIdentity(brand_colour="#fff;x"))
    assert refused.value.field == "brand_colour"
    db.session.refresh(world.clinic_a)
    assert world.clinic_a.brand_colour == ""


def test_a_reply_to_address_on_a_domain_in_another_script_is_kept_as_its_ascii_form(app, world):
    from webapp.services import clinic_identity

    assert clinic_identity.reply_to_address("front@bücher.example") == "front@xn--bcher-kva.example"
    assert clinic_identity.reply_to_address(" Front.Desk@Clinic-A.example ") == "Front.Desk@Clinic-A.example"


@pytest.mark.parametrize("who", [CLINICIAN, "support@platform.example"])
def test_only_owners_change_the_settings(app, world, who):
    client = signed_in(app, who)
    assert client.get("/clinic/settings").status_code == 404
    assert client.post("/clinic/settings", data=GOOD).status_code == 404
    db.session.refresh(world.clinic_a)
    assert world.clinic_a.reply_to_address == ""


def test_an_owner_changes_only_their_own_clinic(app, world):
    signed_in(app, "owner@b.example").post("/clinic/settings", data=GOOD)
    db.session.refresh(world.clinic_a)
    db.session.refresh(world.clinic_b)
    assert (
        world.clinic_a.reply_to_address == "" and world.clinic_b.reply_to_address == GOOD["reply_to_address"]
    )


# --- The export --------------------------------------------------------------------------------

DAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_the_export_carries_the_text_part_and_what_else_was_sent(app, world):
    guarded = with_content(
        add_email(world.client_a, sent_at=DAY, subject="=SUM(1)"), reply_to="=cmd@clinic-a.example"
    )
    guarded.body = '=HYPERLINK("https://evil.example","x")\nSecond line\n@SUM(2)'
    db.session.commit()
    plain = add_email(world.client_a, sent_at=DAY.replace(hour=11), subject="Plain")
    client = signed_in(app)
    csv_text = client.get(f"/clients/{world.client_a.id}/export/csv?from=2026-03-02&to=2026-03-02").get_data(
        as_text=True
    )
    rows = list(csv.reader(io.StringIO(csv_text)))
    header = rows[7]
    assert header[-4:] == ["HTML part", "Reply-To", "Attachment", "Text part"]
    first, second = (dict(zip(header, row, strict=True)) for row in rows[8:])
    assert first["Subject"] == "'=SUM(1)"
    assert first["HTML part"] == "yes" and first["Attachment"] == "appointment.ics"
    assert first["Reply-To"] == "'=cmd@clinic-a.example"  # the formula guard covers the new columns
    assert first["Text part"] == "'" + guarded.body
    assert second["HTML part"] == "no (text only)" and second["Reply-To"] == "" and second["Attachment"] == ""
    assert second["Text part"] == plain.body == "Hello"

    page = client.get(f"/clients/{world.client_a.id}/export/print?from=2026-03-02&to=2026-03-02").get_data(
        as_text=True
    )
    words = seen(page)
    assert (
        "Sent as an HTML and a text part, Reply-To =cmd@clinic-a.example, with appointment.ics attached"
        in words
    )
    assert "Sent as text only. Its text part" in words
    # Each line of the text part starts a line of the printed page: each is guarded.
    assert (
        '<pre class="export-text">&#39;=HYPERLINK(&#34;https://evil.example&#34;,&#34;x&#34;)\n'
        "Second line\n&#39;@SUM(2)</pre>"
    ) in page
    assert '<pre class="export-text">Hello</pre>' in page
