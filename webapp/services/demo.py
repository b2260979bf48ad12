"""Demo data: a clinic, its users, clients on every sandbox scenario, 30 days of history."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import MESSAGE_KINDS, Client, Clinic, Email, EmailContent, SpamListEntry, User, utcnow
from webapp.providers.base import ProviderEvent
from webapp.services import accounts, email_content, sending
from webapp.services.events import apply_events

DEMO_CLINIC = "Harbour Physio & Massage"
DEMO_USERS = ("clinician@example.com", "owner@example.com", "support@example.com")

# (name, address): the +tag of an address picks its sandbox scenario (see docs/providers.md).
CLIENTS = (
    ("Jane Doe", "jane.doe+delivered@example.com"),
    ("Liam Chen", "liam.chen+deferred@example.com"),
    ("Priya Patel", "priya.patel+bounced@example.com"),
    ("Marco Rossi", "marco.rossi+dropped@example.com"),
    ("Aisha Khan", "aisha.khan+machine-open@example.com"),
    ("Tom Becker", "tom.becker+clicked@example.com"),
    ("Sofia Garcia", "sofia.garcia+spam@example.com"),
    ("Noah Williams", "noah.williams+stuck@example.com"),
    ("Ava Novak", "ava.novak+silent@example.com"),
    ("Emma Wilson", "emma.wilson@example.com"),
    ("Lucas Martin", "lucas.martin@example.com"),
    ("Olivia Brown", "olivia.brown@example.com"),
    ("Ethan Nguyen", "ethan.nguyen@example.com"),
    ("Mia Schmidt", "mia.schmidt@example.com"),
    ("Oscar Dubois", "oscar.dubois@example.com"),
    ("Chloe Taylor", "chloe.taylor@example.com"),
    ("Daniel Kim", "daniel.kim@example.com"),
    ("Grace O'Brien", "grace.obrien@example.com"),
    ("Hugo Lambert", "hugo.lambert@example.com"),
    ("Isla Murray", "isla.murray@example.com"),
    ("Mateo Silva", "mateo.silva@example.com"),
)

# The events that bring an email to each status, as (minutes after sending, kind, details).
HISTORIES: dict[str, list[tuple[float, str, dict]]] = {
    "processed": [(0.1, "processed", {})],
    "deferred": [
        (0.1, "processed", {}),
        (0.5, "deferred", {"attempt": 1, "reason": "421 4.7.0 Try again later"}),
    ],
    "delivered": [(0.1, "processed", {}), (0.5, "delivered", {"raw": {"response": "250 2.0.0 OK"}})],
    "open": [
        (0.1, "processed", {}),
        (0.5, "delivered", {"raw": {"response": "250 2.0.0 OK"}}),
        (42, "open", {"machine": True}),
    ],
    "clicked": [
        (0.1, "processed", {}),
        (0.5, "delivered", {"raw": {"response": "250 2.0.0 OK"}}),
        (38, "open", {}),
        (39, "click", {"url": "https://harbourphysio.example/intake"}),
    ],
    "failed": [
        (0.1, "processed", {}),
        (0.6, "bounce", {"reason": "550 5.1.1 The email account that you tried to reach does not exist"}),
    ],
    "spam-report": [
        (0.1, "processed", {}),
        (0.5, "delivered", {"raw": {"response": "250 2.0.0 OK"}}),
        (90, "open", {}),
        (91, "spamreport", {}),
    ],
}

# Which status each client's past emails ended in; the others get a random mix.
PINNED: dict[str, list[str]] = {
    "marco.rossi+dropped@example.com": ["delivered", "spam-report"],
    "priya.patel+bounced@example.com": ["delivered", "failed"],
    "olivia.brown@example.com": ["open", "spam-report"],
    "noah.williams+stuck@example.com": ["processed"],
    "liam.chen+deferred@example.com": ["deferred"],
    # Handed over twice, reported on never: held, and support alerted (webapp/services/in_doubt.py).
    "ava.novak+silent@example.com": ["delivered", "held"],
}


# Appointments at risk, for Needs attention: the last email of these clients is an appointment
# reminder sent (hours ago) for an appointment (hours from now).
APPOINTMENTS: dict[str, tuple[float, float]] = {
    "noah.williams+stuck@example.com": (3, 20),  # stuck, the visit is tomorrow: call
    "liam.chen+deferred@example.com": (2, 22),  # still deferred, the visit is tomorrow: call
    "priya.patel+bounced@example.com": (26, 46),  # failed: call before the visit
    "jane.doe+delivered@example.com": (20, 70),  # delivered: nothing to do
}
DEMO_TIMEZONE = "America/Vancouver"
# The demo clinic's identity, as its owner would set it under Settings: every email carries it.
DEMO_IDENTITY = {
    "reply_to_address": "front-desk@harbourphysio.example",
    "phone": "+1 604 555 0142",
    "postal_address": "1200 Harbour Street\nVancouver, BC V6B 1A1",
    "brand_colour": "#0f766e",
    "intake_form_url": "https://harbourphysio.example/intake",
}
# What the demo's receipts charge for (service, amount).
SERVICES = (
    ("Physiotherapy, 45 min", Decimal("95.00")),
    ("Massage therapy, 60 min", Decimal("110.00")),
    ("Follow-up assessment", Decimal("65.50")),
    ("Exercise band", Decimal("12.00")),
)
PRACTITIONERS = ("Dr Maya Lee", "Ben Okafor, RMT", "")


def seed(password: str) -> bool:
    """Create the demo data once; return False when it already exists."""
    if db.session.execute(sa.select(Clinic.id).where(Clinic.name == DEMO_CLINIC)).first():
        return False
    clinic = Clinic(name=DEMO_CLINIC, timezone=DEMO_TIMEZONE, **DEMO_IDENTITY)
    db.session.add(clinic)
    db.session.flush()
    accounts.create_user(DEMO_USERS[0], "Casey Clinician", "clinician", password, clinic)
    owner = accounts.create_user(DEMO_USERS[1], "Olive Owner", "owner", password, clinic)
    accounts.create_user(DEMO_USERS[2], "Sam Support", "support", password, None)
    rng = random.Random(42)
    now = utcnow()
    for name, address in CLIENTS:
        client = Client(
            clinic_id=clinic.id, name=name, email=address, phone=f"+1 555 01{rng.randint(10, 99)}"
        )
        db.session.add(client)
        db.session.flush()
        plan = PINNED.get(address) or rng.sample(
            ["delivered", "open", "clicked", "delivered"], k=rng.randint(1, 3)
        )
        ages = sorted((rng.uniform(1, 29) for _ in plan), reverse=True)
        for n, (status, age_days) in enumerate(zip(plan, ages, strict=True)):
            if status in ("processed", "deferred", "held"):
                age_days = rng.uniform(0.05, 0.5)  # still in flight: hours, not days, old
            appointment = APPOINTMENTS.get(address) if n == len(plan) - 1 else None
            if appointment is not None:
                sent_hours_ago, in_hours = appointment
                _history_email(
                    clinic,
                    client,
                    owner,
                    status,
                    now - timedelta(hours=sent_hours_ago),
                    rng,
                    appointment_at=(now + timedelta(hours=in_hours)).replace(
                        minute=0, second=0, microsecond=0
                    ),
                )
            else:
                _history_email(clinic, client, owner, status, now - timedelta(days=age_days), rng)
    db.session.commit()
    _share_spam_list_with_sandbox()
    return True


def _share_spam_list_with_sandbox() -> None:
    """Put every address our history shows reported as spam on the sandbox's own list too.

    The provider's list is the truth `maintenance.sync_spam_list` copies: without this, the first
    sync would unblock clients whose log shows a Spam report.
    """
    from flask import current_app

    from webapp.providers import get_sandbox

    if current_app.config["EMAIL_PROVIDER"] != "sandbox":
        return
    sandbox = get_sandbox(current_app.config)
    for entry in db.session.execute(sa.select(SpamListEntry)).scalars():
        sandbox.add_spam_report(entry.address, entry.reported_at.timestamp())


def set_passwords(password: str) -> None:
    """Give every demo user this password."""
    for user in db.session.execute(sa.select(User).where(User.email.in_(DEMO_USERS))).scalars():
        user.set_password(password)
    db.session.commit()


def _history_email(
    clinic: Clinic,
    client: Client,
    sender: User,
    status: str,
    sent_at: datetime,
    rng: random.Random,
    appointment_at: datetime | None = None,
) -> None:
    kind = rng.choice([kind for kind in MESSAGE_KINDS if kind != "free_text"])
    if appointment_at is not None:
        kind = "appointment_reminder"
    message_id = str(uuid.uuid4())
    rendered = email_content.render(
        kind,
        client,
        clinic,
        _compose(kind, sent_at, appointment_at, random.Random(f"{client.email} {sent_at}")),
        uid=sending.calendar_uid(message_id),
        now=sent_at,
    )
    email = Email(
        clinic_id=clinic.id,
        client_id=client.id,
        app_message_id=message_id,
        to_address=client.email,
        subject=rendered.subject,
        body=rendered.body_text,
        kind=kind,
        provider="sandbox",
        provider_message_id=uuid.uuid4().hex[:22],
        send_state="accepted",
        sent_by_id=sender.id,
        created_at=sent_at,
        status_changed_at=sent_at,
        appointment_at=appointment_at,
        content=EmailContent(
            body_html=rendered.body_html,
            reply_to=rendered.reply_to,
            calendar_ics=rendered.calendar_ics,
            **sending.headers_for(client, clinic),
        ),
    )
    db.session.add(email)
    db.session.flush()
    events = [ProviderEvent("sending", sent_at, app_message_id=email.app_message_id)]
    if status == "held":
        _held(email, sent_at)
    for minutes, kind_of_event, details in HISTORIES.get(status, []):
        events.append(
            ProviderEvent(
                kind_of_event,
                sent_at + timedelta(minutes=minutes),
                app_message_id=email.app_message_id,
                **details,
            )
        )
    apply_events(email, events, source="demo")
    # A history lived, not just received: we had each event when it happened (stuck counts from it).
    email.status_received_at = email.status_changed_at


def _compose(
    kind: str, sent_at: datetime, appointment_at: datetime | None, rng: random.Random
) -> email_content.Compose:
    """What a clinician would have typed for a history email of this kind (its own `rng`: the demo's
    draws the statuses and must not shift)."""
    if kind == "receipt":
        picked = rng.sample(SERVICES, k=rng.randint(1, 2))
        day = (sent_at - timedelta(hours=2)).date()
        return email_content.Compose(
            lines=tuple(email_content.ReceiptLine(service, day, amount) for service, amount in picked)
        )
    return email_content.Compose(appointment_at=appointment_at, practitioner=rng.choice(PRACTITIONERS))


def _held(email: Email, sent_at: datetime) -> None:
    """Make a history email one the provider took twice and never reported on: held, and alerted."""
    from flask import current_app

    from webapp.providers import get_provider
    from webapp.services import in_doubt

    email.provider_message_id = None
    email.send_attempts = 2
    email.resends_unfound = 1
    email.send_claimed_at = email.in_doubt_since = sent_at
    email.send_state = "in_doubt"
    in_doubt.hold(email, get_provider(current_app.config), utcnow())
