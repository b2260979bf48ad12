"""The status moved on by new events alone (PostgreSQL's path) equals the status recomputed from
all of an email's events, over random sequences: duplicates, out-of-order delivery, clocks ahead
and behind, several batches, and emails whose stored columns predate status_received_at."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import ON_POSTGRES
from webapp.event_kinds import EventKind
from webapp.extensions import db
from webapp.models import Email
from webapp.providers.base import ProviderEvent
from webapp.services import event_statuses
from webapp.services.webhooks import apply_provider_events

pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="the shortcut is PostgreSQL's (SQLite recomputes)")

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
COLUMNS = ("status", "status_changed_at", "status_received_at", "next_poll_at")

# Every kind, status-bearing or not; a few carry what makes two events of one kind distinct.
KINDS = [kind for kind in EventKind]
EXTRAS = [
    {},
    {"attempt": 1},
    {"attempt": 2},
    {"url": "https://example.com/a"},
    {"url": "https://example.com/b"},
]

an_event = st.tuples(
    st.sampled_from(KINDS),
    st.integers(-3 * 3600, 3 * 3600),  # seconds from the test's start: the provider's clock may be ahead
    st.sampled_from(EXTRAS),
    st.sampled_from(["webhook", "poll"]),
)


def new_email(world) -> Email:
    email = Email(
        clinic_id=world.clinic_a.id,
        client_id=world.client_a.id,
        to_address=world.client_a.email,
        subject="Appointment reminder",
        body="See you soon",
        kind="appointment_reminder",
        provider="sandbox",
        send_state="accepted",
        created_at=T0 - timedelta(hours=4),
        status_changed_at=T0 - timedelta(hours=4),
        next_poll_at=T0 + timedelta(hours=1),
    )
    db.session.add(email)
    db.session.flush()
    return email


def stored(email: Email) -> tuple:
    query = sa.select(*(getattr(Email, name) for name in COLUMNS)).where(Email.id == email.id)
    return tuple(db.session.execute(query).one())


@contextmanager
def recomputing_from_all_events() -> Iterator[None]:
    """Apply events as before the shortcut: every touched email recomputed from all its events."""
    shortcut = event_statuses.advance_statuses

    def recompute(_fresh: list[dict], touched: set[int]) -> None:
        event_statuses.recompute_statuses(sorted(touched))

    event_statuses.advance_statuses = recompute
    try:
        yield
    finally:
        event_statuses.advance_statuses = shortcut


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    history=st.lists(an_event, max_size=6),
    arriving=st.lists(an_event, min_size=1, max_size=10),
    data=st.data(),
)
def test_moving_the_status_on_by_new_events_equals_recomputing_it_from_all(
    world, app_clock, history, arriving, data
):
    # Twins: the same events reach both, one moved on by the shortcut, one recomputed from all.
    email, twin = new_email(world), new_email(world)

    def provider_event(owner: Email, kind: EventKind, seconds: int, extra: dict) -> ProviderEvent:
        at = T0 + timedelta(seconds=seconds)
        return ProviderEvent(kind, at, app_message_id=owner.app_message_id, **extra)

    def apply(owner: Email, events: list[tuple[tuple, str]]) -> None:
        for source in ("webhook", "poll"):
            apply_provider_events([provider_event(owner, *e) for e, s in events if s == source], source)

    # Events stored earlier; then perhaps the emails are from before status_received_at existed.
    earlier = [((kind, seconds, extra), source) for kind, seconds, extra, source in history]
    apply(email, earlier)
    with recomputing_from_all_events():
        apply(twin, earlier)
    if history and data.draw(st.booleans(), label="legacy"):
        for owner in (email, twin):
            db.session.execute(sa.update(Email).where(Email.id == owner.id).values(status_received_at=None))
    db.session.commit()
    assert stored(email) == stored(twin)
    # New events, some of them copies of stored ones or of each other, in any order and batches.
    events = [((kind, seconds, extra), source) for kind, seconds, extra, source in arriving]
    events += data.draw(st.lists(st.sampled_from(events), max_size=4), label="copies")
    events = data.draw(st.permutations(events), label="order")
    position = 0
    while position < len(events):
        size = data.draw(st.integers(1, 4), label="batch")
        app_clock.advance(data.draw(st.integers(0, 600), label="pause"))
        batch = events[position : position + size]
        apply(email, batch)
        with recomputing_from_all_events():
            apply(twin, batch)
        db.session.commit()
        assert stored(email) == stored(twin)
        position += size


def test_a_status_unknown_here_is_recomputed(world):
    email = new_email(world)
    db.session.execute(sa.update(Email).where(Email.id == email.id).values(status="retired-status"))
    db.session.commit()
    event = ProviderEvent(EventKind.PROCESSED, T0, app_message_id=email.app_message_id)
    apply_provider_events([event], "webhook")
    db.session.commit()
    assert stored(email)[0] == "processed"
