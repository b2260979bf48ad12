"""Clinic owners: the clinic's users and its audit trail."""

from flask import Blueprint

bp = Blueprint("owner", __name__, url_prefix="/clinic")

from webapp.owner import reports, routes  # noqa: E402,F401
