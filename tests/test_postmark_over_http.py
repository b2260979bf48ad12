"""EMAIL_PROVIDER=postmark against any server that speaks Postmark's documented API: here the
Postmark sandbox served over real HTTP on loopback, so the adapter's own HTTP client does the talking."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from tests.helpers import FakeClock, add_content, run_jobs
from webapp.extensions import db
from webapp.models import utcnow
from webapp.sandbox.postmark import PostmarkSandbox
from webapp.services import polling, sending


@pytest.fixture
def sandbox_clock() -> FakeClock:
    import time

    return FakeClock(time.time())


@pytest.fixture
def postmark_api(tmp_path, sandbox_clock):
    server = make_server(
        "127.0.0.1", 0, PostmarkSandbox(str(tmp_path / "provider.sqlite3"), clock=sandbox_clock)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


def test_the_product_works_unchanged_against_a_postmark_compatible_api(make_app, postmark_api, sandbox_clock):
    app = make_app(
        EMAIL_PROVIDER="postmark", POSTMARK_SERVER_TOKEN="server-token", POSTMARK_API_BASE=postmark_api
    )
    with app.app_context():
        from webapp.models import Client, Clinic

        clinic = Clinic(name="HTTP clinic")
        db.session.add(clinic)
        db.session.flush()
        client = Client(clinic_id=clinic.id, name="Ann", email="ann+clicked@example.com")
        blocked = Client(clinic_id=clinic.id, name="Bo", email="bo+dropped@example.com")
        db.session.add_all([client, blocked])
        db.session.commit()
        email = sending.queue_email(
            client, kind="intake_form", subject="Intake", body="Please fill", sent_by=None
        )
        add_content(email)  # its HTML part, with the link the client clicks
        db.session.commit()
        refused = sending.queue_email(blocked, kind="receipt", subject="Receipt", body="Thanks", sent_by=None)
        assert email.provider == "postmark"
        run_jobs(app)
        db.session.expire_all()
        assert (email.send_state, refused.send_state, refused.status) == ("accepted", "refused", "failed")
        assert sending.spam_list_entry("bo+dropped@example.com") is not None  # refused for a spam report
        sandbox_clock.advance(60)
        email.next_poll_at = utcnow()
        db.session.commit()
        assert polling.poll_due() == 1
        db.session.refresh(email)
        assert email.status == "clicked"
        assert {"sending", "processed", "delivered", "open", "click"} <= {
            event.kind for event in email.events
        }
