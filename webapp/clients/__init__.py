"""The client list, the client file and its email log."""

from flask import Blueprint

bp = Blueprint("clients", __name__)

from webapp.clients import compose, exports, routes  # noqa: E402,F401
