"""The unchanged log poll answered in front of Flask (webapp/freshness/fastpoll.py): nothing else runs for
it, and anything it cannot answer with certainty goes down the full path."""

from __future__ import annotations

import re

from tests.helpers import login

POLL = {"HX-Request": "true", "HX-Trigger": "email-log"}


def poll_url(html: str) -> str:
    match = re.search(r'<section id="email-log"[^>]*?hx-get="([^"]+)"', html, re.S)
    assert match, html[:2000]
    return match.group(1).replace("&amp;", "&")


def test_an_unchanged_poll_runs_no_flask_hook_and_carries_the_security_headers(app, client, world):
    hooks: list[str] = []
    app.before_request(lambda: hooks.append("before"))
    login(client, "clinician@a.example")
    url = poll_url(client.get(f"/clients/{world.client_a.id}/emails", headers=POLL).get_data(as_text=True))
    hooks.clear()
    response = client.get(url, headers=POLL)
    assert response.status_code == 204 and response.data == b""
    assert hooks == []
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_what_the_fast_path_cannot_vouch_for_goes_to_the_view(app, client, world):
    login(client, "clinician@a.example")
    url = poll_url(client.get(f"/clients/{world.client_a.id}/emails", headers=POLL).get_data(as_text=True))
    marker, _, fresh = url.split("v=", 1)[1].partition("-")
    other = f"/clients/{world.client_b.id}/emails?v={marker}-{fresh}"
    assert client.get(other, headers=POLL).status_code == 404  # another clinic's log: the view refuses
    assert client.get(url.replace(f"v={marker}", "v=999"), headers=POLL).status_code == 200  # changed
    assert client.get(url.replace(f"-{fresh}", "-1"), headers=POLL).status_code == 200  # no longer fresh
    stranger = app.test_client()  # no session cookie at all
    assert stranger.get(url, headers=POLL).headers.get("HX-Redirect") == "/login"


def test_only_the_fast_path_answers_unchanged_and_the_view_always_renders(app, client, world):
    """The fast path is always in front of the app; the view renders every poll that reaches it,
    even an unchanged one (a HEAD, which the fast path leaves alone)."""
    from webapp.freshness.fastpoll import UnchangedLogPoll

    assert isinstance(app.wsgi_app, UnchangedLogPoll)
    hooks: list[str] = []
    app.before_request(lambda: hooks.append("before"))
    login(client, "clinician@a.example")
    url = poll_url(client.get(f"/clients/{world.client_a.id}/emails", headers=POLL).get_data(as_text=True))
    hooks.clear()
    assert client.get(url, headers=POLL).status_code == 204 and hooks == []
    # A HEAD poll passes the fast path (GET only) and is rendered, not told "unchanged".
    response = client.head(url, headers=POLL)
    assert response.status_code == 200 and hooks == ["before"]
    assert int(response.headers["Content-Length"]) > 0
    # Without the fast path in front, the same unchanged GET is rendered in full by the view.
    app.wsgi_app = app.wsgi_app.wsgi_app
    response = client.get(url, headers=POLL)
    assert response.status_code == 200 and 'id="email-log"' in response.get_data(as_text=True)
