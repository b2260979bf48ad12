"""`flask seed-load`: a large data set made in the database, consistent with what the app computes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.helpers import ON_POSTGRES
from webapp import statuses
from webapp.extensions import db
from webapp.models import Client, Clinic, Email, EmailEvent, User
from webapp.providers.base import ProviderEvent
from webapp.services.events import stored_key

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = [pytest.mark.engine, pytest.mark.skipif(not ON_POSTGRES, reason="seed-load is for PostgreSQL")]


def test_seed_load_makes_what_it_says_with_the_apps_statuses_and_dedupe_keys(app):
    from webapp.services import load_data

    result = app.test_cli_runner().invoke(
        args=["seed-load", "--clinics", "5", "--clients", "40", "--emails", "400", "--password", "pw"]
    )
    assert result.exit_code == 0, result.output
    count = lambda model: db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar()  # noqa: E731
    assert (count(Clinic), count(Client), count(Email), count(User)) == (5, 40, 400, 5)
    assert count(EmailEvent) > 3 * 400
    # Every email's stored status is what its events prove, from the moment first reached.
    for email in db.session.execute(sa.select(Email).limit(100)).scalars():
        kinds = [event.kind for event in email.events]
        status = statuses.current_status(kinds)
        assert email.status == status.key
        reached = [e.occurred_at for e in email.events if statuses.status_for_event(e.kind) == status]
        assert email.status_changed_at == min(reached)
        for event in email.events:
            recomputed = ProviderEvent(
                event.kind,
                event.occurred_at,
                app_message_id=email.app_message_id,
                url=event.url,
                attempt=event.attempt,
            ).dedupe_key
            assert event.dedupe_key == stored_key(recomputed)
    assert load_data.LOAD_DOMAIN in result.output
