"""Why a provider would not send to an address, in our own words, whatever the provider.

Adapters set `reject_reason` (base.RejectReason) on dropped events and rejected sends, and keep
the provider's own text in `reason`/`error`; services show our words, and the provider's text
only when it adds something (an "other" reason, or a row stored before reasons were normalised).
"""

from __future__ import annotations

from typing import get_args

from webapp.providers.base import RejectReason

REJECT_REASONS: tuple[str, ...] = get_args(RejectReason)

WORDS: dict[str, str] = {
    "bounced_address": "an earlier email to this address bounced",
    "spam_report": "the client reported an earlier email as spam",
    "invalid_address": "the address is not valid",
    "unsubscribed": "the client unsubscribed",
}
NO_REASON = "the email provider gave no reason"


def normalised(reject_reason: str | None) -> str:
    """Return a stored reason as one of REJECT_REASONS ("other" when missing or unknown)."""
    return reject_reason if reject_reason in REJECT_REASONS else "other"


def reject_reason_text(reject_reason: str | None, provider_text: str | None) -> str:
    """Say in plain words why the provider would not send; "other" falls back to its own text."""
    words = WORDS.get(normalised(reject_reason))
    if words is not None:
        return words
    text = (provider_text or "").strip()
    return text or NO_REASON
