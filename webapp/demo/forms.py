"""The demo's buttons: a form of nothing but the CSRF token."""

from flask_wtf import FlaskForm


class DemoActionForm(FlaskForm):
    """A demo button (only the CSRF token)."""
