"""Resend form."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField
from wtforms.validators import DataRequired, Email, Length


class ResendForm(FlaskForm):
    """Confirm a resend: the address to use (editable) and whether to keep it in the client file."""

    to_address = EmailField("Send to", validators=[DataRequired(), Email(), Length(max=320)])
    update_client = BooleanField("Also save this address in the client file", default=True)
    confirm = HiddenField()
