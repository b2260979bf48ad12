"""What every email provider module offers, in our own words.

Provider modules turn the provider's wire format into these objects and back. They know
nothing of Flask or the database: services hand them plain values and store what they return.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from webapp.event_kinds import EventKind, event_kind


@dataclass(frozen=True)
class Attachment:
    """A file sent with an email (a reminder's calendar entry)."""

    filename: str
    content_type: str  # the MIME type, e.g. text/calendar
    content: bytes


# An <a> whose href is a web address: what a provider's click tracking rewrites. Linear: no nesting.
_WEB_LINK = re.compile(r"""<a\s[^>]*?href\s*=\s*["']?https?://""", re.IGNORECASE)


@dataclass(frozen=True)
class OutgoingMessage:
    """One email to one recipient, ready for the provider."""

    app_message_id: str
    to_address: str
    to_name: str
    from_address: str
    from_name: str
    subject: str
    body_text: str
    category: str  # the kind of message, for the provider's statistics
    reply_to: str = ""  # the clinic's address: replies reach it, not the platform
    body_html: str = ""  # empty: a text-only email
    attachments: tuple[Attachment, ...] = ()

    @property
    def track_opens(self) -> bool:
        """Whether to ask for open tracking: providers can only track an open with an HTML part (a pixel)."""
        return bool(self.body_html)

    @property
    def track_links(self) -> bool:
        """Whether to ask for click tracking: only the HTML part's links are rewritten, so it needs one."""
        return bool(self.body_html) and _WEB_LINK.search(self.body_html) is not None


# Why a provider would not send to an address, in our own words (the provider's text is kept beside).
RejectReason = Literal["bounced_address", "spam_report", "invalid_address", "unsubscribed", "other"]

SendOutcome = Literal[
    "accepted", "rejected", "rate_limited", "unauthorized", "unavailable", "in_doubt", "not_sent"
]


@dataclass(frozen=True)
class SendResult:
    """What became of one send request.

    accepted: the provider took it (provider_message_id names the request);
    rejected: it never will (error says why, in the provider's own words);
    rate_limited: try again after retry_after seconds;
    unauthorized: the API key is wrong or lacks permission (an operator must act);
    unavailable: the provider answered with a server error (it may still have taken the message);
    in_doubt: no answer (timeout, broken connection): it may or may not have taken it;
    not_sent: a batch stopped before asking the provider about it (safe to send again: at once, or
    after retry_after seconds when an earlier request of the batch met a failing provider).
    """

    outcome: SendOutcome
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    reject_reason: RejectReason | None = None  # set when rejected: why, in our words
    # When the provider says it took the message, for a provider whose acceptance is its only
    # "processed" signal (Postmark posts no such event); None when acceptance is not that signal.
    accepted_at: datetime | None = None


@dataclass(frozen=True)
class ProviderEvent:
    """One thing that happened to one email, as any provider reports it."""

    kind: EventKind  # our word for it; a string naming one is taken as that kind
    occurred_at: datetime
    app_message_id: str | None = None
    # The provider's id of the send request, as SendResult.provider_message_id gave it (what
    # Email.provider_message_id holds): events without our id find their email by it.
    provider_message_id: str | None = None
    recipient: str | None = None
    reason: str | None = None
    url: str | None = None
    attempt: int | None = None
    machine: bool = False
    reject_reason: RejectReason | None = None  # for "dropped"/"bounce"-like kinds: why, in our words
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # A closed set: an adapter's slip fails where the event is made, not stored as "unknown".
        object.__setattr__(self, "kind", event_kind(self.kind))

    @property
    def dedupe_key(self) -> str:
        """A key that is the same for the same event from a webhook retry or from polling.

        Services resolve the owning email first and key on its app_message_id, so a copy that came
        with our id and one that came with the provider's only collapse. Unresolved, the provider's
        id names a send request that may carry several recipients: the recipient is part of the key.
        """
        if self.app_message_id:
            owner = self.app_message_id
        else:
            owner = f"{self.provider_message_id or ''}\x1e{(self.recipient or '').strip().lower()}"
        parts = (
            owner,
            self.kind,
            str(int(self.occurred_at.timestamp())),
            self.url or "",
            str(self.attempt or ""),
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready copy, for keeping an event until its email is known."""
        # Not asdict(): it deep-copies `raw`, which is JSON already (a third of a millisecond an event).
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        return {**values, "occurred_at": self.occurred_at.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProviderEvent:
        """Rebuild an event kept with to_dict."""
        return cls(**{**data, "occurred_at": datetime.fromisoformat(data["occurred_at"])})


@dataclass(frozen=True)
class PollRef:
    """What the poller knows of one email it asks the provider about."""

    app_message_id: str
    provider_message_id: str


@dataclass(frozen=True)
class PollResult:
    """The events the provider reported for the emails asked about, by app_message_id."""

    events: dict[str, list[ProviderEvent]]
    requests_made: int = 0  # against the provider's rate budget
    rate_limited_for: float | None = None  # seconds to wait before polling again
    error: str | None = None  # why polling stopped early (other than a rate limit), for the operator
    # The emails (app_message_ids) whose whole state this answer reports; the others were not reached.
    covered: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SentRef:
    """An email whose send may or may not have reached the provider."""

    app_message_id: str
    to_address: str


@dataclass(frozen=True)
class AcceptedResult:
    """What the provider's records say about sends that are in doubt."""

    # app_message_id -> the provider's id of the request that carried it (None if not given)
    found: dict[str, str | None]
    # The emails (app_message_ids) the answer fully covers: those not found were never accepted
    # (as far as the provider's records go yet); the others were not asked about.
    checked: frozenset[str] = frozenset()
    requests_made: int = 0
    rate_limited_for: float | None = None  # seconds to wait before asking again
    error: str | None = None  # why the provider could not answer, for the operator


@dataclass(frozen=True)
class RecordsCost:
    """What reading the provider's message records costs: status polls and in-doubt lookups.

    Services budget every worker's requests by it (webapp/services/budget.py).
    """

    # Requests a minute the records API allows: the documented limit, or, where the provider
    # publishes none (documented=False), a pace we keep to and back off from on its 429.
    requests_per_minute: int
    # How many in-doubt emails one find_accepted request can settle.
    emails_per_lookup: int
    documented: bool = True


@dataclass(frozen=True)
class WebhookVerdict:
    """Whether a webhook request really came from the provider, and how to spot a replay of it.

    replay_key/replay_ttl: when the provider signs with a timestamp, a copy posted again within
    replay_ttl seconds is a replay; None when the provider gives nothing to key on (its events
    are stored once each anyway).
    skew_seconds: for a correctly signed request, how far our clock is ahead of the time the
    provider signed (negative: behind), whether or not that is within the tolerance; None when
    the provider signs no time or the signature is wrong.
    """

    authentic: bool
    replay_key: str | None = None
    replay_ttl: float = 0.0
    skew_seconds: float | None = None


@dataclass(frozen=True)
class InboundMail:
    """One mail to the support address, as a provider's inbound webhook posted it, in our words.

    raw: the RFC 5322 message, byte for byte with CRLF line ends: what alone can prove a request.
    None when the provider sent only its own parse of the mail: then `parsed` holds its from, to,
    subject, text and headers, and `raw_hint` says which of the provider's settings sends the raw
    message. The receiver's DKIM and SPF words are the provider's: support reads them, nothing
    trusts them.
    """

    raw: bytes | None
    receiver: str  # the provider's name, as support reads it
    receiver_dkim: str = ""  # the provider's own DKIM result, as it wrote it
    receiver_dkim_passes: tuple[str, ...] = ()  # the signing domains it says passed
    spf: str = ""
    parsed: dict[str, str] = field(default_factory=dict)
    raw_hint: str = ""


class InboundTooLarge(ValueError):
    """An inbound-mail post holds more than any genuine one (too many form parts, for one)."""


# What reads a wire format's inbound-mail post: (Content-Type, the exact body bytes) -> the mail;
# ValueError when the post is malformed (InboundTooLarge when it is too big). Needs no credentials.
InboundReader = Callable[[str, bytes], InboundMail]


LiftOutcome = Literal["lifted", "provider_request_needed"]


@dataclass(frozen=True)
class LiftResult:
    """What came of asking the provider to take an address off its spam-report list.

    lifted: sending may resume; provider_request_needed: the provider refuses to lift it through
    its API (detail says what to ask its support for), so support must record when that is done.
    """

    outcome: LiftOutcome
    detail: str = ""


class ProviderError(RuntimeError):
    """The provider could not answer a request (other than sending)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EmailProvider(ABC):
    """The contract of an email provider module."""

    name: str
    max_batch: int = 1  # messages one send_batch call may carry
    # What an operator must check when the provider refuses our credentials (an operator alert says it).
    credentials_hint: str = "the email provider's API key setting"
    # Where the provider keeps the records that settle a send in doubt (an operator alert says it).
    records_hint: str = "the email provider's message records and the event webhook"
    # What its records API allows and what a lookup covers (a cautious default: one email a request).
    records_cost: RecordsCost = RecordsCost(requests_per_minute=6, emails_per_lookup=1, documented=False)

    @abstractmethod
    def send(self, message: OutgoingMessage) -> SendResult:
        """Hand one message to the provider."""

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """Hand several messages over; one result per message, in the same order."""
        return [self.send(message) for message in messages]

    @abstractmethod
    def poll(self, refs: list[PollRef], request_budget: int) -> PollResult:
        """Return what the provider knows about these emails, using at most request_budget requests."""

    @abstractmethod
    def find_accepted(self, refs: list[SentRef], request_budget: int) -> AcceptedResult:
        """Say which of these messages the provider ever accepted, using at most request_budget requests."""

    @abstractmethod
    def spam_reports(self, since: datetime | None = None) -> list[tuple[str, datetime]]:
        """Return the addresses on the provider's spam-report list, with when they reported."""

    @abstractmethod
    def remove_spam_report(self, address: str) -> LiftResult:
        """Ask the provider to take one address off its spam-report list."""

    @abstractmethod
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookVerdict:
        """Say whether an event webhook request (headers, exact body bytes) came from the provider."""

    @abstractmethod
    def parse_webhook(self, body: bytes) -> list[ProviderEvent]:
        """Turn a verified webhook body into events; raise ValueError when it is malformed."""

    def check_webhook(self, body: bytes) -> int:
        """Check that a verified body is well-formed (ValueError if not); return how many events it holds.

        A cheap check for the webhook route, which stores the body for a job to parse; an adapter
        may do it without building the events.
        """
        return len(self.parse_webhook(body))
