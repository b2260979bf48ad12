"""The eight statuses: precedence of every ordered pair, and order-free replay of event sets."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webapp import statuses
from webapp.extensions import db
from webapp.models import Email, EmailEvent
from webapp.providers.base import ProviderEvent
from webapp.services.events import apply_events

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)

# One provider event kind that proves each status.
KIND_FOR_STATUS = {
    "sending": "sending",
    "processed": "processed",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "open",
    "clicked": "click",
    "failed": "bounce",
    "spam-report": "spamreport",
}


def new_email(world) -> Email:
    email = Email(
        clinic_id=world.clinic_a.id,
        client_id=world.client_a.id,
        to_address=world.client_a.email,
        subject="Appointment reminder",
        body="See you soon",
        kind="appointment_reminder",
        provider="sandbox",
        created_at=T0,
    )
    db.session.add(email)
    db.session.flush()
    return email


def event(email: Email, kind: str, minute: int, **extra) -> ProviderEvent:
    return ProviderEvent(kind, T0 + timedelta(minutes=minute), app_message_id=email.app_message_id, **extra)


def timeline(email: Email) -> list[tuple]:
    rows = db.session.execute(
        sa.select(
            EmailEvent.kind, EmailEvent.occurred_at, EmailEvent.reason, EmailEvent.url, EmailEvent.attempt
        )
        .where(EmailEvent.email_id == email.id)
        .order_by(EmailEvent.occurred_at, EmailEvent.kind, EmailEvent.dedupe_key)
    )
    return [tuple(row) for row in rows]


@pytest.mark.parametrize(
    ("first", "second"), list(itertools.product(statuses.ALL, statuses.ALL)), ids=lambda status: status.key
)
def test_every_ordered_pair_ends_in_the_higher_rank(world, first, second):
    email = new_email(world)
    apply_events(email, [event(email, KIND_FOR_STATUS[first.key], 1)], source="test")
    apply_events(email, [event(email, KIND_FOR_STATUS[second.key], 2)], source="test")
    db.session.commit()
    expected = first if first.rank >= second.rank else second
    assert db.session.get(Email, email.id).status == expected.key


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (["open", "delivered"], "open"),  # an open that arrives before its delivery
        (["delivered", "deferred"], "delivered"),  # a late deferral never moves it back
        (["delivered", "open", "bounce"], "failed"),  # a bounce after delivery wins
        (["open", "spamreport"], "spam-report"),
        (["click", "processed"], "clicked"),
        (["dropped"], "failed"),
        (["processed", "unsubscribe", "unknown"], "processed"),  # timeline-only events
    ],
)
def test_named_precedence_cases(world, kinds, expected):
    email = new_email(world)
    apply_events(email, [event(email, kind, minute) for minute, kind in enumerate(kinds)], source="test")
    db.session.commit()
    assert email.status == expected


def test_a_duplicate_event_is_stored_once_and_changes_nothing(world):
    email = new_email(world)
    delivered = event(email, "delivered", 1, raw={"response": "250 OK"})
    assert apply_events(email, [delivered], source="webhook") is True
    db.session.commit()
    version = email.version
    assert apply_events(email, [delivered, delivered], source="poll") is False
    db.session.commit()
    assert email.version == version
    assert len(timeline(email)) == 1


def test_status_change_time_is_when_the_status_was_first_reached(world):
    email = new_email(world)
    apply_events(email, [event(email, "delivered", 5), event(email, "delivered", 3, url="x")], source="test")
    db.session.commit()
    assert email.status_changed_at == T0 + timedelta(minutes=3)


def test_a_spam_report_puts_the_address_on_the_spam_list(world):
    from webapp.services.sending import spam_list_entry

    email = new_email(world)
    apply_events(email, [event(email, "spamreport", 4)], source="webhook")
    db.session.commit()
    entry = spam_list_entry(world.client_a.email.upper())
    assert entry is not None and entry.email_id == email.id


EVENT_POOL = [
    ("processed", {}),
    ("deferred", {"attempt": 1, "reason": "421 try later"}),
    ("deferred", {"attempt": 2, "reason": "421 try later"}),
    ("delivered", {}),
    ("open", {"machine": True}),
    ("open", {}),
    ("click", {"url": "https://example.com/a"}),
    ("click", {"url": "https://example.com/b"}),
    ("bounce", {"reason": "550 5.1.1 user unknown"}),
    ("dropped", {"reason": "Bounced Address", "reject_reason": "bounced_address"}),
    ("spamreport", {}),
    ("unsubscribe", {}),
    ("unknown", {}),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chosen=st.lists(st.integers(0, len(EVENT_POOL) - 1), min_size=1, max_size=8, unique=True),
    data=st.data(),
)
def test_any_order_and_any_duplication_gives_the_same_status_and_timeline(world, chosen, data):
    reference = new_email(world)
    replayed = new_email(world)

    def events_for(email: Email) -> list[ProviderEvent]:
        return [event(email, EVENT_POOL[i][0], minute=i, **EVENT_POOL[i][1]) for i in chosen]

    apply_events(reference, events_for(reference), source="webhook")
    shuffled = data.draw(st.permutations(events_for(replayed)))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(shuffled), max_size=10))
    batches = data.draw(st.lists(st.integers(1, 4), min_size=len(duplicated), max_size=len(duplicated)))
    start = 0
    for size in batches:
        if start < len(duplicated):
            apply_events(replayed, duplicated[start : start + size], source="poll")
            start += size
    db.session.commit()

    expected = statuses.current_status([EVENT_POOL[i][0] for i in chosen])
    assert reference.status == replayed.status == expected.key
    assert reference.status_changed_at == replayed.status_changed_at
    assert timeline(reference) == timeline(replayed)
    assert len(timeline(replayed)) == len(chosen)


# Set-based application: many emails per batch, in any order, and same-second collisions.


def full_timeline(email: Email) -> list[tuple]:
    rows = db.session.execute(
        sa.select(
            EmailEvent.kind,
            EmailEvent.occurred_at,
            EmailEvent.reason,
            EmailEvent.url,
            EmailEvent.attempt,
            EmailEvent.machine,
            EmailEvent.source,
        )
        .where(EmailEvent.email_id == email.id)
        .order_by(EmailEvent.occurred_at, EmailEvent.kind, EmailEvent.dedupe_key)
    )
    return [tuple(row) for row in rows]


def same_second_opens(email: Email) -> tuple[ProviderEvent, ProviderEvent, ProviderEvent]:
    """A machine open and a human open of one email in the same second, and the poller's copy
    (Email Activity says nothing of machines)."""
    at = T0 + timedelta(minutes=7, seconds=3)
    ids = {"app_message_id": email.app_message_id, "provider_message_id": "XID.filter-1"}
    machine = ProviderEvent("open", at, machine=True, raw={"event": "open", "sg_machine_open": True}, **ids)
    human = ProviderEvent("open", at, machine=False, raw={"event": "open", "sg_machine_open": False}, **ids)
    polled = ProviderEvent("open", at, raw={"event_name": "opened"}, **ids)
    return machine, human, polled


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("one_batch", [True, False])
def test_a_machine_and_a_human_open_in_one_second_give_one_timeline_in_any_order(world, order, one_batch):
    from webapp.services.webhooks import apply_provider_events

    email = new_email(world)
    copies = list(zip(same_second_opens(email), ["webhook", "webhook", "poll"], strict=True))
    arrivals = [copies[i] for i in order]
    if one_batch:
        # The webhook copies in one batch, in this order; the polled one before or after it.
        webhook = [event for event, source in arrivals if source == "webhook"]
        polled_first = arrivals[0][1] == "poll"
        steps = [([copies[2][0]], "poll"), (webhook, "webhook")]
        for events, source in steps if polled_first else steps[::-1]:
            apply_provider_events(events, source)
    else:
        for event, source in arrivals:
            apply_provider_events([event], source)
    db.session.commit()
    # A person opened it in that second: the human open is what the log says, from the webhook.
    assert [row[5:] for row in full_timeline(email)] == [(False, "webhook")]
    assert db.session.get(Email, email.id).status == "open"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_shuffled_batches_over_many_emails_give_the_same_timelines(world, data):
    """The webhook job's set-based path: events of several emails, same-second collisions included,
    posted as shuffled, duplicated batches from both sources, end as one in-order application does."""
    from webapp.services.webhooks import apply_provider_events

    def history(email: Email) -> list[tuple[ProviderEvent, str]]:
        machine, human, polled = same_second_opens(email)
        chosen = data.draw(st.lists(st.integers(0, len(EVENT_POOL) - 1), max_size=6, unique=True))
        events = [(event(email, EVENT_POOL[i][0], minute=i, **EVENT_POOL[i][1]), "webhook") for i in chosen]
        extra = data.draw(st.sets(st.sampled_from(["machine", "human", "polled"]), min_size=1))
        pick = {"machine": (machine, "webhook"), "human": (human, "webhook"), "polled": (polled, "poll")}
        return events + [pick[name] for name in sorted(extra)]

    references = [new_email(world) for _ in range(3)]
    replays = [new_email(world) for _ in range(3)]
    plans = [history(email) for email in references]
    for email, plan in zip(references, plans, strict=True):
        for source in ("poll", "webhook"):
            apply_events(email, [e for e, s in plan if s == source], source=source)
    stream = []
    for email, plan in zip(replays, plans, strict=True):
        for provider_event, source in plan:
            stream.append((replace_owner(provider_event, email), source))
    stream = data.draw(st.permutations(stream))
    stream = stream + data.draw(st.lists(st.sampled_from(stream), max_size=6))
    position = 0
    while position < len(stream):
        size = data.draw(st.integers(1, 5))
        chunk = stream[position : position + size]
        for source in data.draw(st.permutations(["poll", "webhook"])):
            apply_provider_events([e for e, s in chunk if s == source], source)
        position += size
    db.session.commit()
    for reference, replayed in zip(references, replays, strict=True):
        db.session.refresh(reference)
        db.session.refresh(replayed)
        assert (reference.status, reference.status_changed_at) == (
            replayed.status,
            replayed.status_changed_at,
        )
        assert [row[:6] for row in full_timeline(reference)] == [row[:6] for row in full_timeline(replayed)]


def replace_owner(provider_event: ProviderEvent, email: Email) -> ProviderEvent:
    import dataclasses

    return dataclasses.replace(provider_event, app_message_id=email.app_message_id)


def test_a_batch_costs_the_same_statements_whatever_its_size(app, world):
    """Set-based: 10 emails or 200, one batch is the same handful of statements."""
    from webapp.services.webhooks import apply_provider_events

    def statements_for(count: int) -> int:
        emails = [new_email(world) for _ in range(count)]
        db.session.commit()
        events = [
            event(email, kind, minute)
            for email in emails
            for minute, kind in enumerate(["processed", "delivered", "open", "click"])
        ]
        seen: list[str] = []

        def count_statement(*_args: object) -> None:
            seen.append("x")

        engine = db.engine
        sa.event.listen(engine, "before_cursor_execute", count_statement)
        try:
            assert apply_provider_events(events, "webhook") == count
            db.session.commit()
        finally:
            sa.event.remove(engine, "before_cursor_execute", count_statement)
        return len(seen)

    small, large = statements_for(10), statements_for(200)
    assert small == large
    assert large <= 8
