"""What a person sees when a session ends or a button's address is opened as a page: the
sign-in page says why they are signed out and leads back to where they were; a reloaded or
bookmarked button address shows the product's own page, with a way back."""

from __future__ import annotations

import re
import time

import pytest
from flask.testing import FlaskClient

from tests.helpers import BOUNCED, PASSWORD, add_email, htmx_get, login, text

pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")


def login_notice(client: FlaskClient) -> str:
    """The words of the sign-in page above its form."""
    page = client.get("/login")
    assert page.status_code == 200
    return text(page.get_data(as_text=True))


# --- A button's address opened as a page -------------------------------------------------------


def test_a_reloaded_resend_address_shows_the_products_page_and_leads_back_to_the_file(app, world):
    email = add_email(world.client_a, events=BOUNCED)
    client = app.test_client()
    login(client, "clinician@a.example")
    response = client.get(f"/emails/{email.id}/resend")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    page = response.get_data(as_text=True)
    assert "Method Not Allowed" not in page and '<html lang="en">' in page and "Sign out" in page
    assert "works only from its button on the page" in text(page) and "Nothing was done" in text(page)
    link = re.search(r'<a href="([^"]+)">Back to Jane Doe’s file</a>', page)
    assert link and link.group(1) == f"/clients/{world.client_a.id}#email-{email.id}"


@pytest.mark.parametrize(
    ("who", "path", "back", "words"),
    [
        ("owner@a.example", "/clinic/users/{user}/deactivate", "/clinic/users", "Back to Users"),
        ("owner@a.example", "/clinic/settings", None, None),  # a page of its own: no 405
        (
            "clinician@a.example",
            "/clients/{client}/address",
            "/clients/{client}",
            "Back to the client’s file",
        ),
        ("clinician@a.example", "/attention/emails/1/handled", "/attention", "Back to Needs attention"),
        (
            "support@platform.example",
            "/support/removal-requests/7/reject",
            "/support/removal-requests/7",
            None,
        ),
        (
            "support@platform.example",
            "/support/alerts/3/resolve",
            "/support/removal-requests",
            "Back to Support",
        ),
    ],
)
def test_every_button_address_leads_back_to_its_page(app, world, who, path, back, words):
    client = app.test_client()
    login(client, who)
    ids = {"user": world.users["clinician"].id, "client": world.client_a.id}
    response = client.get(path.format(**ids))
    if back is None:
        assert response.status_code == 200
        return
    assert response.status_code == 405
    page = response.get_data(as_text=True)
    assert f'<a href="{back.format(**ids)}">' in page
    if words:
        assert words in page


def test_nobody_learns_another_clinics_client_from_the_page(app, world):
    others = add_email(world.client_b, events=BOUNCED)
    client = app.test_client()
    login(client, "clinician@a.example")
    page = client.get(f"/emails/{others.id}/resend").get_data(as_text=True)
    assert "Bob Other" not in page and f"/clients/{world.client_b.id}" not in page
    assert '<a href="/">Back to the start</a>' in page
    anonymous = app.test_client().get("/logout")
    assert anonymous.status_code == 405 and "Use the button on the page" in anonymous.get_data(as_text=True)
    # The reverse (a form posted to a page's address) is not a button's address.
    posted = client.post("/help")
    assert posted.status_code == 405 and "Not accepted here" in posted.get_data(as_text=True)
    assert "button" not in text(posted.get_data(as_text=True)).replace("Sign out", "")
    # An htmx request gets the words alone, not a page to swap in.
    bare = htmx_get(client, f"/emails/{others.id}/resend")
    assert bare.status_code == 405 and "<html" not in bare.get_data(as_text=True)


# --- Signing out ---------------------------------------------------------------------------------


