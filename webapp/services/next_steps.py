"""What the clinic should do about one email as time passes and its client's file changes.

One answer for the email's log row, its help panel and its Needs attention item, so the three never
disagree: a stuck email first needs nothing (support is alerted), then, once it was sent more than
an hour ago, a message to support quoting its reference; a failed email sent to an address since
corrected in the client file is resent to the address now on file.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from webapp import statuses

STUCK_AFTER = timedelta(seconds=statuses.STUCK_AFTER_SECONDS)
CONTACT_SUPPORT_AFTER = timedelta(seconds=statuses.CONTACT_SUPPORT_AFTER_SECONDS)
WAITING = (statuses.SENDING.key, statuses.PROCESSED.key)


def _duration(seconds: int) -> str:
    """Say a whole number of minutes or hours in words ("10 minutes", "1 hour")."""
    count, unit = (seconds // 3600, "hour") if seconds % 3600 == 0 else (seconds // 60, "minute")
    return f"{count} {unit}" + ("" if count == 1 else "s")


# How the help, the log and Needs attention say the two thresholds.
STUCK_AFTER_WORDS = _duration(statuses.STUCK_AFTER_SECONDS)
CONTACT_SUPPORT_AFTER_WORDS = _duration(statuses.CONTACT_SUPPORT_AFTER_SECONDS)


def received_at(email: Any) -> datetime:
    """When we received the email's current status (our clock; the provider's for older rows)."""
    return email.status_received_at or email.status_changed_at


def is_stuck(email: Any, now: datetime) -> bool:
    """Return whether the email has sat in Sending or Processed for over ten minutes."""
    return email.status in WAITING and now - received_at(email) > STUCK_AFTER


def support_now(email: Any, now: datetime) -> bool:
    """Return whether the email is stuck and was sent over an hour ago: contact support now."""
    return is_stuck(email, now) and now - email.created_at > CONTACT_SUPPORT_AFTER


def contact_support_from(email: Any) -> datetime:
    """Return from when the clinic should contact support if the email is still stuck."""
    return email.created_at + CONTACT_SUPPORT_AFTER


def next_change(emails: Iterable[Any], now: datetime) -> datetime | None:
    """Return when the first of these emails turns stuck, or stuck past the hour, with time alone."""
    moments = []
    for email in emails:
        if email.status not in WAITING or support_now(email, now):
            continue
        stuck_at = received_at(email) + STUCK_AFTER
        moments.append(max(stuck_at, contact_support_from(email)) if is_stuck(email, now) else stuck_at)
    return min(moments, default=None)


def resend_to_file(email: Any, address_on_file: str, blocked: bool) -> str:
    """Return the address on file when a failed email went to another (an address since corrected)
    and can be resent there in one step; "" otherwise (`blocked`: the address on file is)."""
    if email.status != statuses.FAILED.key or blocked:
        return ""
    if email.to_address.strip().lower() == address_on_file.strip().lower():
        return ""
    return address_on_file.strip()
