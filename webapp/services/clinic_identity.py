"""The clinic's identity in its emails (Reply-To, phone, postal address, brand colour, intake form
link): read strictly, since every value lands in an email header, its HTML or its CSS; saved audited."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from webapp.extensions import db
from webapp.models import Clinic, User
from webapp.services import audit

MAX_REPLY_TO = 320
MAX_PHONE = 50
MAX_POSTAL_ADDRESS = 500
MAX_POSTAL_LINES = 6
MAX_URL = 500
# The only brand colour accepted: it goes into the emails' CSS, so nothing but six hex digits.
COLOUR = re.compile(r"#[0-9a-f]{6}")
# Digits, spaces and the usual separators, with an optional extension ("ext 12", "x12").
PHONE = re.compile(r"\+?[0-9 ()./-]+(?: ?(?:ext\.?|x) ?[0-9]{1,6})?", re.IGNORECASE)
# A host name of letters, digits and hyphens in dotted labels, ending in a name (not an IP address).
HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]")
# What a URL may hold: RFC 3986's characters and percent escapes, nothing a header or HTML would read.
URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# Control and invisible characters: no line of a postal address may hold one.
HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


class IdentityError(ValueError):
    """A value the clinic's identity cannot take; `field` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ClinicIdentity:
    """What every email of the clinic carries; empty strings are "not given"."""

    reply_to_address: str = ""
    phone: str = ""
    postal_address: str = ""
    brand_colour: str = ""
    intake_form_url: str = ""


# How the audit trail names each part.
NAMES = {
    "reply_to_address": "Reply-to address",
    "phone": "Phone",
    "postal_address": "Postal address",
    "brand_colour": "Brand colour",
    "intake_form_url": "Intake form link",
}


def reply_to_address(value: str) -> str:
    """Return the reply-to address as stored (trimmed), or raise IdentityError."""
    value = value.strip()
    if not value:
        return ""
    if len(value) > MAX_REPLY_TO:
        raise IdentityError("reply_to_address", f"An email address has at most {MAX_REPLY_TO} characters.")
    try:
        # Syntax only: whether the clinic's domain takes mail is for its own mail server to say.
        # A header carries ASCII: no letters outside it before the @ (a reply would need every
        # server on its way to speak SMTPUTF8), and a domain in another script goes as its
        # ASCII (IDNA) form, which every mail client can reply to.
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise IdentityError(
            "reply_to_address", f"Enter one email address, such as front.desk@yourclinic.example ({error})"
        ) from None
    return value if value.isascii() else checked.ascii_email


def phone(value: str) -> str:
    """Return the phone number as stored (spaces collapsed), or raise IdentityError."""
    value = " ".join(value.split())
    if not value:
        return ""
    if len(value) > MAX_PHONE:
        raise IdentityError("phone", f"A phone number has at most {MAX_PHONE} characters.")
    if not PHONE.fullmatch(value) or sum(char.isdigit() for char in value) < 5:
        raise IdentityError(
            "phone", "Enter a phone number: digits, spaces and + ( ) - . /, for example +1 604 555 0100."
        )
    return value


def postal_address(value: str) -> str:
    """Return the postal address as stored (one line per line, trimmed), or raise IdentityError."""
    lines = [line.strip() for line in value.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    if any(HIDDEN.search(line) for line in lines):
        raise IdentityError(
            "postal_address", "The address holds a control or invisible character: type it again."
        )
    if len(lines) > MAX_POSTAL_LINES:
        raise IdentityError("postal_address", f"An address has at most {MAX_POSTAL_LINES} lines.")
    stored = "\n".join(lines)
    if len(stored) > MAX_POSTAL_ADDRESS:
        raise IdentityError("postal_address", f"An address has at most {MAX_POSTAL_ADDRESS} characters.")
    return stored


def brand_colour(value: str) -> str:
    """Return the brand colour as stored (#rrggbb, lower case), or raise IdentityError."""
    value = value.strip().lower()
    if not value:
        return ""
    if not COLOUR.fullmatch(value):
        raise IdentityError(
            "brand_colour",
            "Enter the colour as # and six hexadecimal digits, for example #1f5fbf, or leave it empty.",
        )
    return value


def intake_form_url(value: str) -> str:
    """Return the intake form's address as stored, or raise IdentityError: https only, a real host."""
    value = value.strip()
    if not value:
        return ""
    if len(value) > MAX_URL:
        raise IdentityError("intake_form_url", f"A link has at most {MAX_URL} characters.")
    refused = IdentityError(
        "intake_form_url",
        "Enter the form's full address as your browser shows it, starting with https://, "
        "for example https://forms.yourclinic.example/intake.",
    )
    if not URL_CHARACTERS.fullmatch(value):
        raise refused
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        raise refused from None
    if parts.scheme.lower() != "https":
        raise IdentityError("intake_form_url", "The link must start with https:// (a secure address).")
    if parts.username is not None or parts.password is not None:
        raise IdentityError("intake_form_url", "The link must not hold a user name or password.")
    if not parts.hostname or not HOST.fullmatch(parts.hostname):
        raise refused
    return value


READERS = {
    "reply_to_address": reply_to_address,
    "phone": phone,
    "postal_address": postal_address,
    "brand_colour": brand_colour,
    "intake_form_url": intake_form_url,
}


def read(values: dict[str, str]) -> tuple[ClinicIdentity | None, dict[str, str]]:
    """Read typed values: (the identity, {}) when all are good, else (None, {field: why})."""
    stored, errors = {}, {}
    for name, reader in READERS.items():
        try:
            stored[name] = reader(values.get(name) or "")
        except IdentityError as error:
            errors[name] = str(error)
    return (None, errors) if errors else (ClinicIdentity(**stored), {})


def save(owner: User, identity: ClinicIdentity) -> list[str]:
    """Store the owner's clinic's identity (read again here: it reaches emails' headers and CSS),
    audit each changed part, commit; return the names of the parts changed."""
    checked, errors = read({field.name: getattr(identity, field.name) for field in fields(identity)})
    if checked is None:
        field, message = next(iter(errors.items()))
        raise IdentityError(field, message)
    clinic = db.session.get(Clinic, owner.clinic_id)
    changed = []
    for name in READERS:
        old, new = getattr(clinic, name) or "", getattr(checked, name)
        if old == new:
            continue
        audit.record(
            "clinic.identity",
            owner,
            clinic_id=clinic.id,
            subject_type="clinic",
            subject_id=clinic.id,
            detail=f"{NAMES[name]}: {_shown(old)} → {_shown(new)}",
        )
        setattr(clinic, name, new)
        changed.append(NAMES[name])
    db.session.commit()
    return changed


def _shown(value: str) -> str:
    """A value as one line of the audit trail ("(none)" when empty)."""
    return value.replace("\n", ", ") if value else "(none)"
