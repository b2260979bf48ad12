"""Postmark's webhooks, simulated: one event per POST, in its record shapes, with the HTTP Basic
credentials Postmark sends from the webhook URL (it signs nothing).

Postmark posts nothing for "processed" (acceptance is the signal), and follows a hard bounce or a
spam complaint with a SubscriptionChange record. A SpamNotification (the receiving server took the
email, then filed it as spam) suppresses nothing, so none follows it.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from webapp.event_kinds import EventKind
from webapp.sandbox import tracking
from webapp.sandbox.base import Pending, PostedKeys
from webapp.sandbox.scenarios import CLIENT_IP, USER_AGENT, Visible
from webapp.sandbox.store import SimMessage, Store

SERVER_ID = 23
CREDENTIALS = "webhook_basic_auth"  # its meta key in the state file: "username:password"
USERNAME = "postmark-sandbox"
# Postmark's examples come with a US Eastern offset and 7 fractional digits.
EASTERN = timezone(timedelta(hours=-5))

# Neutral steps -> bounce records: Type, Name, and Description (Postmark's bounce-type table).
BOUNCE_TYPES: dict[EventKind, tuple[str, str, str]] = {
    EventKind.DEFERRED: (
        "Transient",
        "Message delayed",
        "The server could not temporarily deliver your message (ex: Message is delayed due to network "
        "troubles).",
    ),
    EventKind.BOUNCED: (
        "HardBounce",
        "Hard bounce",
        "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    ),
    EventKind.REPORTED_AS_SPAM: (
        "SpamComplaint",
        "Spam complaint",
        "The subscriber explicitly marked this email as spam.",
    ),
    EventKind.FILED_AS_SPAM: (
        "SpamNotification",
        "Spam notification",
        "The message was delivered, but was either blocked by the user, or classified as spam, bulk mail, "
        "or had rejected content.",
    ),
}
# The webhook example gives SpamComplaint TypeCode 512; the Bounce API's type table, 100001.
WEBHOOK_TYPE_CODES = {"Transient": 2, "HardBounce": 1, "SpamComplaint": 512, "SpamNotification": 512}
API_TYPE_CODES = {**WEBHOOK_TYPE_CODES, "SpamComplaint": 100001}
# A receiving server's bare notice: no reason given, so Postmark's Description says what happened.
BARE_DETAILS = "action: failed"


def credentials(store: Store) -> tuple[str, str]:
    """Return (username, password) the sandbox puts in its webhook requests, made once per state file."""
    value = store.meta(CREDENTIALS, make=lambda: f"{USERNAME}:{secrets.token_urlsafe(32)}")
    username, _, password = value.partition(":")
    return username, password


def timestamp(unix_seconds: float, index: int = 0) -> str:
    """Format a time as Postmark does: ISO 8601 with 7 fractional digits and a -05:00 offset."""
    moment = datetime.fromtimestamp(unix_seconds, UTC).astimezone(EASTERN)
    ticks = (index * 1_234_567 + 4_468_803) % 10_000_000  # whole seconds stay the same
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ticks:07d}" + "-05:00"


def bounce_id(msg_id: str, index: int) -> int:
    """A stable numeric bounce ID (Postmark's may need 64 bits)."""
    return int.from_bytes(f"{msg_id}#{index}".encode()[-7:], "big") + 4_000_000_000


def posts(
    pending: list[Pending], username: str, password: str
) -> Iterator[tuple[bytes, dict[str, str], PostedKeys]]:
    """One POST per record, oldest first; the keys of an event travel with its last record.

    An event Postmark posts nothing for comes with an empty body: the simulator marks it done.
    """
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Postmark",
        "Authorization": f"Basic {token}",
    }
    for item in pending:
        records = event_records(item.message, item.event)
        key = (item.message.msg_id, item.event.index)
        if not records:
            yield b"", {}, [key]  # nothing to post ("processed"): marked as done without a request
            continue
        for position, record in enumerate(records):
            last = position == len(records) - 1
            yield json.dumps(record).encode(), headers, [key] if last else []


