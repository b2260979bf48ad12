"""A large data set for load tests and benchmarks, made in the database itself (PostgreSQL only).

Every row is made by INSERT ... SELECT over generate_series, in chunks of one transaction each,
so a million emails with their events take minutes, not hours. The events carry the same
dedupe keys the app computes (ProviderEvent.dedupe_key), so a replayed webhook of a seeded
event is recognised as already stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from webapp import statuses
from webapp.extensions import db

LOAD_DOMAIN = "load.example"
FIRST_NAMES = [
    "Ada",
    "Ben",
    "Cara",
    "Dan",
    "Eve",
    "Finn",
    "Gia",
    "Hal",
    "Ivy",
    "Jon",
    "Kai",
    "Lea",
    "Max",
    "Nia",
    "Oli",
    "Pia",
    "Quin",
    "Rae",
    "Sam",
    "Tia",
    "Uma",
    "Vic",
    "Wes",
    "Xia",
    "Yan",
    "Zoe",
    "Amir",
    "Beth",
    "Carl",
    "Dina",
    "Emil",
    "Fay",
    "Gus",
    "Hana",
    "Ivan",
    "Jade",
    "Karl",
    "Lina",
    "Milo",
    "Nora",
    "Otto",
    "Pam",
    "Raul",
    "Sara",
    "Theo",
    "Una",
    "Vera",
    "Walt",
    "Yara",
    "Zed",
]
LAST_NAMES = [
    "Smith",
    "Jones",
    "Brown",
    "Taylor",
    "Wilson",
    "Davies",
    "Evans",
    "Thomas",
    "Johnson",
    "Roberts",
    "Walker",
    "Wright",
    "Robinson",
    "Thompson",
    "White",
    "Hughes",
    "Edwards",
    "Green",
    "Hall",
    "Wood",
    "Harris",
    "Lewis",
    "Martin",
    "Jackson",
    "Clarke",
    "Clark",
    "Turner",
    "Hill",
    "Scott",
    "Cooper",
    "Morris",
    "Ward",
    "Moore",
    "King",
    "Watson",
    "Baker",
    "Harrison",
    "Morgan",
    "Patel",
    "Young",
    "Allen",
    "Mitchell",
    "James",
    "Anderson",
    "Phillips",
    "Lee",
    "Bell",
    "Parker",
    "Davis",
    "Nguyen",
    "Garcia",
    "Kim",
    "Rossi",
    "Muller",
    "Novak",
    "Silva",
    "Costa",
    "Sato",
    "Chen",
    "Singh",
    "Khan",
    "Ali",
    "Okafor",
]

# plan -> (share of emails in percent, [(seconds after sending, event kind, reason, url, attempt, machine)])
PLANS: dict[str, tuple[int, list[tuple[int, str, str | None, str | None, int | None, bool]]]] = {
    "failed": (
        3,
        [
            (1, "processed", None, None, None, False),
            (4, "bounce", "550 5.1.1 user unknown", None, None, False),
        ],
    ),
    "spam": (
        1,
        [
            (1, "processed", None, None, None, False),
            (3, "delivered", None, None, None, False),
            (600, "open", None, None, None, False),
            (660, "spamreport", None, None, None, False),
        ],
    ),
    "deferred": (
        1,
        [
            (1, "processed", None, None, None, False),
            (2, "deferred", "421 4.7.0 Try again later", None, 1, False),
            (900, "delivered", None, None, None, False),
        ],
    ),
    "delivered": (40, [(1, "processed", None, None, None, False), (3, "delivered", None, None, None, False)]),
    "open": (
        30,
        [
            (1, "processed", None, None, None, False),
            (3, "delivered", None, None, None, False),
            (1800, "open", None, None, None, True),
        ],
    ),
    "clicked": (
        25,
        [
            (1, "processed", None, None, None, False),
            (3, "delivered", None, None, None, False),
            (3600, "open", None, None, None, False),
            (3630, "click", None, "https://example.com/intake-form", None, False),
        ],
    ),
}
HISTORY_DAYS = 60  # emails are spread over this many days back; the log shows the last 30


@dataclass
class LoadSizes:
    """How much to make."""

    clinics: int = 5_000
    clients: int = 100_000
    emails: int = 1_000_000
    chunk: int = 100_000  # emails per transaction


def _steps_values() -> tuple[str, str, str]:
    """SQL for the plans: a VALUES list of steps, the bucket -> plan CASE, and plan -> status/offset."""
    steps, buckets, status_cases, offset_cases = [], [], [], []
    start = 0
    for plan, (share, events) in PLANS.items():
        buckets.append(f"WHEN b < {start + share} THEN '{plan}'")
        start += share
        rows = [(0, "sending", None, None, None, False), *events]
        best = max(rows, key=lambda row: statuses.current_status([row[1]]).rank)
        status_cases.append(f"WHEN '{plan}' THEN '{statuses.current_status([best[1]]).key}'")
        offset_cases.append(f"WHEN '{plan}' THEN {best[0]}")
        for offset, kind, reason, url, attempt, machine in rows:
            raw = '\'{"response": "250 2.0.0 OK"}\'::jsonb' if kind == "delivered" else "NULL::jsonb"
            steps.append(
                f"('{plan}', {offset}, '{kind}', {_sql(reason)}, {_sql(url)}, "
                f"{attempt if attempt is not None else 'NULL::int'}, {str(machine).lower()}, {raw})"
            )
    assert start == 100, "plan shares must add up to 100"
    return ", ".join(steps), " ".join(buckets), (" ".join(status_cases), " ".join(offset_cases))  # type: ignore[return-value]


def _sql(value: str | None) -> str:
    return "NULL::text" if value is None else "'" + value.replace("'", "''") + "'"


def seed_load(sizes: LoadSizes, password: str, say: Callable[[str], None] = print) -> dict[str, float]:
    """Make clinics, one clinician each, clients, emails and their events; return seconds per step."""
    if db.session.get_bind().dialect.name != "postgresql":
        raise RuntimeError("seed-load needs PostgreSQL (DATABASE_URL=postgresql://...)")
    timings: dict[str, float] = {}
    session = db.session
    # A seed that dies halfway is simply run again on a fresh database: no need to wait for fsync.
    session.execute(sa.text("SET synchronous_commit = off"))

    started = time.perf_counter()
    clinic_ids = list(
        session.execute(
            sa.text(
                "INSERT INTO clinic (name, created_at) SELECT 'Load clinic ' || lpad(g::text, 5, '0'), now()"
                " FROM generate_series(1, :n) g RETURNING id"
            ),
            {"n": sizes.clinics},
        ).scalars()
    )
    clinic_ids.sort()
    password_hash = generate_password_hash(password)
    session.execute(
        sa.text(
            'INSERT INTO "user" (clinic_id, email, name, role, password_hash, active, created_at)'
            " SELECT c, 'clinician' || i || '@' || :domain, 'Clinician ' || i, 'clinician', :hash, true,"
            " now()"
            " FROM unnest(CAST(:ids AS int[])) WITH ORDINALITY AS t(c, i)"
            " ON CONFLICT DO NOTHING"
        ),
        {"ids": clinic_ids, "hash": password_hash, "domain": LOAD_DOMAIN},
    )
    session.commit()
    timings["clinics and users"] = time.perf_counter() - started
    say(f"{sizes.clinics} clinics, one clinician each: {timings['clinics and users']:.1f} s")

    started = time.perf_counter()
    # The first clinic is a big one (a twentieth of all clients): searches there are the slowest.
    big = max(1, sizes.clients // 20)
    client_range = session.execute(
        sa.text(
            """
            INSERT INTO client (clinic_id, name, email, phone, created_at)
            SELECT CASE WHEN g <= :big THEN ids[1] ELSE ids[1 + (g % array_length(ids, 1))] END,
                   first || ' ' || last,
                   lower(first) || '.' || lower(last) || g || '@example.com',
                   '+44 20 7946 ' || lpad((g % 10000)::text, 4, '0'),
                   now()
            FROM generate_series(1, :n) g,
                 LATERAL (SELECT CAST(:ids AS int[]) AS ids) i,
                 LATERAL (SELECT (CAST(:first AS text[]))[1 + (g * 7) % :nf] AS first,
                                 (CAST(:last AS text[]))[1 + (g * 13 / 7) % :nl] AS last) n
            RETURNING id
            """
        ),
        {
            "n": sizes.clients,
            "big": big,
            "ids": clinic_ids,
            "first": list(FIRST_NAMES),
            "last": list(LAST_NAMES),
            "nf": len(FIRST_NAMES),
            "nl": len(LAST_NAMES),
        },
    ).scalars()
    client_ids = sorted(client_range)
    session.commit()
    timings["clients"] = time.perf_counter() - started
    say(f"{sizes.clients} clients: {timings['clients']:.1f} s")

    steps, buckets, (status_case, offset_case) = _steps_values()
    per_client = max(1, -(-sizes.emails // max(1, len(client_ids))))
    made = 0
    started = time.perf_counter()
    clients_per_chunk = max(1, sizes.chunk // per_client)
    for start in range(0, len(client_ids), clients_per_chunk):
        if made >= sizes.emails:
            break
        chunk = client_ids[start : start + clients_per_chunk]
        want = min(sizes.emails - made, len(chunk) * per_client)
        made += _seed_emails(chunk[0], chunk[-1], per_client, want, steps, buckets, status_case, offset_case)
        session.commit()
        say(f"  {made} emails with their events ({time.perf_counter() - started:.0f} s)")
    timings["emails and events"] = time.perf_counter() - started
    started = time.perf_counter()
    session.execute(
        sa.text(
            "INSERT INTO spam_list_entry (address, reported_at, email_id, source)"
            " SELECT DISTINCT ON (lower(to_address)) lower(to_address), status_changed_at, id, 'webhook'"
            " FROM email WHERE status = 'spam-report' ORDER BY lower(to_address), id"
            " ON CONFLICT (address) DO NOTHING"
        )
    )
    session.commit()
    for table in ("clinic", '"user"', "client", "email", "email_event", "spam_list_entry"):
        session.execute(sa.text(f"ANALYZE {table}"))
    session.commit()
    timings["spam list and statistics"] = time.perf_counter() - started
    return timings


def _seed_emails(
    first_client: int,
    last_client: int,
    per_client: int,
    want: int,
    steps: str,
    buckets: str,
    status_case: str,
    offset_case: str,
) -> int:
    """Make `want` emails (per_client for each client in the id range) and their events."""
    session = db.session
    seconds_back = HISTORY_DAYS * 86400
    inserted = session.execute(
        sa.text(
            f"""
            WITH new AS (
                SELECT nextval(pg_get_serial_sequence('email', 'id')) AS id, c.id AS client_id,
                       c.clinic_id, c.email, k
                FROM client c, generate_series(1, :per_client) k
                WHERE c.id BETWEEN :lo AND :hi
                ORDER BY c.id, k
                LIMIT :want
            ), planned AS (
                SELECT new.*, CASE {buckets} END AS plan,
                       date_trunc('second', now()) - make_interval(secs => (id * 7919 + k * 104729) % :back)
                           - interval '1 hour' AS sent_at
                FROM new, LATERAL (SELECT (id % 100)::int AS b) bucket
            )
            INSERT INTO email (id, clinic_id, client_id, app_message_id, to_address, subject, body, kind,
                               status, status_changed_at, created_at, version, provider, provider_message_id,
                               send_state, send_attempts)
            SELECT id, clinic_id, client_id, gen_random_uuid()::text, email,
                   'Appointment reminder', 'See you soon.', 'appointment_reminder',
                   CASE plan {status_case} END,
                   sent_at + make_interval(secs => CASE plan {offset_case} END),
                   sent_at, 1, 'sandbox', substr(md5(id::text), 1, 22), 'accepted', 1
            FROM planned
            RETURNING id
            """
        ),
        {"per_client": per_client, "lo": first_client, "hi": last_client, "want": want, "back": seconds_back},
    ).scalars()
    ids = list(inserted)
    if not ids:
        return 0
    session.execute(
        sa.text(
            f"""
            INSERT INTO email_event (email_id, occurred_at, kind, reason, url, attempt, machine, source, raw,
                                     dedupe_key, created_at)
            SELECT e.id, at, s.kind, s.reason, s.url, s.attempt, s.machine,
                   CASE WHEN s.kind = 'sending' THEN 'app' ELSE 'webhook' END, s.raw,
                   substr(sha256(convert_to(
                       e.app_message_id || chr(31) || s.kind || chr(31) || extract(epoch FROM at)::bigint
                       || chr(31) || coalesce(s.url, '') || chr(31) || coalesce(s.attempt::text, ''),
                       'UTF8')), 1, 16),
                   now()
            FROM email e
            JOIN LATERAL (SELECT CASE {buckets} END AS plan FROM (SELECT (e.id % 100)::int AS b) x) p ON true
            JOIN (VALUES {steps}) AS s(plan, offset_s, kind, reason, url, attempt, machine, raw)
              ON s.plan = p.plan
            CROSS JOIN LATERAL (SELECT e.created_at + make_interval(secs => s.offset_s) AS at) t
            WHERE e.id BETWEEN :lo AND :hi
            """
        ),
        {"lo": min(ids), "hi": max(ids)},
    )
    return len(ids)
