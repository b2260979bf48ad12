"""The sandbox demo (webapp/demo) exists only beside the sandbox: its buttons, its routes, its DNS."""

from __future__ import annotations

import dkim
import pytest

from tests.helpers import login
from webapp.extensions import db
from webapp.models import SpamListEntry, utcnow
from webapp.services.inbound import proof as inbound

# Each real provider, with the least it needs to start.
REAL_PROVIDERS = {
    "sendgrid": {"EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY": "SG.test"},
    "postmark": {"EMAIL_PROVIDER": "postmark", "POSTMARK_SERVER_TOKEN": "server-token"},
}
BUTTON = "removal email (sandbox)"


def block(world) -> None:
    """Put client A's address on the spam list: the client file shows its banner."""
    db.session.add(SpamListEntry(address=world.client_a.email, reported_at=utcnow(), source="sync"))
    db.session.commit()


def demo_paths(world) -> list[tuple[str, str]]:
    """(who, path) of every demo button's route."""
    return [
        ("clinician@a.example", f"/clients/{world.client_a.id}/sandbox-removal-mail"),
        ("support@platform.example", "/support/removal-requests/1/sandbox-reactivate"),
    ]


@pytest.mark.parametrize("provider", sorted(REAL_PROVIDERS))
def test_beside_a_real_provider_the_demo_has_no_route_button_or_dns(app, world, make_app, provider):
    block(world)
    real = make_app(**REAL_PROVIDERS[provider])
    assert "demo" not in real.blueprints
    assert [rule.rule for rule in real.url_map.iter_rules() if "sandbox" in rule.rule] == []
    for who, path in demo_paths(world):
        browser = real.test_client()
        login(browser, who)
        assert browser.post(path).status_code == 404
    browser = real.test_client()
    login(browser, "clinician@a.example")
    page = browser.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert "Emails to this address are blocked" in page and BUTTON not in page
    with real.app_context():
        assert inbound.configured_dns(real.config) is dkim.dnsplug.get_txt


def test_beside_the_sandbox_the_demo_has_its_routes_button_and_dns(app, world):
    block(world)
    assert "demo" in app.blueprints
    browser = app.test_client()
    login(browser, "clinician@a.example")
    page = browser.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert BUTTON in page and f"/clients/{world.client_a.id}/sandbox-removal-mail" in page
    lookup = inbound.configured_dns(app.config)
    assert lookup(b"sandbox._domainkey.example.com.").startswith(b"v=DKIM1; k=rsa; p=")
    assert lookup(b"other._domainkey.example.com.") is None
