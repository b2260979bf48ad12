"""Ready-made messages for each kind, filled in for one client."""

from __future__ import annotations

from datetime import datetime

from webapp import timezones
from webapp.models import MESSAGE_KINDS, Client, Clinic

DEFAULTS: dict[str, tuple[str, str]] = {
    "appointment_reminder": (
        "Appointment reminder",
        "Hello {name},\n\nThis is a reminder of your upcoming appointment at {clinic}{when}.\n"
        "If you need to change it, just reply to this email.\n\nSee you soon,\n{clinic}",
    ),
    "intake_form": (
        "Your intake form",
        "Hello {name},\n\nBefore your first visit{when}, please fill in our intake form.\n\n"
        "Thank you,\n{clinic}",
    ),
    "receipt": (
        "Your receipt",
        "Hello {name},\n\nThank you for your visit. Your receipt is below.\n\n{clinic}",
    ),
}


def compose(
    kind: str, client: Client, clinic: Clinic, subject: str, body: str, appointment_at: datetime | None = None
) -> tuple[str, str]:
    """Return the subject and body to send: what the clinician typed, else the kind's default
    (which names the appointment's day and time, in the clinic's time zone and labelled with it,
    when there is one)."""
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown kind of message: {kind}")
    default_subject, default_body = DEFAULTS.get(kind, ("", ""))
    when = ""
    if appointment_at is not None:
        when = f" on {timezones.format_spoken(timezones.local(appointment_at, clinic.timezone or 'UTC'))}"
    values = {"name": client.name, "clinic": clinic.name, "when": when}
    return (
        subject.strip() or default_subject,
        body.strip() or default_body.format(**values),
    )
