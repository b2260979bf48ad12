"""The help guide: what each delivery status means and what to do next."""

from flask import Blueprint

bp = Blueprint("help", __name__)

from webapp.help import routes  # noqa: E402,F401
