"""Our own event vocabulary (webapp/event_kinds.py): a closed set every adapter translates into,
that statuses, services and the sandbox use, and that nothing outside it gets past."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from webapp import statuses
from webapp.event_kinds import BY_VALUE, EventKind, event_kind
from webapp.providers.base import PollRef, ProviderEvent
from webapp.providers.postmark import lookup as postmark_lookup
from webapp.providers.postmark import translate as postmark_translate
from webapp.providers.postmark.webhooks import parse_webhook_event
from webapp.providers.sendgrid import lookup as sendgrid_lookup
from webapp.providers.sendgrid import translate as sendgrid_translate
from webapp.providers.sendgrid.webhooks import parse_webhook_events
from webapp.sandbox import scenarios

FIXTURES = Path(__file__).parent / "fixtures"
AT = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)

# What the database holds: renaming any of these needs a migration of the stored events.
STORED = {
    "sending",
    "processed",
    "deferred",
    "delivered",
    "open",
    "click",
    "spam_filtered",
    "bounce",
    "dropped",
    "rejected",
    "expired",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
    "unknown",
}


def test_the_stored_words_stay_as_the_database_holds_them():
    assert {kind.value for kind in EventKind} == STORED
    assert len(BY_VALUE) == len(EventKind)


def test_every_kind_has_a_status_rule_and_words_for_the_timeline():
    assert list(statuses.STATUS_FOR_EVENT) == list(EventKind)  # in the order an email lives them
    assert set(statuses.EVENT_LABELS) == set(EventKind)
    assert tuple(kind.value for kind in EventKind) == statuses.EVENT_KINDS
    assert statuses.status_for_event(EventKind.FILED_AS_SPAM) is statuses.DELIVERED
    assert statuses.status_for_event("spamreport") is statuses.SPAM_REPORT  # a stored string reads the same


@pytest.mark.parametrize("kind", ["spamreprot", "spam_report", "Open", "", " open", "opened", None, 3])
def test_an_event_of_any_other_kind_is_refused_where_it_is_made(kind):
    with pytest.raises(ValueError, match="is not an event kind"):
        ProviderEvent(kind, AT, app_message_id="m-1")


def test_an_event_takes_a_stored_string_as_its_kind_and_keeps_it_through_a_round_trip():
    event = ProviderEvent("spamreport", AT, app_message_id="m-1")
    assert event.kind is EventKind.REPORTED_AS_SPAM
    assert event == ProviderEvent(EventKind.REPORTED_AS_SPAM, AT, app_message_id="m-1")
    kept = json.loads(json.dumps(event.to_dict()))
    assert kept["kind"] == "spamreport"
    assert ProviderEvent.from_dict(kept).kind is EventKind.REPORTED_AS_SPAM
    assert event_kind("unknown") is EventKind.OTHER


def test_a_slip_in_an_adapters_table_fails_instead_of_being_stored_as_unknown(monkeypatch):
    body = json.dumps([{"event": "spamreport", "timestamp": 1767348000, "email": "a@example.com"}]).encode()
    assert parse_webhook_events(body)[0].kind is EventKind.REPORTED_AS_SPAM
    monkeypatch.setitem(sendgrid_translate.WEBHOOK_KINDS, "spamreport", "spamreprot")
    with pytest.raises(ValueError, match="'spamreprot' is not an event kind"):
        parse_webhook_events(body)


@pytest.mark.parametrize(
    "table",
    [
        sendgrid_translate.POLLED_KINDS,
        sendgrid_translate.WEBHOOK_KINDS,
        postmark_lookup.MESSAGE_EVENT_KINDS,
        postmark_translate.INFORMATIONAL_BOUNCES,
    ],
)
def test_the_adapters_translate_into_our_words(table):
    assert table and all(type(kind) is EventKind for kind in table.values())


def test_the_sandbox_plays_only_our_kinds():
    steps = [step for timeline in scenarios.SCENARIOS.values() for _, step in timeline]
    assert all(type(step.event) is EventKind and step.event in scenarios.STEP_KINDS for step in steps)
    assert scenarios.Step("open").event is EventKind.OPENED
    with pytest.raises(ValueError):
        scenarios.Step("opened")
    with pytest.raises(ValueError):
        scenarios.Step(EventKind.SENDING)  # ours alone: no provider reports it


def values(document: Any) -> Iterator[Any]:
    """Every array and object inside a JSON document, itself included."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            yield value
            stack.extend(value.values())
        elif isinstance(value, list):
            yield value
            stack.extend(value)


def parsed(parse: Callable[[bytes], list[ProviderEvent]], body: Any) -> list[ProviderEvent]:
    """The events a webhook parser makes of a body; none when it is not that provider's."""
    try:
        return parse(json.dumps(body).encode())
    except ValueError:
        return []


def events_of(value: Any) -> Iterator[ProviderEvent]:
    """Whatever either adapter makes of a value, read as each of its webhooks and polled answers."""
    yield from parsed(parse_webhook_events, value)
    if isinstance(value, dict):
        yield from parsed(parse_webhook_events, [value])
        yield from parsed(parse_webhook_event, value)
        if isinstance(value.get("events"), list):
            yield from sendgrid_lookup._polled_events(value, "m-1")
        if isinstance(value.get("MessageEvents"), list):
            yield from postmark_lookup._detail_events(value, PollRef("m-1", "p-1"))


def test_every_fixture_through_both_adapters_gives_only_our_kinds():
    kinds: list[Any] = []
    fixtures = sorted(FIXTURES.rglob("*.json"))
    for path in fixtures:
        for value in values(json.loads(path.read_text())):
            kinds.extend(event.kind for event in events_of(value))
    assert fixtures and all(type(kind) is EventKind for kind in kinds)
    # Not vacuous: the fixtures hold every kind a provider reports but the group subscriptions.
    assert set(kinds) >= set(scenarios.STEP_KINDS) | {EventKind.UNSUBSCRIBED, EventKind.OTHER}
