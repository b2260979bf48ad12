"""Why a receiving server would not take an email, in plain words, whatever the provider said it in.

Providers pass on the receiving server's SMTP answer ("550 5.1.1 …", "smtp;452 4.2.2 …", SendGrid's
"500 unknown recipient") or, when that answer is bare ("action: failed"), a description of their
own. Adapters keep that text as the event's `reason`; this module reads it when it is shown, so
rows stored before it existed read the same way. It imports nothing of the app (adapters use it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAILBOX_FULL = "mailbox_full"
NO_SUCH_ADDRESS = "no_such_address"


@dataclass(frozen=True)
class PlainReason:
    """One reason a clinician can act on: what happened, and what to do about it."""

    key: str
    words: str  # starts in lower case: it ends a sentence such as "Not delivered: …"
    advice: str  # what to do, for the same sentence (in brackets after the words)


PLAIN: dict[str, PlainReason] = {
    MAILBOX_FULL: PlainReason(
        MAILBOX_FULL,
        "the client's mailbox is full",
        "the address is right: try again later, or call the client and ask them to make room",
    ),
    NO_SUCH_ADDRESS: PlainReason(
        NO_SUCH_ADDRESS,
        "the address does not exist",
        "check it with the client: it may be old or mistyped",
    ),
}
REFUSED = "the receiving email provider refused it"

# "smtp;", "X-Postfix;": the diagnostic type a delivery status notification puts before the answer.
_DIAGNOSTIC_TYPE = re.compile(r"^\s*(?:smtp|x-[a-z0-9-]{1,20})\s*;\s*", re.IGNORECASE)
# Rows stored before the adapter stopped doing so end in Postmark's bounce Type: "… (HardBounce)".
_TYPE_SUFFIX = re.compile(
    r"\s*\((?:HardBounce|SoftBounce|Transient|DnsError|SpamNotification|BadEmailAddress|Blocked"
    r"|DMARCPolicy|VirusNotification|SMTPApiError|TemplateRenderingFailed|ManuallyDeactivated"
    r"|Unconfirmed|Unknown|InboundError)\)$"
)
_BASIC_CODE = re.compile(r"^\s*([245]\d\d)(?=[\s-]|$)")
_ENHANCED_CODE = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
# Examples a provider lists in its description of a bounce type ("(ex: unknown user, mailbox not
# found)"): possibilities, not what this server said.
_EXAMPLES = re.compile(r"\((?:ex|e\.g|i\.e)\b[^)]*\)", re.IGNORECASE)
_FULL_WORDS = re.compile(
    r"mailbox (?:is )?full|mailbox.{0,40}over ?quota|over ?quota|quota exceeded|exceeded (?:its |the )?quota"
    r"|insufficient storage|storage allocation|out of storage|mailbox size limit",
    re.IGNORECASE,
)
_UNKNOWN_WORDS = re.compile(
    r"does ?n[o']t exist|user ?unknown|unknown (?:user|recipient|address|mailbox)"
    r"|no such (?:user|recipient|mailbox|address|account)"
    r"|(?:mailbox|recipient|user|address|account) (?:was )?not found|invalid recipient"
    r"|no mailbox (?:here )?by that name|addressee unknown|does ?n[o']t have an? [\w.-]+ account",
    re.IGNORECASE,
)
FULL_CODES = frozenset({"4.2.2", "5.2.2"})
NO_SUCH_CODES = frozenset({"5.1.1", "5.1.2", "5.1.10"})
# Words a bare answer is made of: a notification's field names and its action, nothing about why.
_BARE_WORDS = frozenset(
    {
        "action",
        "status",
        "failed",
        "failure",
        "delayed",
        "delivered",
        "relayed",
        "expanded",
        "bounced",
        "bounce",
    }
)


def answer(text: str | None) -> str:
    """Return a server's answer as shown: without the notification's "smtp;" and outer spaces."""
    said = _DIAGNOSTIC_TYPE.sub("", (text or "").strip(), count=1)
    return _TYPE_SUFFIX.sub("", said).strip()


def is_bare(text: str | None) -> bool:
    """Whether an answer says nothing of why ("action: failed", "smtp;550 5.0.0", empty)."""
    words = re.sub(r"[\d.:;,()\-]+", " ", answer(text).lower()).split()
    return all(word in _BARE_WORDS or word == "smtp" for word in words)


def best_text(details: str | None, description: str | None) -> str | None:
    """Pick what a bounce record says: the server's answer, else (when that is bare) the provider's
    own description, else whatever there is."""
    if details and not is_bare(details):
        return details
    return description or details or None


def classify(text: str | None, reject_reason: str | None = None) -> PlainReason | None:
    """Return the plain reason an answer gives, or None when it is none of the known ones.

    An enhanced status code decides when there is one; else the basic code (452/552 is a full
    mailbox) and the words. `reject_reason` "bounced_address" (a provider's own "hard bounce"
    verdict, Postmark's HardBounce) stands for an unknown address when the text says nothing else.
    """
    said = _EXAMPLES.sub("", answer(text))
    codes = set(_ENHANCED_CODE.findall(said))
    if codes & FULL_CODES:
        return PLAIN[MAILBOX_FULL]
    if codes & NO_SUCH_CODES:
        return PLAIN[NO_SUCH_ADDRESS]
    if _FULL_WORDS.search(said):
        return PLAIN[MAILBOX_FULL]
    if _UNKNOWN_WORDS.search(said):
        return PLAIN[NO_SUCH_ADDRESS]
    basic = _BASIC_CODE.match(said)
    if basic and basic.group(1) in ("452", "552") and not codes:
        return PLAIN[MAILBOX_FULL]  # RFC 5321: "insufficient system storage", "exceeded storage allocation"
    if reject_reason == "bounced_address" and not codes:
        return PLAIN[NO_SUCH_ADDRESS]
    return None


def failure_words(text: str | None, reject_reason: str | None = None) -> str:
    """Say why a bounce failed, for a sentence such as "Not delivered: …" (no server jargon when the
    reason is a known one; the server's answer otherwise)."""
    plain = classify(text, reject_reason)
    if plain is not None:
        return f"{plain.words} ({plain.advice})"
    return answer(text) or REFUSED


def timeline_words(text: str | None, reject_reason: str | None = None) -> str:
    """Say why on a timeline line: the plain reason, with the server's own answer for support."""
    plain = classify(text, reject_reason)
    said = answer(text)
    if plain is None:
        return said or REFUSED
    return f"{plain.words} ({said})" if said else plain.words


def failure_key(events: Sequence[Any]) -> str | None:
    """Return the plain reason's key of a failed email's last failure, when it is a bounce with one
    (events in stored order: anything with kind, reason and reject_reason)."""
    for event in reversed(events):
        if event.kind == "bounce":
            plain = classify(event.reason, event.reject_reason)
            return plain.key if plain else None
        if event.kind in ("dropped", "rejected", "expired"):
            return None
    return None
