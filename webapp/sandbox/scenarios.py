"""What happens to a message in the sandbox, in no provider's words.

The recipient address picks a scenario: the tag after "+" in the local part, else the whole local
part; other addresses get a random but repeatable progression. A scenario is a timeline of neutral
steps (seconds after acceptance, step); a wire format renders each step in its provider's words.
A message's events are a pure function of (message, accepted_at, now): an event is visible once
its time has come, so a test moves an injected clock instead of sleeping.

The providers' tracking rules hold for every scenario (webapp/sandbox/tracking.py): an open only
for a message with an HTML part sent with open tracking on (the pixel), a click only on one of the
message's tracked links (with click tracking on, the HTML part's web links), and its url is that
link. A scenario's open or click a message cannot report is left out, the rest of the timeline
kept: to a text-only email, `clicked` and `machine-open` stop at Delivered, and `spam` and
`spam-filtered` go from Delivered to their spam notice.

Step kinds are our own event kinds (webapp/event_kinds.py), those a provider reports: processed,
deferred, delivered, bounced, opened, clicked, reported as spam, filed as spam (the receiving
server took the email, then filed it as spam: Postmark reports it, SendGrid has no word for it),
and dropped (the provider would not send: the address is on its spam-report list; `reject` says
why in our words).

One scenario is the account's, not the message's: `silent` plays an account that accepts and never
reports. The message is taken (stored, and counted by the fault tests), but the answer to the send
request is lost (500), and no records answer, list or webhook ever shows it.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, replace

from webapp.event_kinds import EventKind, event_kind
from webapp.sandbox.store import UNREPORTED, SimMessage, Store

STEP_KINDS: tuple[EventKind, ...] = (
    EventKind.PROCESSED,
    EventKind.DEFERRED,
    EventKind.DELIVERED,
    EventKind.BOUNCED,
    EventKind.OPENED,
    EventKind.CLICKED,
    EventKind.REPORTED_AS_SPAM,
    EventKind.FILED_AS_SPAM,
    EventKind.DROPPED,
)


@dataclass(frozen=True)
class Step:
    """One event of a scenario, in our own words."""

    event: EventKind  # one of STEP_KINDS
    attempt: int | None = None
    reason: str | None = None  # the receiving server's SMTP answer, when there is one
    url: str | None = None
    machine: bool = False
    reject: str | None = None  # for a drop: why, as a base.RejectReason

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", event_kind(self.event))
        if self.event not in STEP_KINDS:
            raise ValueError(f"{self.event!r} is not a step a provider reports (scenarios.STEP_KINDS)")


DEFER_REASON = "421 4.7.0 Try again later"
BOUNCE_REASON = "550 5.1.1 The email account that you tried to reach does not exist"
# What a receiving server may really answer: a NUL, and half of a surrogate pair (sent escaped in
# JSON, as "\u0000" and "\ud800"). Nothing about it may lose the events that come with it.
DIRTY_BOUNCE_REASON = "550 5.1.1 no\x00such user \ud800"
BOUNCE_STATUS = "5.1.1"
INTAKE_FORM_URL = "https://example.com/intake-form"
OTHER_URLS = (INTAKE_FORM_URL, "https://example.com/appointments", "https://example.com/invoices/latest")
SANDBOX_IP = "192.0.2.25"  # TEST-NET-1: addresses that belong to nobody
CLIENT_IP = "198.51.100.7"
MX_SERVER = "mx.sandbox.invalid"
USER_AGENT = "Mozilla/5.0 (sandbox)"

PROCESSED = Step(EventKind.PROCESSED)
DELIVERED = Step(EventKind.DELIVERED)
OPENED = Step(EventKind.OPENED)
BOUNCED = Step(EventKind.BOUNCED, reason=BOUNCE_REASON)
DROPPED_FOR_SPAM = Step(EventKind.DROPPED, reject="spam_report")

# scenario -> [(seconds after acceptance, step)]. "dropped" is also what any address already on
# the spam-report list gets; the scenario's own job is to put its address on that list first.
SCENARIOS: dict[str, list[tuple[float, Step]]] = {
    "delivered": [(1, PROCESSED), (3, DELIVERED)],
    "deferred": [
        (1, PROCESSED),
        (2, Step(EventKind.DEFERRED, attempt=1, reason=DEFER_REASON)),
        (5, Step(EventKind.DEFERRED, attempt=2, reason=DEFER_REASON)),
        (8, DELIVERED),
    ],
    "bounced": [(1, PROCESSED), (3, BOUNCED)],
    "dropped": [(1, PROCESSED), (2, DROPPED_FOR_SPAM)],
    "machine-open": [(1, PROCESSED), (3, DELIVERED), (6, Step(EventKind.OPENED, machine=True))],
    "clicked": [
        (1, PROCESSED),
        (3, DELIVERED),
        (12, OPENED),
        (15, Step(EventKind.CLICKED, url=INTAKE_FORM_URL)),
    ],
    "spam": [(1, PROCESSED), (3, DELIVERED), (12, OPENED), (20, Step(EventKind.REPORTED_AS_SPAM))],
    # Opened, then the client's mail server says it filed the email as spam (a late notice).
    "spam-filtered": [(1, PROCESSED), (3, DELIVERED), (12, OPENED), (20, Step(EventKind.FILED_AS_SPAM))],
    "stuck": [(1, PROCESSED)],
    UNREPORTED: [],  # taken, and never a word about it
    "dirty-bytes": [(1, PROCESSED), (3, Step(EventKind.BOUNCED, reason=DIRTY_BOUNCE_REASON))],
}
RANDOM = "random"


@dataclass(frozen=True)
class Visible:
    """An event of a message whose time has come."""

    index: int  # position in the message's timeline, stable across calls
    at: int  # unix seconds, the same in webhook and API answers
    step: Step


def scenario_for(address: str) -> str:
    """Return the scenario an address asks for: its +tag, else its local part, else random."""
    local = address.split("@", 1)[0].lower()
    tag = local.split("+", 1)[1] if "+" in local else local
    return tag if tag in SCENARIOS else RANDOM


def timeline(scenario: str, msg_id: str) -> list[tuple[float, Step]]:
    """Return every event a message will ever have, in order."""
    return SCENARIOS[scenario] if scenario in SCENARIOS else random_timeline(msg_id)


def message_timeline(message: SimMessage) -> list[tuple[int, float, Step]]:
    """Return every event a message will ever have, as (index, offset, step): its scenario's, as the
    provider's tracking allows. The index is the step's place in the scenario (stable, unique)."""
    kept = []
    for index, (offset, step) in enumerate(timeline(message.scenario, message.msg_id)):
        if step.event == EventKind.OPENED and not message.opens_tracked:
            continue  # no pixel: nothing to fetch
        if step.event == EventKind.CLICKED:
            if not message.links:
                continue  # no rewritten link: nothing to click through
            if step.url not in message.links:
                step = replace(step, url=message.links[index % len(message.links)])
        kept.append((index, offset, step))
    return kept


def timeline_length(message: SimMessage) -> int:
    """Return how many events a message will ever have."""
    return len(message_timeline(message))


def random_timeline(msg_id: str) -> list[tuple[float, Step]]:
    """A realistic progression over a few seconds, the same every time for the same msg_id."""
    rng = random.Random(msg_id)
    at = rng.uniform(0.5, 2.0)
    steps = [(at, PROCESSED)]
    if rng.random() < 0.15:
        at += rng.uniform(1, 3)
        steps.append((at, Step(EventKind.DEFERRED, attempt=1, reason=DEFER_REASON)))
    at += rng.uniform(1, 5)
    if rng.random() < 0.03:
        return [*steps, (at, BOUNCED)]
    steps.append((at, DELIVERED))
    if rng.random() < 0.6:
        at += rng.uniform(2, 30)
        steps.append((at, Step(EventKind.OPENED, machine=rng.random() < 0.4)))
        if rng.random() < 0.3:
            at += rng.uniform(1, 15)
            steps.append((at, Step(EventKind.CLICKED, url=rng.choice(OTHER_URLS))))
    return steps


def event_time(accepted_at: float, offset: float, speed: float) -> float:
    """Return when an event `offset` seconds after acceptance happens, at this sandbox's speed."""
    return accepted_at + offset / speed


