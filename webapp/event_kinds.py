"""Our own words for what happens to an email: the closed set of event kinds.

Every provider adapter translates its wire names into these, and nothing else is stored: a
ProviderEvent refuses any other kind. The stored strings are the ones the database has always
held (several were SendGrid's spellings, such as "spamreport"), so no stored row changes; code
names the members, whose names are ours. This module imports nothing of the app, so every
layer (statuses, providers, the sandbox, services) can rely on it.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    """One kind of event in an email's life, in the order an email lives them."""

    SENDING = "sending"  # ours: the email was queued for the provider
    PROCESSED = "processed"  # the provider took it
    DEFERRED = "deferred"  # the receiving server asked to try again later
    DELIVERED = "delivered"  # the receiving server took it
    OPENED = "open"
    CLICKED = "click"
    # The receiving server took it, then filed it as spam (Postmark's SpamNotification): proof of
    # delivery, not the client's own report.
    FILED_AS_SPAM = "spam_filtered"
    BOUNCED = "bounce"  # the receiving server refused it
    DROPPED = "dropped"  # the provider would not send it (the address is on one of its lists)
    REJECTED = "rejected"  # ours: the provider refused the send request itself
    EXPIRED = "expired"  # ours: deferred for longer than the provider retries
    REPORTED_AS_SPAM = "spamreport"  # the client reported it as spam
    UNSUBSCRIBED = "unsubscribe"  # the client unsubscribed through the provider's link
    UNSUBSCRIBED_FROM_GROUP = "group_unsubscribe"  # ... from this kind of email only
    RESUBSCRIBED = "group_resubscribe"  # the client (or the provider) took an unsubscription back
    OTHER = "unknown"  # a provider event we have no word for: kept on the timeline, nothing more


# The stored string -> its kind: looking a value up here is a plain dict lookup (EventKind(value)
# is several times slower, and a worker builds thousands of events a batch).
BY_VALUE: dict[str, EventKind] = {kind.value: kind for kind in EventKind}


def event_kind(value: str) -> EventKind:
    """Return the kind a stored string names; ValueError for anything outside the closed set."""
    kind = BY_VALUE.get(value) if isinstance(value, str) else None
    if kind is None:
        raise ValueError(f"{value!r} is not an event kind (webapp/event_kinds.py lists them)")
    return kind
