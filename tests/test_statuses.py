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
    ("dropped", {"reason": "Bounced Address"}),
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