def visible(message: SimMessage, now: float, speed: float) -> list[Visible]:
    """Return the events of a message whose time has come."""
    return [
        Visible(index, int(event_time(message.accepted_at, offset, speed)), step)
        for index, offset, step in message_timeline(message)
        if event_time(message.accepted_at, offset, speed) <= now
    ]


def accept(db: sqlite3.Connection, message: SimMessage, speed: float) -> SimMessage:
    """Store a message the provider took, with the scenario it will live; return it as stored.

    message.scenario is the one its address asks for; an address on the spam-report list is
    dropped whatever it asks. The list entries the scenario will make (a spam report, a bounce)
    are written now, dated when they happen: lists answer only entries whose time has come.
    """
    email, now = message.to_email, message.accepted_at
    wanted = message.scenario
    # Dropped whatever it asks while on the list; the `dropped` address, once lifted, is delivered.
    on_list = suppressed(db, email, now)
    scenario = "dropped" if on_list else ("delivered" if wanted == "dropped" else wanted)
    stored = SimMessage(**{**message.__dict__, "scenario": scenario})
    Store.insert_message(db, stored)
    for offset, step in timeline(scenario, stored.msg_id):
        at = int(event_time(now, offset, speed))
        if step.event == EventKind.REPORTED_AS_SPAM:
            Store.add_spam_report(db, email, at, CLIENT_IP)
        elif step.event == EventKind.BOUNCED:
            Store.add_bounce(db, email, at, BOUNCE_REASON, BOUNCE_STATUS)
    return stored


def suppressed(db: sqlite3.Connection, email: str, now: float) -> bool:
    """Return whether an address is on the spam-report list as a message to it arrives.

    An address of the `dropped` scenario is put on the list by its first message (once: a removal
    must stick). A wire format whose provider refuses such a send at once (Postmark's 406) calls
    this before accepting; one that accepts and drops it later (SendGrid) lets `accept` do it.
    """
    if scenario_for(email) == "dropped" and Store.seed_once(db, email):
        Store.add_spam_report(db, email, int(now), CLIENT_IP, keep_existing=True)
    return Store.on_spam_list(db, email, now)
