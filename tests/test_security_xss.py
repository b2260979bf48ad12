"""Escaping: every XSS vector of tests/xss_vectors.txt, put through every field that reaches a
template (client, email, provider event, audit, removal request, user and clinic fields, and what
forms echo back), on every page that shows it. A vector found verbatim was not escaped; a page may
hold no element or attribute its plain-text rendering does not have, and no extra script."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from markupsafe import escape

from tests.helpers import email_with_history, login, removal_case, scan
from webapp.extensions import db
from webapp.models import Client, EmailEvent, OperatorAlert, SpamListEntry, utcnow
from webapp.providers.base import ProviderEvent
from webapp.services import audit, sending
from webapp.services.events import apply_events

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")

VECTORS = [
    line
    for line in (Path(__file__).parent / "xss_vectors.txt").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("# ")
]
PLAIN = "Plain words"
SPECIAL = set("<>&'\"")


def test_the_corpus_has_more_than_50_vectors_that_escaping_must_change():
    assert len(VECTORS) >= 50
    assert len(set(VECTORS)) == len(VECTORS)
    assert all(SPECIAL & set(vector) for vector in VECTORS)


class Stage:
    """Clinic A's data, every text field of which is set to one value at a time."""

    def __init__(self, world) -> None:
        self.world = world
        self.failed = email_with_history(world.client_a)
        self.blocked = Client(clinic_id=world.clinic_a.id, name="Blocked", email="blocked@example.com")
        db.session.add(self.blocked)
        db.session.flush()
        self.reported = sending.queue_email(
            self.blocked, kind="free_text", subject="S", body="B", sent_by=None
        )
        ids = {"app_message_id": self.reported.app_message_id}
        apply_events(self.reported, [ProviderEvent("spamreport", utcnow(), **ids)], source="webhook")
        db.session.commit()
        self.pending = removal_case(world.client_a.email, tag="pending")
        self.decided = removal_case(self.blocked.email, tag="decided")
        self.decided.status, self.decided.decided_by_id = "rejected", world.users["support"].id
        self.alert = OperatorAlert(kind="email_stuck", message="stuck")
        db.session.add(self.alert)
        db.session.commit()

    def set(self, value: str) -> dict[str, str]:
        """Put the value in every field (cut to each column's size); return what was stored."""
        world, stored = self.world, {}

        def put(obj: object, column: str, text: str, size: int | None = None) -> None:
            text = text[:size] if size else text
            setattr(obj, column, text)
            key = f"{type(obj).__name__}.{column}"
            while key in stored:
                key += "'"
            stored[key] = text

        put(world.clinic_a, "name", value, 200)
        put(world.client_a, "name", value, 200)
        put(world.client_a, "email", value, 320)
        put(world.client_a, "phone", value, 50)
        put(self.failed, "subject", value, 300)
        put(self.failed, "body", value)
        self.failed.to_address = world.client_a.email  # the failure banner is about the address on file
        put(self.blocked, "name", "B" + value, 200)
        put(self.blocked, "email", "2" + value, 320)
        put(self.reported, "subject", "R" + value, 300)
        self.reported.to_address = self.blocked.email
        entry = db.session.execute(sa.select(SpamListEntry)).scalar_one()
        entry.address = self.blocked.email.strip().lower()
        for event in self.failed.events:
            if event.kind in ("deferred", "bounce"):
                put(event, "reason", value)
            elif event.kind == "delivered":
                event.raw = {"response": value}
            elif event.kind == "click":
                put(event, "url", value)
        for user in ("owner", "clinician", "support"):
            put(world.users[user], "name", value, 200)
        put(world.users["clinician"], "email", value, 320)
        for case in (self.pending, self.decided):
            put(case, "subject", value, 300)
            put(case, "body_excerpt", value)
            case.evidence = {
                "verified_by": "",
                "reasons": [value],
                "dkim": [{"d": value, "s": value, "result": value, "aligned": False, "error": value}],
                "receiver_dkim": value,
                "date": value,
            }
        self.pending.from_address = world.client_a.email.lower()
        put(self.pending, "from_address", self.pending.from_address)
        self.decided.from_address = self.blocked.email.lower()
        put(self.alert, "message", value)
        audit.record("email.send", world.users["owner"], clinic_id=world.clinic_a.id, detail=value)
        stored["AuditEntry.detail"] = value
        db.session.commit()
        return stored


