"""Forms for managing the clinic's users."""

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length


class NewUserForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=320)])
    role = SelectField("Role", choices=[("clinician", "Clinician"), ("owner", "Owner")])
    password = PasswordField("First password", validators=[DataRequired(), Length(min=12, max=200)])


class UserActionForm(FlaskForm):
    """Only the CSRF token: the action is in the URL."""
