"""The help guide: every status explained, whole at /help and one at a time in the panel."""

from __future__ import annotations

import html as entities
import re

import pytest

from tests.helpers import login
from webapp import statuses
from webapp.help.guide import GUIDE

CLINICIAN = "clinician@a.example"


def words(html: str) -> str:
    """Collapse markup into the words a reader sees."""
    return entities.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip())


@pytest.fixture
def signed_in(client, world):
    login(client, CLINICIAN)
    return client


def test_the_guide_covers_all_eight_statuses_and_nothing_else():
    assert set(GUIDE) == set(statuses.BY_KEY) and len(GUIDE) == 8
    for key, entry in GUIDE.items():
        assert entry.summary and entry.meaning and entry.next_steps, key


def test_the_whole_guide_explains_every_status_and_the_removal_flow(signed_in, app):
    response = signed_in.get("/help")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    text = words(html)
    support = app.config["SUPPORT_ADDRESS"]
    for status in statuses.ALL:
        section = html[html.index(f'<section id="{status.key}"') :]
        section = words(section[: section.index("</section>")])
        entry = GUIDE[status.key]
        assert section.startswith(status.label), status.key
        assert "What to do" in section, status.key
        for paragraph in (*entry.meaning, *entry.next_steps, *entry.caveats):
            assert paragraph.format(support=support) in section, paragraph
    assert "{support}" not in html
    removal = words(html[html.index('<section id="spam-list-removal"') :])
    assert "Removing a client from the spam list" in removal
    assert f"The client emails {support} from the address in their client file" in removal
    assert "Why it must come from the client" in removal and "For compliance" in removal
    assert text.count("What to do") == 8


@pytest.mark.parametrize(
    ("key", "facts"),
    [
        ("sending", ["longer than 10 minutes, the log marks it as stuck", "alerted automatically"]),
        ("processed", ["longer than 10 minutes, the log marks it as stuck", "alerted automatically"]),
        ("deferred", ["temporarily refused", "72 hours", "attempt"]),
        (
            "delivered",
            [
                "does not guarantee that the email reached the client's inbox",
                "junk, spam",
                "contact their email provider",
                "Open or Clicked",
                "Delivered without Open does not mean unread",
                "some clients never report an open",
                "Apple Mail Privacy Protection",
            ],
        ),
        (
            "open",
            [
                "skewed by privacy and firewall settings",
                "machine open",
                "An open can only be tracked for an email with an HTML part",
                "a text-only email never shows Open",
            ],
        ),
        ("clicked", ["skewed by privacy and firewall settings", "likely automated"]),
        (
            "failed",
            [
                "outdated address or a typo",
                "reported an earlier email as spam",
                "Resend…",
                "must come directly from them",
            ],
        ),
        (
            "spam-report",
            [
                "marked the email as spam",
                "email {support} from the address in their client file",
                "must come directly from the client",
            ],
        ),
    ],
)
def test_each_status_says_what_the_seed_article_says(signed_in, app, key, facts):
    html = signed_in.get(f"/help/statuses/{key}").get_data(as_text=True)
    text = words(html)
    for fact in facts:
        assert fact.format(support=app.config["SUPPORT_ADDRESS"]) in text, fact


def test_a_status_opens_in_the_panel_for_htmx_and_as_a_page_otherwise(signed_in):
    panel = signed_in.get("/help/statuses/delivered", headers={"HX-Request": "true"})
    html = panel.get_data(as_text=True)
    assert panel.status_code == 200 and "<html" not in html
    assert 'id="help-panel-title"' in html and 'data-close-help aria-label="Close help"' in html
    assert re.search(r'class="badge badge-ok">Delivered<', html)
    assert 'href="/help#delivered"' in html
    assert "Removing a client from the spam list" not in html

    page = signed_in.get("/help/statuses/delivered").get_data(as_text=True)
    assert page.startswith("<!doctype html>") and "What this status means" in page


@pytest.mark.parametrize("key", ["failed", "spam-report"])
def test_the_panel_for_a_blocked_address_explains_the_removal(signed_in, app, key):
    html = signed_in.get(f"/help/statuses/{key}", headers={"HX-Request": "true"}).get_data(as_text=True)
    text = words(html)
    assert "Removing a client from the spam list" in text
    assert f"The client emails {app.config['SUPPORT_ADDRESS']}" in text
    assert "Why it must come from the client" in text


def test_an_unknown_status_is_not_found(signed_in):
    assert signed_in.get("/help/statuses/bounced").status_code == 404
    assert signed_in.get("/help/statuses/<script>").status_code == 404


def test_help_needs_a_signed_in_user_of_any_role(client, world):
    assert client.get("/help").status_code == 302
    htmx = client.get("/help/statuses/sending", headers={"HX-Request": "true"})
    assert htmx.headers.get("HX-Redirect") == "/login"
    login(client, "support@platform.example")
    assert client.get("/help").status_code == 200


@pytest.mark.parametrize("key", ["sending", "processed"])
def test_stuck_is_one_story_detected_and_alerted_with_a_reference_and_when_to_call(signed_in, app, key):
    support = app.config["SUPPORT_ADDRESS"]
    text = words(signed_in.get(f"/help/statuses/{key}").get_data(as_text=True))
    # Not "contact support after 10 minutes": support already knows, under the email's reference.
    assert "for longer than 10 minutes, contact support" not in text
    assert "support is alerted automatically, with the email's reference" in text
    assert "you do not need to contact support" in text
    assert (
        f"Contact support at {support}, quoting the reference, only if the email is still stuck 1 hour"
        in text
    )


def test_the_panel_opened_from_a_row_names_its_email_and_reference(signed_in, world):
    from datetime import timedelta

    from tests.helpers import add_email
    from webapp.models import utcnow

    stuck = add_email(world.client_a, sent_at=utcnow() - timedelta(minutes=30), subject="Your intake form")
    html = signed_in.get(f"/help/statuses/sending?email={stuck.id}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    text = words(html)
    assert "About “Your intake form” , sent" in text and world.client_a.email in text
    assert f"Reference E-{stuck.id}" in text
    # The row's badge opens the panel about that email.
    page = signed_in.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert f'hx-get="/help/statuses/sending?email={stuck.id}"' in page
    # Another clinic's email is not named.
    theirs = add_email(world.client_b, subject="Theirs")
    assert signed_in.get(f"/help/statuses/sending?email={theirs.id}").status_code == 404


@pytest.mark.parametrize("email", ["18446744073709551617", "2147483648", "-1", "0", "١٢", "x", ""])
def test_an_email_the_panel_cannot_name_still_opens_the_help(signed_in, email):
    """An email id beyond the id column's range (found by the input sweep) opens the plain help."""
    response = signed_in.get(f"/help/statuses/failed?email={email}", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert 'id="help-panel-title"' in response.get_data(as_text=True)
