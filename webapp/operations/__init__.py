"""The operator's view (support staff) and /metrics (Prometheus)."""

from flask import Blueprint

bp = Blueprint("operations", __name__)

from webapp.operations import routes  # noqa: E402,F401