def pages(stage: Stage, owner: FlaskClient, support: FlaskClient, anonymous: FlaskClient, value: str):
    """Render every page that shows the staged fields, and every form that echoes input."""
    world = stage.world
    a, blocked, email = world.client_a.id, stage.blocked.id, stage.failed.id
    htmx = {"HX-Request": "true"}
    yield "client list", owner.get("/clients", query_string={"q": value[:200]})
    yield "client list (htmx)", owner.get("/clients", query_string={"q": value[:200]}, headers=htmx)
    yield "client file", owner.get(f"/clients/{a}")
    yield "email log partial", owner.get(f"/clients/{a}/emails", headers=htmx)
    yield "email log partial, a row open", owner.get(f"/clients/{a}/emails?open={email}", headers=htmx)
    yield "timeline partial", owner.get(f"/emails/{email}/timeline", headers=htmx)
    yield "timeline page", owner.get(f"/emails/{email}/timeline")
    yield "blocked client file", owner.get(f"/clients/{blocked}")
    yield "resend confirmation", owner.post(f"/emails/{email}/resend")
    yield (
        "resend form echo",
        owner.post(f"/emails/{email}/resend", data={"confirm": "yes", "to_address": value}),
    )
    yield "help", owner.get("/help")
    yield "help panel", owner.get("/help/statuses/failed", headers=htmx)
    yield "owner users", owner.get("/clinic/users")
    new_user = {"name": value, "email": value, "role": "clinician", "password": "long enough password"}
    yield "owner add-user echo", owner.post("/clinic/users", data=new_user)
    yield "owner audit", owner.get("/clinic/audit")
    yield "support queue", support.get("/support/removal-requests")
    yield "support case", support.get(f"/support/removal-requests/{stage.pending.id}")
    yield "support decided case", support.get(f"/support/removal-requests/{stage.decided.id}")
    yield "login echo", anonymous.post("/login", data={"email": value, "password": value})


# The vectors are put through in a few shares, each a test of its own, so parallel runs spread them.
SHARES = 4


@pytest.mark.parametrize("share", range(SHARES), ids=lambda share: f"vectors{share + 1}of{SHARES}")
def test_no_vector_is_rendered_unescaped_anywhere(app, world, share):
    stage = Stage(world)
    owner, support, anonymous = app.test_client(), app.test_client(), app.test_client()
    login(owner, world.users["owner"].email)
    login(support, world.users["support"].email)

    stage.set(PLAIN)
    baseline: dict[str, tuple[set, int]] = {}
    for name, response in pages(stage, owner, support, anonymous, PLAIN):
        assert response.status_code < 500, name
        html = response.get_data(as_text=True)
        assert PLAIN in html or name in ("resend confirmation", "email log partial", "help panel"), name
        found = scan(html)
        baseline[name] = (set(found.elements), len(found.scripts))

    known = set().union(*(elements for elements, _ in baseline.values()))
    for vector in VECTORS[share::SHARES]:
        stored = stage.set(vector)
        rendered = []
        for name, response in pages(stage, owner, support, anonymous, vector):
            assert response.status_code < 500, (name, vector)
            html = response.get_data(as_text=True)
            rendered.append(html)
            for field, value in {**stored, "vector": vector}.items():
                if SPECIAL & set(value):
                    assert value not in html, f"{field} unescaped on the {name} page: {vector!r}"
            found = scan(html)
            _, scripts = baseline[name]
            # (Any page's own kinds of element: a vector may trip a form's validation message.)
            assert set(found.elements) <= known, (name, vector, set(found.elements) - known)
            assert len(found.scripts) == scripts, (name, vector)
            assert not found.problems, (name, vector, found.problems)
        # Every field really reached a page, escaped: the test is not passing on absent fields.
        everything = "".join(rendered)
        for field, value in stored.items():
            assert str(escape(value)) in everything, f"{field} shown nowhere: {vector!r}"


class Links(HTMLParser):
    """Every URL a page makes clickable or loadable."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value or "" for name, value in attrs if name in ("href", "src", "action", "hx-get")]


@pytest.mark.parametrize("url", ["https://tracker.example/c?u=1&x=2", "javascript:alert(1)", VECTORS[1]])
def test_click_urls_are_shown_as_text_never_as_links(app, world, url):
    stage = Stage(world)
    click = db.session.execute(sa.select(EmailEvent).where(EmailEvent.kind == "click")).scalar_one()
    click.url = url
    db.session.commit()
    owner = app.test_client()
    login(owner, world.users["owner"].email)
    html = owner.get(f"/clients/{stage.world.client_a.id}").get_data(as_text=True)
    # The row's timeline, as fetched when opened and as its own page.
    html += owner.get(f"/emails/{stage.failed.id}/timeline", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    html += owner.get(f"/emails/{stage.failed.id}/timeline").get_data(as_text=True)
    assert html.count(f'<span class="event-url wrap">{escape(url)}</span>') == 2
    links = Links()
    links.feed(html)
    assert links.urls and not any(url in link for link in links.urls)
