"""An email's status from its events: recomputed from all of them, or moved on by new ones.

Status = the highest rank among the email's events (statuses.py); it changed when that rank was
first reached. Both statements update many emails at once and bump each one's version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from webapp import statuses
from webapp.extensions import db
from webapp.models import Email, UTCDateTime
from webapp.services.bulk_sql import chunks, on_postgres


def _status_sql() -> tuple[str, str, str]:
    """CASE expressions from statuses.py: event kind -> rank, rank -> status key, and final ranks."""
    kind_rank = " ".join(
        f"WHEN '{kind}' THEN {status.rank}" for kind, status in statuses.STATUS_FOR_EVENT.items() if status
    )
    rank_key = " ".join(f"WHEN {status.rank} THEN '{status.key}'" for status in statuses.ALL)
    final = ", ".join(str(status.rank) for status in statuses.ALL if status.final)
    return f"CASE kind {kind_rank} ELSE -1 END", f"CASE best.rank {rank_key} END", final


_KIND_RANK, _RANK_KEY, _FINAL_RANKS = _status_sql()
# Status = the highest rank among the email's events; it changed when that rank was first reached,
# by the provider's clock, but never later than we received it (a clock hours ahead must not date
# it in the future); status_received_at is when we first received that rank, by ours. An email
# with no status-bearing event is Sending since it was created.
_RECOMPUTE_SQL = f"""
        WITH per_rank AS (
            SELECT email_id, {_KIND_RANK} AS rank, min(occurred_at) AS first_at,
                   min(created_at) AS received_at
            FROM email_event WHERE {{among}} GROUP BY email_id, {_KIND_RANK}
        ), best AS (
            SELECT email_id, rank, first_at, received_at,
                   row_number() OVER (PARTITION BY email_id ORDER BY rank DESC) AS n
            FROM per_rank
        )
        UPDATE email SET
            status = coalesce({_RANK_KEY}, 'sending'),
            status_changed_at = CASE WHEN best.rank < 0 THEN email.created_at
                                     ELSE {{least}}(best.first_at, best.received_at) END,
            status_received_at = CASE WHEN best.rank < 0 THEN email.created_at ELSE best.received_at END,
            version = email.version + 1,
            next_poll_at = CASE WHEN best.rank IN ({_FINAL_RANKS}) THEN NULL ELSE email.next_poll_at END
        FROM best
        WHERE best.n = 1 AND email.id = best.email_id
        RETURNING email.id, status, status_changed_at, status_received_at, version, next_poll_at
        """
_RECOMPUTE_COLUMNS = (
    sa.column("id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("status_changed_at", UTCDateTime),
    sa.column("status_received_at", UTCDateTime),
    sa.column("version", sa.Integer),
    sa.column("next_poll_at", UTCDateTime),
)
_RECOMPUTE = {
    "postgresql": sa.text(
        _RECOMPUTE_SQL.format(among="email_id = ANY(CAST(:ids AS int[]))", least="least")
    ).columns(*_RECOMPUTE_COLUMNS),
    # SQLite's two-argument min() is PostgreSQL's least(); its timestamps are text of one width.
    "sqlite": sa.text(_RECOMPUTE_SQL.format(among="email_id IN :ids", least="min"))
    .bindparams(sa.bindparam("ids", expanding=True))
    .columns(*_RECOMPUTE_COLUMNS),
}


def recompute_statuses(email_ids: Sequence[int]) -> None:
    """Recompute the status of every given email in one statement, and bump each one's version."""
    for chunk in chunks(email_ids):
        statement = _RECOMPUTE["postgresql" if on_postgres() else "sqlite"]
        _set_committed(db.session.execute(statement, {"ids": list(chunk)}))


