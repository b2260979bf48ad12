"""Forms for managing the clinic's users."""

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length


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
