"""Provider webhooks: signed event batches and inbound mail."""

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

from webapp.webhooks import routes  # noqa: E402,F401
