"""Forms of the client file."""

from datetime import datetime

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, EmailField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, Length, Optional

from webapp import timezones
from webapp.models import APPOINTMENT_KINDS, MESSAGE_KINDS, utcnow


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
    appointment = DateTimeLocalField(
        "Appointment", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"], validators=[Optional()]
    )
    # The clinic's zone, in which the typed appointment time is read (set by the view).
    clinic_timezone = "UTC"

    def appointment_at(self) -> datetime | None:
        """Return the typed appointment time in UTC, read in the clinic's time zone."""
        if self.appointment.data is None or self.kind.data not in APPOINTMENT_KINDS:
            return None
        return timezones.to_utc(self.appointment.data, self.clinic_timezone)

    def validate(self, extra_validators: dict | None = None) -> bool:
        """A custom message needs its own subject and text; the other kinds have defaults.
        An appointment belongs to reminders and intake forms, and is in the future."""
        if not super().validate(extra_validators):
            return False
        if self.appointment.data is not None:
            if self.kind.data not in APPOINTMENT_KINDS:
                self.appointment.errors.append("Only reminders and intake forms are for an appointment.")
                return False
            if not timezones.exists(self.appointment.data, self.clinic_timezone):
                self.appointment.errors.append(
                    f"There is no such time in {self.clinic_timezone.replace('_', ' ')}: the clocks go "
                    "forward over it. Enter the time the clinic's clocks will show."
                )
                return False
            if self.appointment_at() <= utcnow():
                self.appointment.errors.append("The appointment must be in the future.")
                return False
        if self.kind.data == "free_text":
            ok = True
            for field in (self.subject, self.body):
                if not (field.data or "").strip():
                    field.errors.append("Required for a custom message.")
                    ok = False
            return ok
        return True


class AddressForm(FlaskForm):
    """Correct the client's email address on file."""

    email = EmailField("New email address", validators=[DataRequired(), Email(), Length(max=320)])
