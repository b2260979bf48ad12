"""The security notes (docs/security.md) say what is left open on purpose, in the words the product uses: a
clinic that types an address on the shared spam list learns that it is blocked, and no more."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import DELIVERED, add_email, login, text
from webapp.extensions import db
from webapp.models import Client

SECURITY_DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def security_notes() -> str:
    """The "Security notes" section of docs/security.md, its lines joined."""
    doc = SECURITY_DOC.read_text()
    start = doc.index("## Security notes")
    end = doc.find("\n## ", start + 1)
    return " ".join(doc[start : end if end != -1 else len(doc)].split())


def test_the_one_bit_a_clinic_learns_from_the_spam_list_is_documented_as_the_product_says_it(app, world):
    notes = security_notes()
    assert "learns one bit" in notes
    for left_out in ("spam report", "which clinic's email was reported"):
        assert left_out in notes
    [shown] = re.findall(r'"(is blocked: [^"]+)"', notes)
    # Bob reported clinic B's email as spam; clinic A has him on file at the same address.
    add_email(world.client_b, subject="B's newsletter", events=[*DELIVERED, (60, "spamreport", {})])
    bob_at_a = Client(clinic_id=world.clinic_a.id, name="Bob at A", email=world.client_b.email)
    db.session.add(bob_at_a)
    db.session.commit()
    clinician = app.test_client()
    login(clinician, "clinician@a.example")
    answer = clinician.post(f"/clients/{bob_at_a.id}/emails", data={"kind": "appointment_reminder"})
    assert answer.status_code == 422
    assert f"{bob_at_a.email} {shown}" in text(answer.get_data(as_text=True))
