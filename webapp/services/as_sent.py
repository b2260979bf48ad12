"""The copy of an email as handed to the provider: its headers, HTML part, text part and attachment."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
import sqlalchemy.orm as so

from webapp.extensions import db
from webapp.models import Email
from webapp.services import handover

# The name the calendar attachment is handed over under (services/handover.py names it the same).
CALENDAR_FILENAME = "appointment.ics"
# Our side of the handover while the provider does not have it yet.
NOT_HANDED_OVER = ("queued", "claimed")


@dataclass
class AsSent:
    """One email as its client received it (or will, while it is still being handed over)."""

    email: Email
    sender: str  # the From header
    recipient: str  # the To header
    # True when the email was queued before its From and To were stored (migration 0018): both are
    # rebuilt from today's settings and names, and may not be what was sent.
    headers_rebuilt: bool
    reply_to: str  # "" when it carried none
    html: str  # the HTML part; "" for a text-only email
    calendar: str | None  # the .ics attachment, if any

    @property
    def text_only(self) -> bool:
        """Whether the email was plain text alone (no HTML part, so no open could be tracked)."""
        return not self.html

    @property
    def pending(self) -> bool:
        """Whether the email provider does not have it yet."""
        return self.email.send_state in NOT_HANDED_OVER


def as_sent(clinic_id: int, email_id: int) -> AsSent | None:
    """Return the clinic's email with this id as it was handed over, or None (another clinic's too)."""
    email = db.session.execute(
        sa.select(Email)
        .where(Email.id == email_id, Email.clinic_id == clinic_id)
        .options(so.selectinload(Email.content), so.joinedload(Email.client), so.joinedload(Email.clinic))
    ).scalar_one_or_none()
    if email is None:
        return None
    content = email.content
    # The From and To services/handover.py hands (or handed) the provider: the same function.
    headers = handover.headers(email)
    return AsSent(
        email=email,
        sender=_address(headers["from_name"], headers["from_address"]),
        recipient=_address(headers["to_name"], email.to_address),
        headers_rebuilt=not handover.headers_stored(email),
        reply_to=content.reply_to if content else "",
        html=content.body_html if content else "",
        calendar=content.calendar_ics if content and content.calendar_ics else None,
    )


def _address(name: str, address: str) -> str:
    """A header's name and address as a person reads them (not RFC 2047-encoded)."""
    return f"{name} <{address}>" if name else address
