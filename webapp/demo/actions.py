"""What the demo plays: the client emailing support, and the provider's support desk."""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, url_for

from webapp.extensions import db
from webapp.models import Client, Clinic


def post_sandbox_client_mail(address: str) -> int:
    """Play the client: write their signed removal mail in the sandbox and post it to our inbound route.

    Returns the inbound route's HTTP status (200 when the mail was filed). The mail goes through
    the real route and the real check, so the demo proves nothing the product would not.
    """
    from webapp.sandbox import client_mail

    config = current_app.config
    if config["EMAIL_PROVIDER"] != "sandbox":
        raise ValueError("the client's mail can be simulated only with EMAIL_PROVIDER=sandbox")
    address = address.strip()
    client = db.session.execute(
        sa.select(Client).where(sa.func.lower(Client.email) == address.lower()).order_by(Client.id).limit(1)
    ).scalar_one_or_none()
    clinic = db.session.get(Clinic, client.clinic_id) if client else None
    raw = client_mail.client_removal_mail(
        config, address, client.name if client else "", clinic.name if clinic else ""
    )
    db.session.commit()  # end this session's transaction before the inbound route writes
    post = client_mail.inbound_request(config, raw)  # as the sandbox's wire format posts it
    with current_app.test_request_context():  # a path to post to, from a request or the CLI alike
        path = url_for(post.endpoint)
    response = current_app.test_client().post(
        path, data=post.body, content_type=post.content_type, auth=post.auth
    )
    return response.status_code


def support_desk() -> bool:
    """Whether the sandbox plays a provider whose support must lift spam complaints (Postmark)."""
    return current_app.config["SANDBOX_WIRE_FORMAT"] == "postmark"


def reactivate(address: str) -> bool:
    """Play the provider's support: reactivate an address it would not lift through its API.

    True when the address was on its list.
    """
    from webapp.providers import get_sandbox

    return get_sandbox(current_app.config).reactivate(address)