def _common(message: SimMessage) -> dict[str, Any]:
    return {
        "MessageID": message.msg_id,
        "ServerID": SERVER_ID,
        "MessageStream": "outbound",  # the sandbox keeps one stream's lists for every stream
        "Tag": message.categories[0] if message.categories else "",
        "Metadata": {key: str(value) for key, value in message.custom_args.items()},
    }


def event_records(message: SimMessage, event: Visible) -> list[dict[str, Any]]:
    """The webhook records Postmark would post for one neutral event."""
    step = event.step
    at = timestamp(event.at, event.index)
    common = _common(message)
    if step.event == EventKind.DELIVERED:
        return [
            {
                "RecordType": "Delivery",
                **common,
                "Recipient": message.to_email,
                "DeliveredAt": at,
                "Details": "smtp;250 2.0.0 OK",
            }
        ]
    if step.event in BOUNCE_TYPES:
        record = {
            "RecordType": "SpamComplaint" if step.event == EventKind.REPORTED_AS_SPAM else "Bounce",
            **common,
            **bounce_record(message, event, WEBHOOK_TYPE_CODES),
        }
        if not record["Inactive"]:
            return [record]  # nothing suppressed: no SubscriptionChange
        change = {
            "RecordType": "SubscriptionChange",
            **common,
            "ChangedAt": at,
            "Recipient": message.to_email,
            "Origin": "Recipient",
            "SuppressSending": True,
            "SuppressionReason": "SpamComplaint"
            if step.event == EventKind.REPORTED_AS_SPAM
            else "HardBounce",
        }
        return [record, change]
    if step.event in (EventKind.OPENED, EventKind.CLICKED):
        record = {
            "RecordType": "Open" if step.event == EventKind.OPENED else "Click",
            **common,
            "Recipient": message.to_email,
            "ReceivedAt": at,
            # Postmark flags no machine opens: a proxy's fetch looks like any other.
            "Platform": "Unknown" if step.machine else "WebMail",
            "UserAgent": USER_AGENT,
            "Client": {"Name": "Sandbox Mail", "Company": "Sandbox", "Family": "Sandbox"},
            "OS": {"Name": "unknown", "Company": "unknown", "Family": "unknown"},
            "Geo": {"IP": CLIENT_IP},
        }
        if step.event == EventKind.OPENED:
            record.update(FirstOpen=True, ReadSeconds=0)
        else:
            record.update(ClickLocation=click_location(message, step.url or ""), OriginalLink=step.url)
        return [record]
    return []  # processed (and dropped, which Postmark refuses at send time instead)


def click_location(message: SimMessage, url: str) -> str:
    """Where Postmark says a tracked link was: "HTML" or "Text"."""
    return "HTML" if tracking.in_html(message.html, url) else "Text"


def bounce_record(message: SimMessage, event: Visible, type_codes: dict[str, int]) -> dict[str, Any]:
    """A bounce as Postmark records it (the webhook adds RecordType and Metadata)."""
    step = event.step
    bounce_type, name, description = BOUNCE_TYPES[step.event]
    details = f"smtp;{step.reason}" if step.reason else ""
    return {
        "ID": bounce_id(message.msg_id, event.index),
        "Type": bounce_type,
        "TypeCode": type_codes[bounce_type],
        "Name": name,
        "Tag": message.categories[0] if message.categories else "",
        "MessageID": message.msg_id,
        "ServerID": SERVER_ID,
        "MessageStream": "outbound",
        "Description": description,
        "Details": BARE_DETAILS if step.event == EventKind.FILED_AS_SPAM else details,
        "Email": message.to_email,
        "From": message.from_email,
        "BouncedAt": timestamp(event.at, event.index),
        "DumpAvailable": False,
        # Only a hard bounce and a spam complaint make Postmark suppress the address.
        "Inactive": step.event in (EventKind.BOUNCED, EventKind.REPORTED_AS_SPAM),
        "CanActivate": step.event != EventKind.REPORTED_AS_SPAM,
        "Subject": message.subject,
    }
