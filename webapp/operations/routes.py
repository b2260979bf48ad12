"""The operator's view and /metrics."""

from __future__ import annotations

import hmac

from flask import abort, current_app, render_template, request
from flask_login import current_user
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response

from webapp.extensions import limiter
from webapp.operations import bp, metrics
from webapp.security import support_required
from webapp.services import operations


@bp.get("/support/operations")
@support_required
def overview() -> str:
    """Show queue depths, ingestion, webhook lag, the activity budget and open alerts."""
    return render_template("operations/overview.html", snap=operations.snapshot())


@bp.get("/metrics")
@limiter.exempt
def prometheus() -> Response:
    """Serve the same figures in Prometheus text format, to a scraper's token or a support user."""
    if not (_scraper_token_ok() or (current_user.is_authenticated and current_user.role == "support")):
        if current_user.is_authenticated:
            abort(404)
        response = Response("Unauthorized\n", status=401, mimetype="text/plain")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return Response(metrics.render(operations.snapshot()), content_type=CONTENT_TYPE_LATEST)


def _scraper_token_ok() -> bool:
    """Whether the request carries METRICS_TOKEN as a bearer token (compared in constant time)."""
    expected = current_app.config["METRICS_TOKEN"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
