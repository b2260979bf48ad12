"""How Postmark's Messages API shows a simulated message: its search entry and its MessageEvents."""

from __future__ import annotations

from typing import Any

from webapp.event_kinds import EventKind
from webapp.sandbox import tracking
from webapp.sandbox.postmark import webhooks
from webapp.sandbox.scenarios import MX_SERVER, SANDBOX_IP, Visible
from webapp.sandbox.store import SimMessage

# Neutral steps -> Messages API MessageEvents Types (spam complaints and notices show as bounces).
MESSAGE_EVENT_TYPES: dict[EventKind, str] = {
    EventKind.DELIVERED: "Delivered",
    EventKind.DEFERRED: "Transient",
    EventKind.OPENED: "Opened",
    EventKind.CLICKED: "LinkClicked",
    EventKind.BOUNCED: "Bounced",
    EventKind.REPORTED_AS_SPAM: "Bounced",
    EventKind.FILED_AS_SPAM: "Bounced",
}


def summary(message: SimMessage, events: list[Visible]) -> dict[str, Any]:
    """A message as the outbound search lists it."""
    processed = any(event.step.event == EventKind.PROCESSED for event in events)
    return {
        "Tag": message.categories[0] if message.categories else "",
        "MessageID": message.msg_id,
        "MessageStream": "outbound",
        "To": [{"Email": message.to_email, "Name": None}],
        "Cc": [],
        "Bcc": [],
        "Recipients": [message.to_email],
        "ReceivedAt": webhooks.timestamp(message.accepted_at),
        "From": message.from_email,
        "Subject": message.subject,
        "Attachments": [],
        "Status": "Sent" if processed else "Queued",
        "TrackOpens": message.opens_tracked,
        "TrackLinks": _track_links(message),
        "Metadata": dict(message.custom_args),
        "Sandboxed": False,
    }


def message_event(message: SimMessage, event: Visible) -> dict[str, Any]:
    """One MessageEvents entry of the details answer."""
    step = event.step
    kind = MESSAGE_EVENT_TYPES[step.event]
    if kind in ("Delivered", "Transient"):
        details: dict[str, Any] = {
            "DeliveryMessage": "smtp;250 2.0.0 OK" if kind == "Delivered" else f"smtp;{step.reason}",
            "DestinationServer": MX_SERVER,
            "DestinationIP": SANDBOX_IP,
        }
    elif kind == "Bounced":
        details = {
            "Summary": webhooks.BOUNCE_TYPES[step.event][1],
            "BounceID": str(webhooks.bounce_id(message.msg_id, event.index)),
        }
    elif kind == "Opened":
        details = {"Summary": "Email opened"}
    else:
        details = {
            "Summary": f"Tracked link '{step.url}' was clicked.",
            "Link": step.url,
            "ClickLocation": webhooks.click_location(message, step.url or ""),
        }
    return {
        "Recipient": message.to_email,
        "Type": kind,
        "ReceivedAt": webhooks.timestamp(event.at, event.index),
        "Details": details,
    }


def _track_links(message: SimMessage) -> str:
    """The TrackLinks its tracked links show it was sent with."""
    in_html = {url for url in message.links if tracking.in_html(message.html, url)}
    parts = (bool(in_html), len(in_html) < len(message.links))
    return {(True, True): "HtmlAndText", (True, False): "HtmlOnly", (False, True): "TextOnly"}.get(
        parts, "None"
    )
