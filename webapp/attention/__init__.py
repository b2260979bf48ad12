"""Needs attention: the clinician's landing page."""

from flask import Blueprint

bp = Blueprint("attention", __name__)

from webapp.attention import routes  # noqa: E402,F401
