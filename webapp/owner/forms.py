"""Forms for managing the clinic's users and settings."""

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectChoice, SelectField, StringField, TextAreaField, URLField
from wtforms.validators import DataRequired, Email, Length

from webapp import timezones
from webapp.services import clinic_identity


class NewUserForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=320)])
    # SelectChoice, not (value, label) tuples: WTForms 3.3 deprecates tuples (removed in 3.4).
    role = SelectField(
        "Role", choices=[SelectChoice("clinician", "Clinician"), SelectChoice("owner", "Owner")]
    )
    password = PasswordField("First password", validators=[DataRequired(), Length(min=12, max=200)])


class UserActionForm(FlaskForm):
    """Only the CSRF token: the action is in the URL."""


class ClinicSettingsForm(FlaskForm):
    """The clinic's own settings: its time zone and its identity in emails."""

    timezone = SelectField("Time zone", validators=[DataRequired()])
    # Read by services/clinic_identity.py (in validate): the rules live there, beside the save.
    reply_to_address = EmailField("Reply-to address")
    phone = StringField("Phone")
    postal_address = TextAreaField("Postal address")
    brand_colour = StringField("Brand colour")
    intake_form_url = URLField("Intake form link")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.timezone.choices = [SelectChoice(name, name.replace("_", " ")) for name in timezones.choices()]
        self.identity: clinic_identity.ClinicIdentity | None = None

    def validate(self, extra_validators: dict | None = None) -> bool:
        """Check the time zone, then every part of the identity (each refusal on its own field)."""
        ok = super().validate(extra_validators)
        typed = {name: self[name].data or "" for name in clinic_identity.READERS}
        self.identity, errors = clinic_identity.read(typed)
        for name, message in errors.items():
            self[name].errors.append(message)
        return ok and not errors
