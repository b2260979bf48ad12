"""What a client receives: each kind of message made into a subject, an HTML part, a text part
and (for a reminder) a calendar file, from the templates under templates/email/.

`render` is the one place an email is made: the compose form's preview and the send both call it,
so what is previewed is what is sent. It reads the client and clinic it is given and nothing else
(no database, no Flask), so a test can call it with plain objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from webapp import timezones
from webapp.models import MESSAGE_KINDS
from webapp.services.calendar_file import appointment_ics

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "email"
DEFAULT_SUBJECTS = {
    "appointment_reminder": "Appointment reminder",
    "intake_form": "Your intake form",
    "receipt": "Your receipt",
}
CLOSINGS = {"appointment_reminder": "See you soon,", "intake_form": "Thank you,", "receipt": "Thank you,"}
DEFAULT_ACCENT = "#2b5f8a"  # a calm blue with white text well above 4.5:1
DEFAULT_MINUTES = 60
MAX_RECEIPT_LINES = 10
NO_INTAKE_FORM = (
    "Your clinic has no intake form link yet: an owner adds it under Settings. Until then, "
    "send a custom message instead."
)
NOT_SECURE_INTAKE_FORM = (
    "Your clinic's intake form link starts with http://, not https://: an owner changes it under "
    "Settings. Until then, send a custom message instead."
)
# Matched whole (fullmatch): "$" would let a trailing line break through into the CSS.
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
# Whatever the settings take (services/clinic_identity.py) passes: an apostrophe is a URL's own
# character, and the HTML escapes it like any other. Only https, as the settings ask: an older or
# seeded http:// link would send a client's health answers in the clear.
_WEB_ADDRESS = re.compile(r"https://[^\s<>\"]+", re.IGNORECASE)
_PLAIN_HTTP_ADDRESS = re.compile(r"http://[^\s<>\"]+", re.IGNORECASE)

# HTML autoescaped (the clinician's words and the client's name are text, never markup); the text
# part is plain text and is not escaped. Undefined names fail loudly: an email never says "None".
_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def _lines_to_br(value: str) -> Markup:
    """Escape text and keep its line breaks (<br>): the clinician's note as typed."""
    return Markup("<br>\n").join(escape(line) for line in value.splitlines())


_env.filters["lines_to_br"] = _lines_to_br


class ClientLike(Protocol):
    name: str
    email: str


class ClinicLike(Protocol):
    name: str
    timezone: str
    reply_to_address: str
    phone: str
    postal_address: str
    brand_colour: str
    intake_form_url: str


@dataclass(frozen=True)
class ReceiptLine:
    """One line of a receipt, as typed when sending."""

    service: str
    day: date
    amount: Decimal  # never a float: money


@dataclass(frozen=True)
class Compose:
    """What the clinician typed on the compose form (empty: the kind's ready-made words)."""

    subject: str = ""
    note: str = ""  # a custom message's text; for the other kinds, a note added to the email
    appointment_at: datetime | None = None  # UTC
    minutes: int = DEFAULT_MINUTES
    practitioner: str = ""
    lines: tuple[ReceiptLine, ...] = ()


@dataclass(frozen=True)
class RenderedEmail:
    """An email as handed to the provider."""

    subject: str
    body_text: str
    body_html: str
    reply_to: str
    calendar_ics: str | None = None


class CannotCompose(ValueError):
    """This email cannot be made as asked; the message says why, for the clinician."""


def intake_link(clinic: ClinicLike) -> str:
    """The clinic's intake form address, if it has a usable (https) one."""
    url = (clinic.intake_form_url or "").strip()
    return url if _WEB_ADDRESS.fullmatch(url) else ""


def intake_problem(clinic: ClinicLike) -> str:
    """Why an intake form cannot be sent for this clinic, for the clinician; empty when it can."""
    if intake_link(clinic):
        return ""
    if _PLAIN_HTTP_ADDRESS.fullmatch((clinic.intake_form_url or "").strip()):
        return NOT_SECURE_INTAKE_FORM
    return NO_INTAKE_FORM


def accent(colour: str) -> tuple[str, str]:
    """The accent colour for the clinic's brand colour (a safe default when unset or malformed),
    and the text colour that reads on it."""
    colour = colour if _COLOUR.fullmatch(colour or "") else DEFAULT_ACCENT
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # White text where it keeps 4.5:1 against the accent, else near-black.
    return colour.lower(), "#ffffff" if (1.05 / (luminance + 0.05)) >= 4.5 else "#1f2328"


def money(amount: Decimal) -> str:
    """Format an amount of money with two decimals and thousands separators: 1,234.50."""
    return f"{amount.quantize(Decimal('0.01')):,.2f}"


def render(
    kind: str,
    client: ClientLike,
    clinic: ClinicLike,
    compose: Compose,
    *,
    uid: str,
    now: datetime,
) -> RenderedEmail:
    """Make the email of this kind for this client (uid names its calendar event; now stamps it)."""
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown kind of message: {kind}")
    subject = compose.subject.strip() or DEFAULT_SUBJECTS.get(kind, "")
    note = compose.note.strip()
    if kind == "free_text" and not (subject and note):
        raise CannotCompose("A custom message needs its own subject and text.")
    if kind == "intake_form" and intake_problem(clinic):
        raise CannotCompose(intake_problem(clinic))
    if kind == "receipt" and not compose.lines:
        raise CannotCompose("A receipt needs at least one line: a service, its date and its amount.")
    zone = clinic.timezone or "UTC"
    when = ""
    if compose.appointment_at is not None:
        when = timezones.format_spoken(timezones.local(compose.appointment_at, zone))
    colour, colour_text = accent(clinic.brand_colour)
    address_lines = [line.strip() for line in (clinic.postal_address or "").splitlines() if line.strip()]
    context = {
        "subject": subject,
        "client_name": client.name,
        "note": note,
        "closing": CLOSINGS.get(kind, ""),
        "when": when,
        "minutes": compose.minutes,
        "practitioner": compose.practitioner.strip(),
        "intake_url": intake_link(clinic),
        "lines": [(line, money(line.amount)) for line in compose.lines],
        "total": money(sum((line.amount for line in compose.lines), Decimal("0"))),
        "format_date": timezones.format_date,
        "clinic": {
            "name": clinic.name,
            "address_lines": address_lines,
            "phone": (clinic.phone or "").strip(),
            "reply_to": (clinic.reply_to_address or "").strip(),
            "accent": colour,
            "accent_text": colour_text,
        },
    }
    body_html = _env.get_template(f"{kind}.html").render(context)
    body_text = _env.get_template(f"{kind}.txt").render(context)
    calendar = None
    if kind == "appointment_reminder" and compose.appointment_at is not None:
        with_whom = f" with {context['practitioner']}" if context["practitioner"] else ""
        calendar = appointment_ics(
            uid=uid,
            start=compose.appointment_at,
            minutes=compose.minutes,
            zone_name=zone,
            summary=f"Appointment at {clinic.name}{with_whom}",
            location=", ".join(address_lines),
            description=" · ".join(part for part in (clinic.name, context["clinic"]["phone"]) if part),
            stamp=now,
        )
    return RenderedEmail(
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        reply_to=context["clinic"]["reply_to"],
        calendar_ics=calendar,
    )
