"""EMAIL_PROVIDER=sendgrid against any server that speaks the documented API: here the sandbox
served over real HTTP on loopback, so the adapter's own HTTP client does the talking."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from tests.helpers import add_content, run_jobs
from webapp import clock
from webapp.extensions import db
from webapp.models import utcnow
from webapp.sandbox.sendgrid import SendGridSandbox
from webapp.services import polling, sending


@pytest.fixture
def sendgrid_api(tmp_path):
    # On the app's clock, so a test moves the provider's time with the app's.
    provider = SendGridSandbox(str(tmp_path / "provider.sqlite3"), speed=1000.0, clock=clock.timestamp)
    server = make_server("127.0.0.1", 0, provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_product_works_unchanged_against_a_documented_api(make_app, sendgrid_api, app_clock):
    app = make_app(EMAIL_PROVIDER="sendgrid", SENDGRID_API_KEY="SG.test-key", SENDGRID_API_BASE=sendgrid_api)
    with app.app_context():
        from webapp.models import Client, Clinic

        clinic = Clinic(name="HTTP clinic")
        db.session.add(clinic)
        db.session.flush()
        client = Client(clinic_id=clinic.id, name="Ann", email="ann+clicked@example.com")
        db.session.add(client)
        db.session.commit()
        email = sending.queue_email(
            client, kind="intake_form", subject="Intake", body="Please fill", sent_by=None
        )
        add_content(email)  # its HTML part, with the link the client clicks
        db.session.commit()
        assert email.provider == "sendgrid"
        run_jobs(app)
        db.session.refresh(email)
        assert email.send_state == "accepted"
        app_clock.advance(0.05)  # 50 of the provider's seconds
        email.next_poll_at = utcnow()
        db.session.commit()
        assert polling.poll_due() == 1
        db.session.refresh(email)
        assert email.status == "clicked"
        assert {"sending", "processed", "delivered", "open", "click"} <= {
            event.kind for event in email.events
        }
