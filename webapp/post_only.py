"""The way back from a button's address opened as a page (a reload, a bookmark, a pasted link).

A button posts to its address; opened directly, that address has nothing to show. The error page
then links back to the page the button is on.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, request, url_for
from flask_login import current_user
from werkzeug.exceptions import HTTPException

from webapp.extensions import db
from webapp.models import Client, Email

# A POST-only endpoint: the page its button is on, and that page's name in "Back to …".
BUTTON_PAGES = {
    "attention.handled": ("attention.index", "Needs attention"),
    "clients.send": ("clients.show", "the client’s file"),
    "clients.preview": ("clients.show", "the client’s file"),
    "clients.add_receipt_line": ("clients.show", "the client’s file"),
    "clients.correct_address": ("clients.show", "the client’s file"),
    "demo.client_removal_mail": ("clients.show", "the client’s file"),
    "demo.provider_reactivate": ("support.case", "the case"),
    "owner.add_user": ("owner.users", "Users"),
    "owner.activate_user": ("owner.users", "Users"),
    "owner.deactivate_user": ("owner.users", "Users"),
    "owner.save_settings": ("owner.settings", "Settings"),
    "support.approve": ("support.case", "the case"),
    "support.reject": ("support.case", "the case"),
    "support.provider_lifted": ("support.case", "the case"),
    "support.resolve_alert": ("support.queue", "Support"),
}


def back_link() -> tuple[str, str] | None:
    """Return (url, words) of the page whose button posts to the requested address, or None."""
    try:
        endpoint, args = current_app.url_map.bind_to_environ(request.environ).match(method="POST")
    except HTTPException:
        return None
    if endpoint == "emails.resend":
        return _client_file_of(args["email_id"])
    if endpoint not in BUTTON_PAGES:
        return None
    page, words = BUTTON_PAGES[endpoint]
    page_args = {name: value for name, value in args.items() if name in ("client_id", "case_id")}
    return url_for(page, **page_args), f"Back to {words}"


def _client_file_of(email_id: int) -> tuple[str, str] | None:
    """The client file holding the email, if the signed-in user's clinic has it."""
    clinic_id = current_user.clinic_id if current_user.is_authenticated else None
    if clinic_id is None:
        return None
    client = db.session.execute(
        sa.select(Client.id, Client.name)
        .join(Email, Email.client_id == Client.id)
        .where(Email.id == email_id, Email.clinic_id == clinic_id)
    ).first()
    if client is None:
        return None
    return f"{url_for('clients.show', client_id=client.id)}#email-{email_id}", f"Back to {client.name}’s file"
