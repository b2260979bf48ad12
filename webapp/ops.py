"""Operational endpoints."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify
from redis.exceptions import RedisError
from werkzeug.wrappers import Response

from webapp.extensions import db, limiter

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@limiter.exempt
def healthz() -> tuple[Response, int]:
    """Say whether the database and Redis answer (503 when either does not)."""
    checks = {"database": True, "redis": True}
    try:
        db.session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        checks["database"] = False
    try:
        current_app.extensions["redis"].ping()
    except RedisError:
        checks["redis"] = False
    healthy = all(checks.values())
    return jsonify(status="ok" if healthy else "unavailable", **checks), 200 if healthy else 503
