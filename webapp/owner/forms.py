"""Forms for managing the clinic's users and settings."""

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length

from webapp import timezones


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
    """The clinic's own settings."""

    timezone = SelectField("Time zone", validators=[DataRequired()])

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.timezone.choices = [SelectChoice(name, name.replace("_", " ")) for name in timezones.choices()]
