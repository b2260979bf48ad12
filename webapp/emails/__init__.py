"""Actions on one email."""

from flask import Blueprint

bp = Blueprint("emails", __name__)

from webapp.emails import routes  # noqa: E402,F401
