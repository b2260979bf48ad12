"""Postmark's Messages API: what became of our emails (poll) and whether a send in doubt was
taken (find_accepted).

No webhook says "processed": acceptance is the signal, and the Messages API's details confirm it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from webapp.event_kinds import EventKind
from webapp.providers.base import AcceptedResult, PollRef, PollResult, ProviderEvent, SentRef
from webapp.providers.http import ProviderApi, RequestFailed
from webapp.providers.postmark.translate import APP_ID_KEY, bounce_event, optional_time, text

SEARCH_PAGE = 50
# Postmark publishes no request limit for its Messages API, only that a 429 means "slow down"; the
# search filters on one metadata value, so each in-doubt email costs one request. Four a second
# keeps a backlog of a few hundred moving without bursts; a 429 holds every worker back.
RECORDS_REQUESTS_PER_MINUTE = 240

# Messages API MessageEvents Types -> our event kinds.
MESSAGE_EVENT_KINDS: dict[str, EventKind] = {
    "Delivered": EventKind.DELIVERED,
    "Transient": EventKind.DEFERRED,
    "Opened": EventKind.OPENED,
    "LinkClicked": EventKind.CLICKED,
    "Bounced": EventKind.BOUNCED,
    "SubscriptionChanged": EventKind.OTHER,
}
# Messages API Status values that mean Postmark has the message (our Processed).
ACCEPTED_STATUSES = frozenset({"Sent", "Queued", "Processed"})


def poll(api: ProviderApi, refs: list[PollRef], request_budget: int) -> PollResult:
    """Fetch each message's details (its MessageEvents) while the budget lasts."""
    events: dict[str, list[ProviderEvent]] = {}
    covered: set[str] = set()
    requests_made = 0
    for ref in refs:
        if requests_made >= request_budget:
            break
        if not ref.provider_message_id:
            continue  # without Postmark's id there is nothing to ask about
        requests_made += 1
        try:
            detail = api.get_json(f"/messages/outbound/{quote(ref.provider_message_id, safe='')}/details")
        except RequestFailed as failure:
            if failure.status in (404, 422):
                continue  # unknown, or past Postmark's retention
            if failure.retry_after is not None:
                return PollResult(
                    events, requests_made, rate_limited_for=failure.retry_after, covered=frozenset(covered)
                )
            return PollResult(events, requests_made, error=str(failure), covered=frozenset(covered))
        if not isinstance(detail, dict):
            continue
        found = list(_detail_events(detail, ref))
        # MessageEvents say only "Bounced": the bounce record's Type says whether it was a hard
        # bounce, a temporary one, a spam complaint or a spam notice (delivered: no failure).
        waiting: set[int] = set()
        for position, event in enumerate(found):
            bounce_id = text(str((event.raw.get("Details") or {}).get("BounceID") or ""))
            if event.kind != EventKind.BOUNCED or not bounce_id or not bounce_id.isdigit():
                continue
            if requests_made >= request_budget:
                waiting.add(position)
                continue
            requests_made += 1
            try:
                record = api.get_json(f"/bounces/{bounce_id}")
            except RequestFailed as failure:
                if failure.status not in (404, 422):
                    waiting.add(position)  # no answer yet; "no such bounce" leaves it a bounce
                continue
            if isinstance(record, dict):
                found[position] = _with_bounce_type(event, record)
        # A bounce of unknown Type waits for the next poll (the email keeps its turn) or the webhook.
        events[ref.app_message_id] = [event for i, event in enumerate(found) if i not in waiting]
        if not waiting:
            covered.add(ref.app_message_id)
    return PollResult(events=events, requests_made=requests_made, covered=frozenset(covered))


def find_accepted(api: ProviderApi, stream: str, refs: list[SentRef], request_budget: int) -> AcceptedResult:
    """Search outbound messages by our id in Metadata (one id per request: Postmark filters on
    one metadata field at a time)."""
    found: dict[str, str | None] = {}
    checked: set[str] = set()
    requests_made = 0
    for ref in refs:
        if requests_made >= request_budget:
            break
        requests_made += 1
        params = {
            "count": SEARCH_PAGE,
            "offset": 0,
            "messagestream": stream,
            f"metadata_{APP_ID_KEY}": ref.app_message_id,
        }
        try:
            document = api.get_json("/messages/outbound", params=params)
        except RequestFailed as failure:
            return AcceptedResult(
                found,
                frozenset(checked),
                requests_made,
                rate_limited_for=failure.retry_after,
                error=None if failure.retry_after is not None else str(failure),
            )
        messages = document.get("Messages") if isinstance(document, dict) else None
        if not isinstance(messages, list):
            return AcceptedResult(
                found,
                frozenset(checked),
                requests_made,
                error="Postmark's search answer had no Messages list",
            )
        for item in messages:
            metadata = item.get("Metadata") if isinstance(item, dict) else None
            if isinstance(metadata, dict) and str(metadata.get(APP_ID_KEY)) == ref.app_message_id:
                found.setdefault(ref.app_message_id, text(item.get("MessageID")))
        checked.add(ref.app_message_id)
    return AcceptedResult(found, frozenset(checked), requests_made)


def _detail_events(detail: dict[str, Any], ref: PollRef) -> Iterator[ProviderEvent]:
    """Turn one message's details (Status and MessageEvents) into ProviderEvents."""
    message_id = text(detail.get("MessageID")) or ref.provider_message_id
    received = optional_time(detail.get("ReceivedAt"))
    if received is not None and detail.get("Status") in ACCEPTED_STATUSES:
        # Postmark sends no "processed" webhook: its record of the message is the proof.
        yield ProviderEvent(
            EventKind.PROCESSED,
            received,
            app_message_id=ref.app_message_id,
            provider_message_id=message_id,
            raw={"Status": detail.get("Status"), "ReceivedAt": detail.get("ReceivedAt")},
        )
    for raw in detail.get("MessageEvents") or []:
        if not isinstance(raw, dict):
            continue
        occurred_at = optional_time(raw.get("ReceivedAt"))
        if occurred_at is None:
            continue
        kind = MESSAGE_EVENT_KINDS.get(str(raw.get("Type")), EventKind.OTHER)
        details = raw.get("Details") if isinstance(raw.get("Details"), dict) else {}
        if kind in (EventKind.DELIVERED, EventKind.DEFERRED):
            reason = text(details.get("DeliveryMessage"))
        else:
            reason = text(details.get("Summary"))
        yield ProviderEvent(
            kind=kind,
            occurred_at=occurred_at,
            app_message_id=ref.app_message_id,
            provider_message_id=message_id,
            recipient=text(raw.get("Recipient")),
            reason=reason,
            url=text(details.get("Link")) if kind == EventKind.CLICKED else None,
            reject_reason="other" if kind == EventKind.BOUNCED else None,
            raw=raw,
        )


def _with_bounce_type(event: ProviderEvent, record: dict[str, Any]) -> ProviderEvent:
    """Re-read a polled "Bounced" event with its bounce record's Type (the event's time is kept,
    so it deduplicates against the webhook's copy)."""
    try:
        routed = bounce_event(
            "Bounce",
            record,
            {
                "app_message_id": event.app_message_id,
                "provider_message_id": event.provider_message_id,
                "raw": event.raw,
            },
        )
    except ValueError:
        return event  # a record we cannot read: it stays a bounce
    if routed is None:
        return event
    return ProviderEvent(
        routed.kind,
        event.occurred_at,
        app_message_id=event.app_message_id,
        provider_message_id=event.provider_message_id,
        recipient=event.recipient,
        reason=routed.reason,
        reject_reason=routed.reject_reason,
        raw=event.raw,
    )
