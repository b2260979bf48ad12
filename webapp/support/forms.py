"""Decision form of a removal case."""

from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import Length


class DecisionForm(FlaskForm):
    note = TextAreaField("Note for the audit trail", validators=[Length(max=2000)])
