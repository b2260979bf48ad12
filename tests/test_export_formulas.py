"""The export's formula guard: a value a spreadsheet would run as a formula, once it has skipped
what spreadsheets skip (white space, invisible characters) and read full-width or small forms as
plain ones, gets a leading quote, in the CSV and where it starts a line of the printed page."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from tests.helpers import login
from webapp.extensions import db
from webapp.models import Email
from webapp.services.exports import _cell

LEADS = ["", " ", "  ", "\n", "\r\n", "\t", "\u200b", "\u00a0", "\ufeff", "\u2060", "\u3000", " \u200b\n"]
STARTS = ["=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20", "\ufe66", "\ufe62", "\ufe63", "\u2212"]
HARMLESS = ["Reminder", "3 - 4 pm", "  Hello", "\u200bHello", "Re: =1", "", " ", "\uff21ppointment"]


@pytest.mark.parametrize("lead", LEADS)
@pytest.mark.parametrize("start", STARTS)
def test_a_formula_behind_what_spreadsheets_skip_is_guarded(lead, start):
    value = f'{lead}{start}HYPERLINK("http://evil.example","x")'
    assert _cell(value) == "'" + value


@pytest.mark.parametrize("value", HARMLESS)
def test_text_that_starts_no_formula_is_left_alone(value):
    assert _cell(value) == value


SUBJECTS = [
    "\u200b=cmd|' /C calc'!A0",
    ' =HYPERLINK("http://evil")',
    "\n+1+1",
    "\uff1dSUM(A1:A9)",
    "\uff20SUM(1)",
]


@pytest.fixture
def tricky(app, world):
    world.clinic_a.name = "\u200b\uff1dHYPERLINK(clinic)"
    world.client_a.name = "\n-2+3 Jane"
    for index, subject in enumerate(SUBJECTS):
        moment = datetime(2026, 3, 1, 9, index, tzinfo=UTC)
        db.session.add(
            Email(
                clinic_id=world.clinic_a.id,
                client_id=world.client_a.id,
                to_address=world.client_a.email,
                subject=subject,
                body="B",
                kind="appointment_reminder",
                provider="sandbox",
                created_at=moment,
                status_changed_at=moment,
            )
        )
    db.session.commit()
    return world


def test_the_csv_guards_every_such_cell(tricky, client):
    login(client, "clinician@a.example")
    text = client.get(f"/clients/{tricky.client_a.id}/export/csv?from=2026-03-01&to=2026-03-01").get_data(
        as_text=True
    )
    rows = list(csv.reader(io.StringIO(text)))
    facts = {row[0]: row[1] for row in rows[:6]}
    assert facts["Clinic"] == "'\u200b\uff1dHYPERLINK(clinic)"
    assert facts["Client"].startswith("'\n-2+3 Jane <")
    header = rows[7]
    subjects = [dict(zip(header, row, strict=True))["Subject"] for row in rows[8:]]
    assert subjects == ["'" + subject for subject in SUBJECTS]


def test_the_printed_page_guards_the_values_that_start_its_lines(tricky, client):
    login(client, "clinician@a.example")
    page = client.get(f"/clients/{tricky.client_a.id}/export/print?from=2026-03-01&to=2026-03-01").get_data(
        as_text=True
    )
    assert "<dd>&#39;\u200b\uff1dHYPERLINK(clinic)</dd>" in page  # &#39; is the quote
    assert "<dd>&#39;\n-2+3 Jane &lt;" in page
    # A subject follows the time on its line: it starts no cell, and is shown as written.
    assert "09:03 UTC · \uff1dSUM(A1:A9)</h2>" in page
