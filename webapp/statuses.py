"""The eight delivery statuses of an email, and which events lead to them.

This module is the only place that knows status names, ranks and colours. It imports
nothing of the app so that every layer, the templates included, can rely on it.
"""

from __future__ import annotations

from dataclasses import dataclass


# Each status exists once (the constants below), so it compares by identity: the log compares
# each of its 200 rows' statuses several times, and field-by-field equality built two tuples a time.
@dataclass(frozen=True, eq=False)
class Status:
    """One delivery status as the clinician sees it."""

    key: str  # stored in the database and used in URLs
    label: str
    rank: int  # the current status of an email is the highest rank it has reached
    final: bool  # nothing can change it any more
    badge: str  # CSS modifier of the badge; the label always travels with it
    can_change_soon: bool  # the log refreshes quickly while a row is in such a status

    @property
    def help_key(self) -> str:
        """Anchor of this status in the help panel."""
        return self.key


SENDING = Status("sending", "Sending", 0, False, "pending", True)
PROCESSED = Status("processed", "Processed", 1, False, "pending", True)
DEFERRED = Status("deferred", "Deferred", 2, False, "warning", True)
DELIVERED = Status("delivered", "Delivered", 3, False, "ok", False)
OPEN = Status("open", "Open", 4, False, "ok", False)
CLICKED = Status("clicked", "Clicked", 5, False, "ok", False)
FAILED = Status("failed", "Failed", 6, True, "danger", False)
SPAM_REPORT = Status("spam-report", "Spam report", 7, True, "danger", False)

ALL: tuple[Status, ...] = (SENDING, PROCESSED, DEFERRED, DELIVERED, OPEN, CLICKED, FAILED, SPAM_REPORT)
BY_KEY: dict[str, Status] = {status.key: status for status in ALL}

# Sending or Processed for longer than this is stuck (the help article's ten minutes): support is
# alerted automatically, and the clinic need not write.
STUCK_AFTER_SECONDS = 10 * 60
# A stuck email sent longer ago than this: the clinic should contact support now, quoting its reference.
CONTACT_SUPPORT_AFTER_SECONDS = 60 * 60

# Our own event kinds (provider modules translate their wire names into these). A kind that
# maps to None is kept on the timeline but never changes the status.
STATUS_FOR_EVENT: dict[str, Status | None] = {
    "sending": SENDING,  # our own: the email was queued for the provider
    "processed": PROCESSED,
    "deferred": DEFERRED,
    "delivered": DELIVERED,
    "open": OPEN,
    "click": CLICKED,
    # The receiving server took the email, then filed it as spam (Postmark's SpamNotification
    # bounce): proof of delivery, not a failure, and not the client's own spam report.
    "spam_filtered": DELIVERED,
    "bounce": FAILED,
    "dropped": FAILED,
    "rejected": FAILED,  # the provider refused the send request itself (400, 413)
    "expired": FAILED,  # our own: deferred for longer than the provider retries
    "spamreport": SPAM_REPORT,
    "unsubscribe": None,
    "group_unsubscribe": None,
    "group_resubscribe": None,
    "unknown": None,
}

EVENT_KINDS: tuple[str, ...] = tuple(STATUS_FOR_EVENT)


def lifecycle_position(kind: str) -> int:
    """Order events that share a timestamp (providers report whole seconds) as an email lives them."""
    return EVENT_KINDS.index(kind) if kind in STATUS_FOR_EVENT else len(EVENT_KINDS)


# Human words for the timeline, one per event kind.
EVENT_LABELS: dict[str, str] = {
    "sending": "Queued for sending",
    "processed": "Accepted by the email provider",
    "deferred": "Deferred by the receiving server",
    "delivered": "Delivered to the receiving server",
    "open": "Opened",
    "click": "Link clicked",
    "spam_filtered": "Filed as spam by the client's mail server",
    "bounce": "Bounced",
    "dropped": "Dropped by the email provider",
    "rejected": "Refused by the email provider",
    "expired": "Given up after repeated deferrals",
    "spamreport": "Reported as spam by the client",
    "unsubscribe": "Unsubscribed",
    "group_unsubscribe": "Unsubscribed from this kind of email",
    "group_resubscribe": "Subscribed again",
    "unknown": "Other provider event",
}


@dataclass(frozen=True)
class HandoverNote:
    """What the log says beside the status while our handover to the provider is unsettled (the
    status stays Sending until the provider reports on the email)."""

    text: str  # "{reference}" is replaced by the email's reference
    told_support: bool  # support is alerted at once (otherwise only once the email is stuck)
    advice: str  # what the clinician should do, last


# Email.send_state -> its note; states without one say nothing beyond the status.
HANDOVER_NOTES: dict[str, HandoverNote] = {
    "in_doubt": HandoverNote(
        "The email provider's answer to this email was lost, so we are checking whether the provider "
        "received it. It is sent again only if the provider has no record of it, so the client does not "
        "get it twice.",
        told_support=False,
        advice="You do not need to do anything.",
    ),
    "held": HandoverNote(
        "The email provider accepted it but has not reported on it: it was handed over twice and the "
        "provider's records show neither, so it is not sent again and the client does not get it twice. "
        "Support has been told automatically and will look into it (reference {reference}).",
        told_support=True,
        advice="If the client must have it soon, reach them another way.",
    ),
}


def handover_note(send_state: str) -> HandoverNote | None:
    """Return what the log says about an email whose handover is in this state, if anything."""
    return HANDOVER_NOTES.get(send_state)


def get(key: str) -> Status:
    """Return the status with this key; KeyError for an unknown key."""
    return BY_KEY[key]


def status_for_event(kind: str) -> Status | None:
    """Return the status an event of this kind proves, or None for timeline-only events."""
    return STATUS_FOR_EVENT.get(kind)


def current_status(event_kinds: list[str] | set[str] | tuple[str, ...]) -> Status:
    """Return the status proved by a set of events: the highest rank among them."""
    reached = [status_for_event(kind) for kind in event_kinds]
    return max((status for status in reached if status), key=lambda status: status.rank, default=SENDING)