# The email's current rank, from its stored status (NULL for a status this code does not know).
_CURRENT_RANK = "CASE email.status " + " ".join(f"WHEN '{s.key}' THEN {s.rank}" for s in statuses.ALL)
_CURRENT_RANK += " END"
_NEW_KEY = "CASE new.rank " + " ".join(f"WHEN {s.rank} THEN '{s.key}'" for s in statuses.ALL) + " END"
# new: each email's best rank among its new events, and that rank's earliest least(occurred,
# received) and earliest received (-1 and NULLs: no status-bearing new event). An email left out
# by the WHERE (Sending with nothing above it; a status without status_received_at, from before
# that column, that nothing new outranks; a status unknown here) is recomputed from all its
# events by the caller, which fills in status_received_at for good.
_ADVANCE = sa.text(
    f"""
    UPDATE email SET
        status = CASE WHEN new.rank > {_CURRENT_RANK} THEN {_NEW_KEY} ELSE email.status END,
        status_changed_at = CASE
            WHEN new.rank > {_CURRENT_RANK} THEN new.changed_at
            WHEN new.rank = {_CURRENT_RANK} THEN least(email.status_changed_at, new.changed_at)
            ELSE email.status_changed_at END,
        status_received_at = CASE
            WHEN new.rank > {_CURRENT_RANK} THEN new.received_at
            WHEN new.rank = {_CURRENT_RANK} THEN least(email.status_received_at, new.received_at)
            ELSE email.status_received_at END,
        version = email.version + 1,
        next_poll_at = CASE WHEN greatest(new.rank, {_CURRENT_RANK}) IN ({_FINAL_RANKS}) THEN NULL
                            ELSE email.next_poll_at END
    FROM unnest(CAST(:ids AS int[]), CAST(:ranks AS int[]), CAST(:changed AS timestamptz[]),
                CAST(:received AS timestamptz[])) AS new(id, rank, changed_at, received_at)
    WHERE email.id = new.id AND {_CURRENT_RANK} IS NOT NULL
      AND NOT ({_CURRENT_RANK} = 0 AND new.rank <= 0)
      AND NOT (new.rank <= {_CURRENT_RANK} AND email.status_received_at IS NULL)
    RETURNING email.id, status, status_changed_at, status_received_at, version, next_poll_at
    """
).columns(*_RECOMPUTE_COLUMNS)


def advance_statuses(fresh: list[dict], touched: set[int]) -> None:
    """Move each touched email's status on by its newly stored events alone (PostgreSQL).

    The same as recompute_statuses, without reading the email's other events: the status is the
    highest rank reached, and when it changed and when we received it are minimums over that
    rank's events, so a new event of a higher rank replaces them, one of the same rank can only
    make them earlier, one of a lower rank changes nothing. Where the stored columns cannot say
    (Sending, which no event may have given; no status_received_at, from before that column
    existed) the email is recomputed from all its events instead.
    tests/test_status_shortcut.py compares the two over random event sequences.
    """
    best: dict[int, tuple[int, Any, Any]] = {email_id: (-1, None, None) for email_id in touched}
    for row in fresh:
        status = statuses.STATUS_FOR_EVENT.get(row["kind"])
        if status is None:
            continue
        rank, changed, received = best[row["email_id"]]
        moment = min(row["occurred_at"], row["created_at"])
        if status.rank > rank:
            best[row["email_id"]] = (status.rank, moment, row["created_at"])
        elif status.rank == rank:
            best[row["email_id"]] = (rank, min(changed, moment), min(received, row["created_at"]))
    ids = sorted(best)
    parameters = {
        "ids": ids,
        "ranks": [best[email_id][0] for email_id in ids],
        "changed": [best[email_id][1] for email_id in ids],
        "received": [best[email_id][2] for email_id in ids],
    }
    advanced = _set_committed(db.session.execute(_ADVANCE, parameters))
    if len(advanced) < len(ids):
        recompute_statuses(sorted(set(ids) - advanced))


def _set_committed(result: Iterable[sa.Row]) -> set[int]:
    """Keep loaded Email objects in step with statuses just written, without a reload per email."""
    # A job's session holds few objects: look each row up among the loaded emails, not by an
    # identity key built per row (a third of the status step's Python over 1,000 emails).
    loaded = {
        key[1][0]: instance
        for key, instance in db.session.identity_map.items()
        if isinstance(instance, Email) and len(key[1]) == 1
    }
    done = set()
    for row in result:
        done.add(row.id)
        email = loaded.get(row.id)
        if email is not None:
            for name in ("status", "status_changed_at", "status_received_at", "version", "next_poll_at"):
                so.attributes.set_committed_value(email, name, getattr(row, name))
    return done
