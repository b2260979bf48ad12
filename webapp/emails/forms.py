"""Resend form."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField
from wtforms.validators import DataRequired, Email, Length


class ResendForm(FlaskForm):
    """Confirm a resend: the address to use (editable) and whether to keep it in the client file."""

    to_address = EmailField("Send to", validators=[DataRequired(), Email(), Length(max=320)])
    update_client = BooleanField("Also save this address in the client file", default=True)
    # For an email the provider delivered: the help's advice (check junk folders) comes first.
    checked_junk = BooleanField("The client checked their junk and spam folders")
    confirm = HiddenField()
    # Whether the email was delivered (set by the view): then the junk folders must be checked.
    delivered = False

    def validate(self, extra_validators: dict | None = None) -> bool:
        """A delivered email is resent only once the client has looked in their junk folders."""
        ok = super().validate(extra_validators)
        if self.delivered and not self.checked_junk.data:
            self.checked_junk.errors.append(
                "First ask the client to look in their junk and spam folders: "
                "delivered emails are often there."
            )
            ok = False
        return ok
