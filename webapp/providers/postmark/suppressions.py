"""Postmark's suppression list of our message stream: spam complaints, and asking to lift one.

A spam complaint cannot be lifted through the API; only Postmark's support can reactivate it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from webapp.providers.base import LiftResult, ProviderError, RejectReason
from webapp.providers.http import ProviderApi, json_or_none
from webapp.providers.postmark.translate import error_text, parse_time, text

SUPPRESSION_REASONS: dict[str, RejectReason] = {
    "HardBounce": "bounced_address",
    "SpamComplaint": "spam_report",
}

LIFT_DETAIL = (
    "Postmark keeps spam complaints on its suppression list and lets only its own support reactivate "
    "them. Contact Postmark support (from the Postmark account, as a user with access to the server) "
    'and ask them to reactivate {address} on the message stream "{stream}" of our server, saying '
    "the recipient has asked in writing, from that address, to receive our emails again. Record it "
    "here once Postmark confirms."
)


def spam_reports(api: ProviderApi, stream: str, since: datetime | None = None) -> list[tuple[str, datetime]]:
    """Return the addresses Postmark suppresses for a spam complaint on our message stream."""
    params: dict[str, str] = {"SuppressionReason": "SpamComplaint"}
    if since is not None:
        params["fromdate"] = since.astimezone(UTC).strftime("%Y-%m-%d")
    reports = []
    for entry in dump(api, stream, params):
        try:
            created = parse_time(entry.get("CreatedAt"))
            address = entry["EmailAddress"].strip().lower()
        except (KeyError, AttributeError, ValueError):
            raise ProviderError(f"Postmark's suppression list has an unreadable entry: {entry!r}") from None
        if entry.get("SuppressionReason", "SpamComplaint") == "SpamComplaint":
            reports.append((address, created))
    return reports


def remove_spam_report(api: ProviderApi, stream: str, address: str) -> LiftResult:
    """Ask Postmark to delete the address's suppression; a spam complaint it refuses to lift."""
    path = f"/message-streams/{quote(stream, safe='')}/suppressions/delete"
    response = api.request("POST", path, json={"Suppressions": [{"EmailAddress": address}]})
    document = json_or_none(response)
    if response.status_code != 200 or not isinstance(document, dict):
        raise ProviderError(
            f"Postmark did not remove {address} from the suppression list "
            f"(HTTP {response.status_code}: {error_text(response)})"
        )
    wanted = address.strip().lower()
    for item in document.get("Suppressions") or []:
        if not isinstance(item, dict) or str(item.get("EmailAddress", "")).strip().lower() != wanted:
            continue
        if item.get("Status") == "Deleted":
            return LiftResult("lifted")
        if item.get("Status") == "Failed":
            said = text(item.get("Message")) or "no reason given"
            return LiftResult(
                "provider_request_needed",
                f"Postmark refused: “{said}” " + LIFT_DETAIL.format(address=address, stream=stream),
            )
    raise ProviderError(f"Postmark's answer did not mention {address}: {response.text[:300]}")


def dump(api: ProviderApi, stream: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Read the suppressions dump of our stream (it pages by date: one call returns all)."""
    path = f"/message-streams/{quote(stream, safe='')}/suppressions/dump"
    document = api.get_json(path, params=params)
    entries = document.get("Suppressions") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ProviderError("Postmark's suppression list was not a Suppressions array")
    return [entry for entry in entries if isinstance(entry, dict)]


def reject_reason_of(entry: dict[str, Any]) -> RejectReason:
    """Say in our words why a suppression entry holds its address inactive."""
    reason = entry.get("SuppressionReason")
    if reason in SUPPRESSION_REASONS:
        return SUPPRESSION_REASONS[reason]
    if reason == "ManualSuppression" and entry.get("Origin") == "Recipient":
        return "unsubscribed"  # the recipient unsubscribed through Postmark's link
    return "other"
