"""What a client receives: each kind rendered into an HTML part made for mail clients and a text
part saying the same, in the clinic's frame, escaped; a reminder's calendar file read back with a
calendar library, in the clinic's zone."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import icalendar
import pytest

from tests.helpers import scan, text
from webapp.services import clinic_identity, demo, email_content
from webapp.services.email_content import CannotCompose, Compose, ReceiptLine, render

NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
APPOINTMENT_UTC = datetime(2026, 12, 9, 17, 0, tzinfo=UTC)  # 10:00 in Vancouver (UTC-7 by IANA 2026f)
SPOKEN = "Wednesday 9 December 2026 at 10:00 MST"
INTAKE = "https://forms.harbour.example/intake?clinic=7&lang=en"
LINES = (
    ReceiptLine("Massage therapy, 60 min", date(2026, 12, 1), Decimal("110.00")),
    ReceiptLine("Physiotherapy", date(2026, 12, 2), Decimal("1200.50")),
)


def clinic(**changes: str) -> SimpleNamespace:
    values = {
        "name": "Harbour Physio",
        "timezone": "America/Vancouver",
        "reply_to_address": "front@harbour.example",
        "phone": "+1 604 555 0142",
        "postal_address": "1200 Harbour Street\nVancouver, BC V6B 1A1",
        "brand_colour": "#0f766e",
        "intake_form_url": INTAKE,
    }
    return SimpleNamespace(**(values | changes))


JANE = SimpleNamespace(name="Jane Doe", email="jane@example.com")
COMPOSED = {
    "appointment_reminder": Compose(appointment_at=APPOINTMENT_UTC, practitioner="Dr Maya Lee"),
    "intake_form": Compose(appointment_at=APPOINTMENT_UTC, practitioner="Dr Maya Lee"),
    "receipt": Compose(lines=LINES),
    "free_text": Compose(subject="Parking", note="Hi Jane,\nUse the back door."),
}


def rendered(kind: str, who: SimpleNamespace = JANE, at: SimpleNamespace | None = None, **compose):
    return render(
        kind, who, at or clinic(), compose.pop("c", COMPOSED[kind]), uid="m-1@clinicmail.example", now=NOW
    )


class Parts(HTMLParser):
    """The tags, attributes and visible text of an HTML part."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.words: list[str] = []
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("br", "p", "td", "th", "tr", "table"):
            self.words.append(" ")  # where a reader sees a break
        if tag in ("style", "title"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.words.append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", "".join(self.words)).strip()

    def links(self) -> list[str]:
        return [attrs["href"] or "" for tag, attrs in self.tags if tag == "a"]


def flat(words: str) -> str:
    return re.sub(r"\s+", " ", words).strip()


@pytest.mark.parametrize("kind", list(COMPOSED))
def test_every_kind_is_an_html_part_made_for_mail_clients(kind):
    email = rendered(kind)
    html = email.body_html
    parts = Parts(html)
    tags = [tag for tag, _ in parts.tags]
    assert tags[0] == "html" and dict(parts.tags[0][1])["lang"] == "en"
    assert re.search(r"<title>[^<]+</title>", html)
    assert "script" not in tags and "link" not in tags and "iframe" not in tags and "form" not in tags
    # Nothing remote: no images, fonts or style sheets from elsewhere, no CSS that fetches.
    for tag, attrs in parts.tags:
        assert "src" not in attrs, (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    assert "@import" not in html and "url(" not in html and "@font-face" not in html
    # One fluid column, at most 600px wide, laid out with tables.
    assert "max-width:600px" in html and 'width="100%"' in html and "<table" in html
    # The only <style> tightens the padding on a phone; everything else is inline.
    assert tags.count("style") == 1 and "@media" in html.split("<style>")[1].split("</style>")[0]
    assert [link for link in parts.links() if not link.startswith("https://")] == []
    # The clinic's frame: name, address, phone and where replies go.
    for fact in ("Harbour Physio", "1200 Harbour Street", "Vancouver, BC V6B 1A1", "+1 604 555 0142"):
        assert fact in parts.text and fact in email.body_text, fact
    assert "front@harbour.example" in parts.text and "front@harbour.example" in email.body_text
    assert email.reply_to == "front@harbour.example"
    assert "#0f766e" in html  # the brand colour, as the accent


def test_a_reminder_says_when_in_the_clinics_zone_with_whom_and_where():
    email = rendered("appointment_reminder")
    words = Parts(email.body_html).text
    for shown in (words, flat(email.body_text)):
        assert f"appointment at Harbour Physio on {SPOKEN}." in shown
        assert "Dr Maya Lee" in shown and "appointment.ics" in shown
    assert email.subject == "Appointment reminder"
    assert email.body_text.startswith("Hello Jane Doe,\n")


def test_an_intake_form_links_to_the_clinics_form_and_says_why_and_for_which_appointment():
    email = rendered("intake_form")
    parts = Parts(email.body_html)
    assert set(parts.links()) == {INTAKE}
    assert f"Fill in the intake form: {INTAKE}" in email.body_text  # the link written out
    for shown in (parts.text, flat(email.body_text)):
        assert (
            f"Before your appointment on {SPOKEN} with Dr Maya Lee, please fill in our intake form." in shown
        )
        assert "so your visit can start with your care" in shown
    assert email.calendar_ics is None


def test_an_intake_form_needs_the_clinics_form():
    for missing in ("", "   ", "javascript:alert(1)", "forms.example/intake", "ftp://forms.example/x"):
        with pytest.raises(CannotCompose, match="no intake form link"):
            rendered("intake_form", at=clinic(intake_form_url=missing))


def test_an_intake_form_refuses_a_link_that_is_not_https():
    # The settings take https only, but an older or seeded value may still be http://.
    for plain_http in ("http://forms.example/intake", "HTTP://forms.example/intake", " http://f.example/x "):
        with pytest.raises(
            CannotCompose, match=r"starts with http://, not https://: an owner changes it under Settings"
        ):
            rendered("intake_form", at=clinic(intake_form_url=plain_http))


def test_the_demo_clinic_has_the_identity_its_owner_could_save():
    for field, value in demo.DEMO_IDENTITY.items():
        assert clinic_identity.READERS[field](value) == value, field
    link = demo.DEMO_IDENTITY["intake_form_url"]
    assert (
        f"Fill in the intake form: {link}"
        in rendered("intake_form", at=clinic(**demo.DEMO_IDENTITY)).body_text
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://forms.example/intake?who=O'Brien",
        "https://forms.example/(new)/intake!*",
        "https://forms.example/intake;v=2?a=1&b=%20#top",
    ],
)
def test_every_intake_link_the_settings_take_is_the_one_the_email_links(url):
    assert clinic_identity.intake_form_url(url) == url  # the owner could save it
    email = rendered("intake_form", at=clinic(intake_form_url=url))
    assert set(Parts(email.body_html).links()) == {url}
    assert f"Fill in the intake form: {url}" in email.body_text


def test_a_receipt_lists_its_lines_and_their_total_in_both_parts():
    email = rendered("receipt")
    words = Parts(email.body_html).text
    for line in (
        "01 Dec 2026",
        "Massage therapy, 60 min",
        "110.00",
        "02 Dec 2026",
        "Physiotherapy",
        "1,200.50",
    ):
        assert line in words and line in email.body_text, line
    assert "Total 1,310.50" in words and "Total: 1,310.50" in email.body_text
    assert "01 Dec 2026  Massage therapy, 60 min: 110.00" in email.body_text
    with pytest.raises(CannotCompose, match="at least one line"):
        rendered("receipt", c=Compose())


def test_money_is_added_as_decimals_never_as_floats():
    cents = tuple(ReceiptLine("x", date(2026, 1, 1), Decimal("0.10")) for _ in range(3))
    assert (
        "Total: 0.30" in rendered("receipt", c=Compose(lines=cents)).body_text
    )  # 0.1 * 3 in floats is 0.30000000000000004


def test_a_custom_message_is_the_clinicians_words_with_line_breaks_in_the_clinics_frame():
    email = rendered("free_text")
    assert email.subject == "Parking"
    assert email.body_text.startswith("Hi Jane,\nUse the back door.\n")
    assert "Hi Jane,<br>\nUse the back door." in email.body_html
    with pytest.raises(CannotCompose):
        rendered("free_text", c=Compose(subject="Parking"))


def test_a_clinic_without_identity_still_gets_a_clean_frame():
    bare = clinic(reply_to_address="", phone="", postal_address="", brand_colour="")
    email = rendered("appointment_reminder", at=bare, c=Compose())
    assert email.reply_to == ""
    assert "reply to this email" not in email.body_text.lower()  # replies would reach the platform
    assert "contact us" in email.body_text and "Where" not in email.body_text
    assert email_content.DEFAULT_ACCENT in email.body_html
    assert "None" not in email.body_text and "None" not in email.body_html
    assert email.calendar_ics is None  # no time, no calendar file


@pytest.mark.parametrize(
    ("colour", "accent", "ink"),
    [
        ("#0F766E", "#0f766e", "#ffffff"),
        ("#ffcc00", "#ffcc00", "#1f2328"),  # white on yellow would be unreadable
        ("red;background:url(https://x.example/p.png)", email_content.DEFAULT_ACCENT, "#ffffff"),
        ("#12345", email_content.DEFAULT_ACCENT, "#ffffff"),
        ("#0f766e\n", email_content.DEFAULT_ACCENT, "#ffffff"),  # nothing after the colour either
        ("#0f766e\n;background:url(https://x.example/p.png)", email_content.DEFAULT_ACCENT, "#ffffff"),
    ],
)
def test_the_brand_colour_is_an_accent_only_when_it_is_a_colour(colour, accent, ink):
    assert email_content.accent(colour) == (accent, ink)
    html = rendered("receipt", at=clinic(brand_colour=colour)).body_html
    assert f"background-color:{accent};color:{ink}" in html
    assert "x.example" not in html


def xss_vectors() -> list[str]:
    lines = (Path(__file__).parent / "xss_vectors.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("# ")]


def test_hostile_names_and_words_are_text_in_the_html_and_verbatim_in_the_text_part():
    for vector in xss_vectors():
        who = SimpleNamespace(name=vector, email="x@example.com")
        at = clinic(name=f"Clinic {vector}", postal_address=vector, phone=vector[:50])
        for kind, compose in (
            ("free_text", Compose(subject=vector, note=f"{vector}\n{vector}")),
            (
                "appointment_reminder",
                Compose(appointment_at=APPOINTMENT_UTC, practitioner=vector, note=vector),
            ),
            ("receipt", Compose(lines=(ReceiptLine(vector, date(2026, 1, 1), Decimal("1.00")),))),
        ):
            email = render(kind, who, at, compose, uid="u@x", now=NOW)
            problems = [p for p in scan(email.body_html).problems if "style" not in p]
            assert problems == [], (vector, problems)
            assert vector not in email.body_html, vector  # escaped: each vector holds < > & ' or "
            assert vector in email.body_text
            assert len([tag for tag, _ in Parts(email.body_html).tags if tag == "a"]) == 0


# --- The calendar file ------------------------------------------------------------------------------


def calendar_of(email) -> icalendar.Calendar:
    assert email.calendar_ics is not None
    return icalendar.Calendar.from_ical(email.calendar_ics)


def test_the_reminders_calendar_file_is_the_appointment_in_the_clinics_zone():
    calendar = calendar_of(rendered("appointment_reminder"))
    assert str(calendar["METHOD"]) == "PUBLISH" and str(calendar["VERSION"]) == "2.0"
    (event,) = calendar.events
    assert str(event["UID"]) == "m-1@clinicmail.example"
    assert event["DTSTART"].params["TZID"] == "America/Vancouver"
    assert event["DTSTART"].dt == APPOINTMENT_UTC
    assert event["DTSTART"].dt.replace(tzinfo=None) == datetime(2026, 12, 9, 10, 0)  # as the clinic typed it
    assert event["DURATION"].dt == timedelta(minutes=60)
    assert event["DTSTAMP"].dt == NOW
    assert str(event["SUMMARY"]) == "Appointment at Harbour Physio with Dr Maya Lee"
    assert str(event["LOCATION"]) == "1200 Harbour Street, Vancouver, BC V6B 1A1"


def test_the_calendar_file_carries_the_zones_rules_so_an_older_calendar_agrees():
    # IANA 2025b says Vancouver is UTC-8 in December 2026; 2026f (pinned) says UTC-7. The file's
    # own VTIMEZONE says -07:00, so a calendar with older zone data still shows 10:00.
    calendar = calendar_of(rendered("appointment_reminder"))
    (zone,) = calendar.timezones
    assert str(zone["TZID"]) == "America/Vancouver"
    from_file = zone.to_tz()
    assert datetime(2026, 12, 9, 10, 0, tzinfo=from_file).utcoffset() == timedelta(hours=-7)
    assert datetime(2026, 12, 9, 10, 0, tzinfo=from_file).astimezone(UTC) == APPOINTMENT_UTC


@pytest.mark.parametrize(
    ("zone", "wall"),
    [("Asia/Kathmandu", datetime(2026, 12, 9, 22, 45)), ("Europe/London", datetime(2026, 12, 9, 17, 0))],
)
def test_the_calendar_file_is_right_in_other_zones(zone, wall):
    email = rendered("appointment_reminder", at=clinic(timezone=zone))
    (event,) = calendar_of(email).events
    assert event["DTSTART"].params["TZID"] == zone
    assert event["DTSTART"].dt.replace(tzinfo=None) == wall and event["DTSTART"].dt == APPOINTMENT_UTC
    assert (
        datetime.combine(wall.date(), wall.time(), calendar_of(email).timezones[0].to_tz()) == APPOINTMENT_UTC
    )


def test_a_clinic_on_utc_gets_a_utc_time_and_the_length_it_asked_for():
    compose = Compose(appointment_at=APPOINTMENT_UTC, minutes=45)
    (event,) = calendar_of(rendered("appointment_reminder", at=clinic(timezone="UTC"), c=compose)).events
    assert event["DTSTART"].dt == APPOINTMENT_UTC and "TZID" not in event["DTSTART"].params
    assert event["DURATION"].dt == timedelta(minutes=45)


def test_the_calendar_file_escapes_and_folds_its_text_as_rfc_5545_says():
    name = "Clinique Côte-des-Neiges; Physio, Massage & Ostéo " * 3  # past 75 octets, with commas
    email = rendered("appointment_reminder", at=clinic(name=name, postal_address="1 Rue, Suite 2\nMontréal"))
    raw = email.calendar_ics.encode()
    lines = raw.split(b"\r\n")
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in lines) <= 75
    for line in lines:
        line.decode()  # a fold never splits a character
    (event,) = calendar_of(email).events
    assert str(event["SUMMARY"]) == f"Appointment at {name} with Dr Maya Lee"
    assert str(event["LOCATION"]) == "1 Rue, Suite 2, Montréal"
    assert b"Physio\\, Massage" in raw.replace(b"\r\n ", b"") and b"\\;" in raw


def test_a_calendar_file_in_the_last_year_of_the_calendar_is_made():
    at = datetime(9999, 6, 1, 17, 0, tzinfo=UTC)  # its zone's rules would run to 10001-01-01
    email = rendered("appointment_reminder", c=Compose(appointment_at=at))
    (event,) = calendar_of(email).events
    assert event["DTSTART"].dt == at


def test_only_a_reminder_with_a_time_has_a_calendar_file():
    assert rendered("appointment_reminder", c=Compose()).calendar_ics is None
    for kind in ("intake_form", "receipt", "free_text"):
        assert rendered(kind).calendar_ics is None


def test_the_text_part_has_no_markup_and_the_html_part_the_same_words():
    for kind in COMPOSED:
        email = rendered(kind)
        assert "<" not in email.body_text and "&amp;" not in email.body_text
        words_html = text(email.body_html.split("<body", 1)[1])
        for line in email.body_text.splitlines():
            line = line.strip().rstrip(":")
            if line and line != "--" and ":" not in line:
                assert flat(line) in words_html, (kind, line)
