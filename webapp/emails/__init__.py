"""Actions on one email, and its copy as sent."""

from flask import Blueprint

bp = Blueprint("emails", __name__)

from webapp.emails import as_sent, routes  # noqa: E402,F401
