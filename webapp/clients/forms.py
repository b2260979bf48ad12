"""Forms of the client file."""

from __future__ import annotations

import contextlib
import re
from datetime import date, datetime, timedelta
from decimal import Decimal

from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    EmailField,
    FieldList,
    Form,
    FormField,
    IntegerField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional, ValidationError

from webapp import timezones
from webapp.models import APPOINTMENT_KINDS, MESSAGE_KINDS, utcnow
from webapp.services.email_content import (
    DEFAULT_MINUTES,
    MAX_RECEIPT_LINES,
    Compose,
    ReceiptLine,
)

RECEIPT_ROWS = 3  # rows shown at first; "Add a line" adds one, up to MAX_RECEIPT_LINES
# How far ahead an appointment may be. Also keeps a typed year like 9999 (or 0001) from being
# converted between zones at all: past the calendar's last day that overflows.
APPOINTMENT_AHEAD = timedelta(days=2 * 366)
# A receipt line's day: a service of the last ten years (a client asking for an old receipt for
# their insurer or taxes), or one paid ahead, at most a year from the clinic's today.
RECEIPT_YEARS_BACK = 10
RECEIPT_YEARS_AHEAD = 1
_AMOUNT = re.compile(r"^\d{1,7}(?:\.\d{1,2})?$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Control characters: none in a one-line field (a subject is a header; a line break in it would
# split it, and no browser's text box types one), and none but line breaks and tabs in the message
# text. PostgreSQL stores no NUL at all.
_CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class _NoControlCharacters:
    """Refuse typed text holding a control character (one-line fields: a line break too)."""

    def __init__(self, *, one_line: bool) -> None:
        self.pattern = _CONTROL_IN_LINE if one_line else _CONTROL_IN_TEXT
        self.message = (
            "Type it on one line, without control characters."
            if one_line
            else "The text holds a control character: type it again."
        )

    def __call__(self, form: Form, field: StringField) -> None:
        if isinstance(field.data, str) and self.pattern.search(field.data):
            raise ValidationError(self.message)


ONE_LINE = _NoControlCharacters(one_line=True)


class ReceiptLineForm(Form):
    """One line of a receipt: the service, its date and its amount (a row left empty is ignored)."""

    service = StringField("Service", validators=[Length(max=100), ONE_LINE])
    day = StringField("Date", validators=[Length(max=10), ONE_LINE])
    amount = StringField("Amount", validators=[Length(max=12), ONE_LINE])

    def is_empty(self) -> bool:
        """Whether nothing was typed on this line."""
        return not any((field.data or "").strip() for field in (self.service, self.day, self.amount))


class SendEmailForm(FlaskForm):
    """Compose an email to the client from one of the message kinds."""

    kind = SelectField(
        "Kind of message",
        # SelectChoice, not (value, label) tuples: WTForms 3.3 deprecates tuples (removed in 3.4).
        choices=[SelectChoice(value, label) for value, label in MESSAGE_KINDS.items()],
        validators=[DataRequired()],
    )
    subject = StringField("Subject", validators=[Optional(), Length(max=200), ONE_LINE])
    body = TextAreaField(
        "Message text", validators=[Optional(), Length(max=20000), _NoControlCharacters(one_line=False)]
    )
    appointment = DateTimeLocalField(
        "Appointment", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"], validators=[Optional()]
    )
    practitioner = StringField("Practitioner", validators=[Optional(), Length(max=100), ONE_LINE])
    minutes = IntegerField(
        "Length of the visit",
        validators=[Optional(), NumberRange(min=5, max=480, message="Enter between 5 and 480 minutes.")],
    )
    lines = FieldList(FormField(ReceiptLineForm), min_entries=RECEIPT_ROWS, max_entries=MAX_RECEIPT_LINES)
    # The clinic's zone, in which the typed appointment time is read, and why its intake form
    # cannot be linked, if it cannot (set by the view).
    clinic_timezone = "UTC"
    intake_problem = ""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.receipt_lines: list[ReceiptLine] = []
        self.lines_error = ""  # about the lines as a whole ("at least one")

    def appointment_at(self) -> datetime | None:
        """Return the typed appointment time in UTC, read in the clinic's time zone."""
        if self.appointment.data is None or self.kind.data not in APPOINTMENT_KINDS:
            return None
        return timezones.to_utc(self.appointment.data, self.clinic_timezone)

    def add_line(self) -> bool:
        """Show one more empty receipt line, if there is room; return whether there was."""
        if len(self.lines.entries) >= MAX_RECEIPT_LINES:
            return False
        self.lines.append_entry()
        return True

    def compose(self) -> Compose:
        """What was typed, for the kind chosen (call after validate)."""
        kind = self.kind.data
        return Compose(
            subject=self.subject.data or "",
            note=self.body.data or "",
            appointment_at=self.appointment_at(),
            minutes=(self.minutes.data or DEFAULT_MINUTES)
            if kind == "appointment_reminder"
            else DEFAULT_MINUTES,
            practitioner=(self.practitioner.data or "").strip() if kind in APPOINTMENT_KINDS else "",
            lines=tuple(self.receipt_lines) if kind == "receipt" else (),
        )

    def validate(self, extra_validators: dict | None = None) -> bool:
        """Each field belongs to some kinds only; every mistake is named at its field."""
        fields_ok = super().validate(extra_validators)
        kind = self.kind.data
        ok = fields_ok and self._validate_appointment()
        if (self.practitioner.data or "").strip() and kind not in APPOINTMENT_KINDS:
            self.practitioner.errors.append("Only reminders and intake forms name a practitioner.")
            ok = False
        if self.minutes.data is not None and kind != "appointment_reminder":
            self.minutes.errors.append("Only a reminder has a length (for its calendar file).")
            ok = False
        ok = self._validate_lines(kind) and ok
        if kind == "intake_form" and self.intake_problem:
            self.kind.errors.append(self.intake_problem)
            ok = False
        if kind == "free_text":
            for field in (self.subject, self.body):
                if not (field.data or "").strip():
                    field.errors.append("Required for a custom message.")
                    ok = False
        return ok

    def _validate_appointment(self) -> bool:
        """An appointment belongs to reminders and intake forms, exists and is in the future."""
        if self.appointment.data is None:
            return True
        if self.kind.data not in APPOINTMENT_KINDS:
            self.appointment.errors.append("Only reminders and intake forms are for an appointment.")
            return False
        # Compared as wall-clock times of the clinic, before any conversion (which could overflow).
        clinic_now = timezones.local(utcnow(), self.clinic_timezone).replace(tzinfo=None)
        typed = self.appointment.data.replace(tzinfo=None)
        if typed < clinic_now - timedelta(days=1):
            self.appointment.errors.append("The appointment must be in the future.")
            return False
        if typed > clinic_now + APPOINTMENT_AHEAD:
            self.appointment.errors.append("The appointment must be within two years from now.")
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
        return True

    def _validate_lines(self, kind: str | None) -> bool:
        """A receipt has at least one complete line; the other kinds have none."""
        self.receipt_lines = []
        typed = [entry.form for entry in self.lines.entries if not entry.form.is_empty()]
        if kind != "receipt":
            if typed:
                self.lines_error = "Only a receipt has lines: empty them, or choose Receipt."
                return False
            return True
        if not typed:
            self.lines_error = "A receipt needs at least one line: a service, its date and its amount."
            return False
        ok = True
        today = timezones.today(utcnow(), self.clinic_timezone)
        for line in typed:
            parsed = _receipt_line(line, today)
            if parsed is None:
                ok = False
            else:
                self.receipt_lines.append(parsed)
        return ok


def _years_from(day: date, years: int) -> date:
    """The same day `years` later (or earlier); 29 February becomes the 28th in another year."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _receipt_line(line: ReceiptLineForm, today: date) -> ReceiptLine | None:
    """Read one typed line, or put what is wrong on its fields and return None."""
    if line.errors:  # too long: already said
        return None
    service = (line.service.data or "").strip()
    day_text = (line.day.data or "").strip()
    amount_text = (line.amount.data or "").strip()
    day = amount = None
    if not service:
        line.service.errors.append("Name the service.")
    if _DAY.match(day_text):
        with contextlib.suppress(ValueError):
            day = date.fromisoformat(day_text)
    if day is None:
        line.day.errors.append("Enter a real date, as 2026-12-09." if day_text else "Enter its date.")
    elif day < _years_from(today, -RECEIPT_YEARS_BACK):
        line.day.errors.append(f"Enter a date within the last {RECEIPT_YEARS_BACK} years.")
        day = None
    elif day > _years_from(today, RECEIPT_YEARS_AHEAD):
        line.day.errors.append("Enter a date at most a year from today.")
        day = None
    if _AMOUNT.match(amount_text) and Decimal(amount_text) > 0:
        amount = Decimal(amount_text).quantize(Decimal("0.01"))
    else:
        line.amount.errors.append(
            "Enter an amount more than 0, with at most two decimals, as 45.00."
            if amount_text
            else "Enter its amount."
        )
    if not service or day is None or amount is None:
        return None
    return ReceiptLine(service, day, amount)


class AddressForm(FlaskForm):
    """Correct the client's email address on file."""

    email = EmailField("New email address", validators=[DataRequired(), Email(), Length(max=320)])
