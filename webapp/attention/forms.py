"""Forms of the Needs attention page."""

from flask_wtf import FlaskForm


class HandledForm(FlaskForm):
    """Mark an item as dealt with (only the CSRF token)."""
