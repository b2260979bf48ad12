"""Forms of the client file."""

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from webapp.models import MESSAGE_KINDS


class SendEmailForm(FlaskForm):
    kind = SelectField("Kind of message", choices=list(MESSAGE_KINDS.items()), validators=[DataRequired()])
    subject = StringField("Subject", validators=[Optional(), Length(max=200)])
    body = TextAreaField("Message", validators=[Optional(), Length(max=20000)])

    def validate(self, extra_validators: dict | None = None) -> bool:
        """Free text needs its own subject and message; the other kinds have defaults."""
        if not super().validate(extra_validators):
            return False
        if self.kind.data == "free_text":
            ok = True
            for field in (self.subject, self.body):
                if not (field.data or "").strip():
                    field.errors.append("Required for a free-text message.")
                    ok = False
            return ok
        return True
