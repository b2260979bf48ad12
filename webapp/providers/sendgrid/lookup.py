"""SendGrid's Email Activity API: what became of our emails (poll) and whether a send in doubt
was taken (find_accepted)."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from webapp.event_kinds import EventKind
from webapp.providers.base import AcceptedResult, PollRef, PollResult, ProviderEvent, SentRef
from webapp.providers.http import ProviderApi, RequestFailed
from webapp.providers.sendgrid.translate import (
    APP_ID_ARG,
    POLLED_KINDS,
    iso_time,
    reject_reason_of,
    text,
    whole_number,
    x_message_id,
)

ACTIVITY_MAX_LIMIT = 1000
# How many of our ids one Email Activity query asks about (the query travels in the URL).
FIND_BATCH_SIZE = 50
# SendGrid caps custom args at 10,000 bytes; anything much longer is not unique_args text.
MAX_UNIQUE_ARGS_CHARS = 20_000


def find_accepted(api: ProviderApi, refs: list[SentRef], request_budget: int) -> AcceptedResult:
    """Ask Email Activity which of these messages SendGrid took, many in one request.

    A list answer names each message's recipient but not its custom args, so one request asks
    about emails to different addresses only, and tells them apart by address; emails that
    share an address wait for a later request. A listed message whose address matches none of
    ours costs one more request, for its details.
    """
    found: dict[str, str | None] = {}
    checked: set[str] = set()
    pending = list(refs)
    requests_made = 0
    while pending and requests_made < request_budget:
        batch: dict[str, SentRef] = {}
        later: list[SentRef] = []
        for ref in pending:
            address = ref.to_address.strip().lower()
            if address in batch or len(batch) >= FIND_BATCH_SIZE:
                later.append(ref)
            else:
                batch[address] = ref
        pending = later
        query = " OR ".join(_app_id_term(ref.app_message_id) for ref in batch.values())
        # Room for a second copy of each, so a full page means "there may be more".
        limit = min(ACTIVITY_MAX_LIMIT, 2 * len(batch) + 1)
        requests_made += 1
        try:
            listed = _messages_of(api.get_json(_messages_url(query, limit)))
        except RequestFailed as failure:
            return AcceptedResult(
                found,
                frozenset(checked),
                requests_made,
                rate_limited_for=failure.retry_after,
                error=None if failure.retry_after is not None else str(failure),
            )
        complete = len(listed) < limit
        by_app_id = {ref.app_message_id: ref for ref in batch.values()}
        for item in listed:
            msg_id = str(item.get("msg_id", ""))
            ref = batch.get(str(item.get("to_email", "")).strip().lower())
            if ref is None and msg_id and requests_made < request_budget:
                # The address reads differently from ours: the message's details name our id.
                requests_made += 1
                try:
                    detail = api.get_json(f"/v3/messages/{quote(msg_id, safe='')}")
                except RequestFailed:
                    detail = {}
                unique_args = detail.get("unique_args") if isinstance(detail, dict) else None
                ref = by_app_id.get(str(_unique_args(unique_args).get(APP_ID_ARG)))
            if ref is None:
                complete = False  # a message we cannot tell apart: "not found" proves nothing
                continue
            found.setdefault(ref.app_message_id, x_message_id(msg_id))
        checked.update(
            ref.app_message_id for ref in batch.values() if complete or ref.app_message_id in found
        )
    return AcceptedResult(found, frozenset(checked), requests_made)


def poll(api: ProviderApi, refs: list[PollRef], request_budget: int) -> PollResult:
    """List the messages with one request, then fetch each one's events while the budget lasts."""
    if not refs or request_budget < 1:
        return PollResult(events={})
    requested = {ref.app_message_id for ref in refs}
    by_x_message_id = {ref.provider_message_id: ref.app_message_id for ref in refs if ref.provider_message_id}
    query = " OR ".join(_app_id_term(ref.app_message_id) for ref in refs)
    # Room for a second copy of a message whose first send was in doubt.
    limit = min(ACTIVITY_MAX_LIMIT, 2 * len(refs))
    events: dict[str, list[ProviderEvent]] = {}
    requests_made = 1
    try:
        listed = _messages_of(api.get_json(_messages_url(query, limit)))
    except RequestFailed as failure:
        return _stopped(events, requests_made, failure)

    order = {request_id: position for position, request_id in enumerate(by_x_message_id)}
    listed.sort(key=lambda item: order.get(x_message_id(item.get("msg_id")) or "", len(order)))
    not_reached: set[str] = set()
    for position, item in enumerate(listed):
        if requests_made >= request_budget:
            not_reached = _owners_of(listed[position:], requested, by_x_message_id)
            break
        msg_id = str(item.get("msg_id", ""))
        if not msg_id:
            continue
        requests_made += 1
        try:
            detail = api.get_json(f"/v3/messages/{quote(msg_id, safe='')}")
        except RequestFailed as failure:
            if failure.status == 404:
                continue
            return _stopped(events, requests_made, failure)
        app_id = _owner(detail, requested, by_x_message_id)
        if app_id is not None:
            events.setdefault(app_id, []).extend(_polled_events(detail, app_id))
    return PollResult(events=events, requests_made=requests_made, covered=frozenset(requested - not_reached))


