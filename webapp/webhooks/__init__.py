"""Provider webhooks: signed event batches (routes.py) and inbound mail (inbound.py)."""

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

from webapp.webhooks import inbound, routes  # noqa: E402,F401