def test_sign_out_lands_on_the_sign_in_page_saying_so(app, world):
    client = app.test_client()
    login(client, "clinician@a.example")
    response = client.post("/logout")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "You are signed out." in login_notice(client)
    # Another tab of the same browser, opening a page, lands there too, and hears the same.
    tab = client.get(f"/clients/{world.client_a.id}")
    assert tab.headers["Location"] == "/login"
    assert "You are signed out." in login_notice(client)
    login(client, "clinician@a.example")
    client.post("/logout")
    client.post("/login", data={"email": "clinician@a.example", "password": PASSWORD})
    assert "signed out" not in client.get("/clients").get_data(as_text=True)  # said until the next sign-in


def test_a_tab_ended_by_sign_out_everywhere_says_why_and_returns_where_it_was(app, world):
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, "clinician@a.example")
    login(phone, "clinician@a.example")
    where = f"/clients/{world.client_a.id}?filter=failed"
    assert phone.get(where).status_code == 200

    laptop.post("/logout/everywhere")
    assert "You are signed out on every device" in login_notice(laptop)
    response = phone.get(where)
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    notice = login_notice(phone)
    assert "You are signed out on every device (“Sign out everywhere” was used" in notice
    assert "Sign in again to go back to where you were." in notice
    response = phone.post("/login", data={"email": "clinician@a.example", "password": PASSWORD})
    assert response.headers["Location"] == where


def test_an_open_log_refreshing_itself_brings_the_tab_back_to_its_page(app, world):
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, "clinician@a.example")
    login(phone, "clinician@a.example")
    page = f"/clients/{world.client_a.id}"
    laptop.post("/logout/everywhere")
    poll = phone.get(
        f"{page}/emails", headers={"HX-Request": "true", "HX-Current-URL": f"http://localhost{page}#email-3"}
    )
    assert poll.status_code == 204 and poll.headers["HX-Redirect"] == "/login"
    assert "You are signed out on every device" in login_notice(phone)
    response = phone.post("/login", data={"email": "clinician@a.example", "password": PASSWORD})
    assert response.headers["Location"] == page


@pytest.mark.parametrize(
    "current",
    [
        "http://evil.example/clients/1",
        "https://localhost.evil.example/",
        "javascript:alert(1)",
        "/clients/1",
        "",
    ],
)
def test_a_tab_on_another_site_is_not_where_sign_in_returns(app, world, current):
    client = app.test_client()
    login(client, "clinician@a.example")
    client.post("/logout")
    poll = client.get(
        f"/clients/{world.client_a.id}/emails", headers={"HX-Request": "true", "HX-Current-URL": current}
    )
    assert poll.headers["HX-Redirect"] == "/login"
    response = client.post("/login", data={"email": "clinician@a.example", "password": PASSWORD})
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize(
    "unsafe",
    ["//evil.example/", "/\\evil.example", "/\t/evil.example", "/\n/evil.example", "https://evil.example/"],
)
def test_sign_in_never_returns_to_another_site(app, world, unsafe):
    from webapp.security import safe_next

    assert safe_next(unsafe) is None
    client = app.test_client()
    with client.session_transaction() as session:
        session["next_url"] = unsafe
    response = client.post("/login", data={"email": "clinician@a.example", "password": PASSWORD})
    assert response.headers["Location"] == "/"


def test_a_deactivated_or_idle_session_says_why(app, world):
    from webapp.services import staff

    client = app.test_client()
    login(client, "clinician@a.example")
    staff.set_active(world.users["owner"], world.users["clinician"].id, active=False)
    assert client.get("/attention").headers["Location"] == "/login"
    assert "your account has been deactivated" in login_notice(client)

    idle = app.test_client()
    login(idle, "owner@a.example")
    with idle.session_transaction() as session:
        session["seen_at"] = int(time.time()) - 31 * 60
    assert idle.get("/clinic/users").headers["Location"] == "/login"
    assert "You were signed out after 30 minutes without activity." in login_notice(idle)
    response = idle.post("/login", data={"email": "owner@a.example", "password": PASSWORD})
    assert response.headers["Location"] == "/clinic/users"
