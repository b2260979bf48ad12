"""Forms of the client file."""

from flask_wtf import FlaskForm
from wtforms import SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from webapp.models import MESSAGE_KINDS


class SendEmailForm(FlaskForm):
    """Compose an email to the client from one of the message kinds."""

    kind = SelectField(
        "Kind of message",
        # SelectChoice, not (value, label) tuples: WTForms 3.3 deprecates tuples (removed in 3.4).
        choices=[SelectChoice(value, label) for value, label in MESSAGE_KINDS.items()],
        validators=[DataRequired()],
    )
    subject = StringField("Subject", validators=[Optional(), Length(max=200)])
    body = TextAreaField("Message text", validators=[Optional(), Length(max=20000)])

    def validate(self, extra_validators: dict | None = None) -> bool:
        """A custom message needs its own subject and text; the other kinds have defaults."""
        if not super().validate(extra_validators):
            return False
        if self.kind.data == "free_text":
            ok = True
            for field in (self.subject, self.body):
                if not (field.data or "").strip():
                    field.errors.append("Required for a custom message.")
                    ok = False
            return ok
        return True


class SandboxMailForm(FlaskForm):
    """Sandbox demo: play the client and email support (only the CSRF token)."""
