"""What the Postmark sandbox keeps of a message it took: its parts, and what Postmark tracks in it."""

from __future__ import annotations

from typing import Any

from webapp.sandbox import scenarios, tracking
from webapp.sandbox.postmark import validation
from webapp.sandbox.store import SimMessage


def _tracking(message: dict[str, Any], text: str, html: str) -> tracking.Tracking:
    """What Postmark tracks in a message: TrackOpens and TrackLinks as sent (a field left out is
    the server's setting: off in the sandbox, as on a new Postmark server)."""
    links = message.get("TrackLinks") or "None"
    return tracking.tracking(
        html,
        text,
        opens=message.get("TrackOpens") is True,
        html_links=links in ("HtmlAndText", "HtmlOnly"),
        text_links=links in ("HtmlAndText", "TextOnly"),
    )


def sim_message(message: dict[str, Any], email: str, msg_id: str, request_id: str, now: float) -> SimMessage:
    """What the sandbox keeps of a message Postmark took, for one of its recipients."""
    metadata = message.get("Metadata") or {}
    text = message["TextBody"] if isinstance(message.get("TextBody"), str) else ""
    html = message["HtmlBody"] if isinstance(message.get("HtmlBody"), str) else ""
    tracked = _tracking(message, text, html)
    return SimMessage(
        msg_id=msg_id,
        request_id=request_id,
        to_email=email,
        from_email=validation.address_of(message["From"]) or "",
        subject=message.get("Subject") or "",
        categories=(message["Tag"],) if message.get("Tag") else (),
        # Postmark turns metadata values into text.
        custom_args={str(key): str(value) for key, value in metadata.items()},
        accepted_at=now,
        scenario=scenarios.scenario_for(email),
        text=text,
        html=html,
        opens_tracked=tracked.opens,
        links=tracked.links,
    )