def _app_id_term(app_message_id: str) -> str:
    """Return the Email Activity query term that finds messages carrying our id."""
    escaped = app_message_id.replace("\\", "\\\\").replace('"', '\\"')
    return f"unique_args['{APP_ID_ARG}']=\"{escaped}\""


def _messages_url(query: str, limit: int) -> str:
    """Build the Email Activity list URL, with spaces encoded as %20 as SendGrid documents."""
    return f"/v3/messages?query={quote(query, safe='')}&limit={limit}"


def _messages_of(document: Any) -> list[dict[str, Any]]:
    """Return the `messages` list of an Email Activity answer."""
    messages = document.get("messages") if isinstance(document, dict) else None
    if not isinstance(messages, list):
        raise RequestFailed("SendGrid's Email Activity answer had no messages list")
    return [item for item in messages if isinstance(item, dict)]


def _stopped(
    events: dict[str, list[ProviderEvent]], requests_made: int, failure: RequestFailed
) -> PollResult:
    """Return what a poll got before a failure stopped it."""
    if failure.retry_after is not None:
        return PollResult(events=events, requests_made=requests_made, rate_limited_for=failure.retry_after)
    return PollResult(events=events, requests_made=requests_made, error=str(failure))


def _owners_of(items: list[Any], requested: set[str], by_x_message_id: dict[str, str]) -> set[str]:
    """Return our ids of listed messages whose details were not fetched; when a message cannot be
    told apart (no X-Message-Id known yet), every email without one counts as not reached."""
    owners: set[str] = set()
    for item in items:
        prefix = x_message_id(item.get("msg_id")) if isinstance(item, dict) else None
        if prefix in by_x_message_id:
            owners.add(by_x_message_id[prefix])
        else:
            owners |= requested - set(by_x_message_id.values())
    return owners


def _owner(detail: Any, requested: set[str], by_x_message_id: dict[str, str]) -> str | None:
    """Return our id of a polled message: from its unique_args, else from its X-Message-Id prefix."""
    if not isinstance(detail, dict):
        return None
    app_id = _unique_args(detail.get("unique_args")).get(APP_ID_ARG)
    if isinstance(app_id, str) and app_id in requested:
        return app_id
    return by_x_message_id.get(x_message_id(detail.get("msg_id")) or "")


def _unique_args(value: Any) -> dict[str, Any]:
    """Read Email Activity's unique_args: JSON-ish text such as "{'app_message_id': 'x'}"."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or len(value) > MAX_UNIQUE_ARGS_CHARS:
        return {}
    for parse in (json.loads, ast.literal_eval):
        try:
            parsed = parse(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(parsed, dict):
            return parsed
    return {}


def _polled_events(detail: dict[str, Any], app_message_id: str) -> Iterator[ProviderEvent]:
    """Turn one Email Activity message's events[] into ProviderEvents."""
    provider_message_id = x_message_id(detail.get("msg_id"))
    recipient = detail.get("to_email")
    for raw in detail.get("events") or []:
        if not isinstance(raw, dict):
            continue
        occurred_at = iso_time(raw.get("processed"))
        if occurred_at is None:
            continue
        kind = POLLED_KINDS.get(str(raw.get("event_name")), EventKind.OTHER)
        yield ProviderEvent(
            kind=kind,
            occurred_at=occurred_at,
            app_message_id=app_message_id,
            provider_message_id=provider_message_id,
            recipient=recipient if isinstance(recipient, str) else None,
            reason=text(raw.get("reason")),
            url=text(raw.get("url")) if kind == EventKind.CLICKED else None,
            attempt=whole_number(raw.get("attempt_num")) if kind == EventKind.DEFERRED else None,
            reject_reason=reject_reason_of(text(raw.get("reason"))) if kind == EventKind.DROPPED else None,
            raw=raw,
        )
