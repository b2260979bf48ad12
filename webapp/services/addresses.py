"""Correcting a client's email address: audited, and every open file of the client refreshes."""

from __future__ import annotations

from webapp.extensions import db
from webapp.freshness.counters import mark_logs_changed
from webapp.models import Client, User
from webapp.services import audit


def correct_address(client: Client, address: str, by: User | None, why: str = "") -> bool:
    """Put a corrected address in the client file (the caller commits); return whether it changed."""
    address = address.strip()
    old = client.email
    if address.lower() == old.strip().lower() and address == old:
        return False
    audit.record(
        "client.update_email",
        by,
        clinic_id=client.clinic_id,
        subject_type="client",
        subject_id=client.id,
        detail=f"{old} → {address}" + (f" ({why})" if why else ""),
    )
    client.email = address
    # Open client files refresh: the header, the banner and the send form follow the address.
    mark_logs_changed(db.session, [(client.clinic_id, client.id)])
    return True
