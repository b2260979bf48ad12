"""Finding a clinic's clients and emails: lookup by id, search, and by address; always within one clinic."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import Client, Email, SpamListEntry

# A client's file (its email log, its address health, Needs attention) covers this many days.
LOG_DAYS = 30
PER_PAGE = 25


def get_client(clinic_id: int, client_id: int) -> Client | None:
    """Return the clinic's client with this id, or None (also for other clinics')."""
    return db.session.execute(
        sa.select(Client).where(Client.id == client_id, Client.clinic_id == clinic_id)
    ).scalar_one_or_none()


def get_client_and_spam_entry(
    clinic_id: int, client_id: int
) -> tuple[Client, dict[str, SpamListEntry]] | None:
    """Return the clinic's client with this id (None if none), and the spam-list entry of its
    address by address (empty when not listed), for address_health; one query, not two."""
    row = db.session.execute(
        _client_and_spam_entry_statement(), {"client_id": client_id, "clinic_id": clinic_id}
    ).one_or_none()
    if row is None:
        return None
    client, entry, lowered = row
    address = canonical_address(client.email)
    if lowered != address:
        # The database lowers the address otherwise than Python (spaces around it, letters past
        # ASCII in its locale): the join may have missed its entry, so look it up as usual.
        entry = db.session.execute(
            sa.select(SpamListEntry).where(SpamListEntry.address == address)
        ).scalar_one_or_none()
    return client, {address: entry} if entry is not None else {}


@lru_cache(maxsize=1)
def _client_and_spam_entry_statement() -> sa.Select:
    # Built once: every log render runs it (building it and its cache key cost a good part of a
    # round trip). Its parameters are bound at each execution.
    return (
        sa.select(Client, SpamListEntry, sa.func.lower(Client.email))
        .outerjoin(SpamListEntry, SpamListEntry.address == sa.func.lower(Client.email))
        .where(Client.id == sa.bindparam("client_id"), Client.clinic_id == sa.bindparam("clinic_id"))
    )


def get_email(clinic_id: int, email_id: int) -> Email | None:
    """Return the clinic's email with this id, or None."""
    return db.session.execute(
        sa.select(Email).where(Email.id == email_id, Email.clinic_id == clinic_id)
    ).scalar_one_or_none()


@dataclass
class ClientPage:
    """One page of a client search, with what the pager shows."""

    items: list[Client]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        """How many pages the whole result takes (none when nothing matched)."""
        return -(-self.total // self.per_page)

    @property
    def has_prev(self) -> bool:
        """Whether there is a page before this one."""
        return self.page > 1

    @property
    def has_next(self) -> bool:
        """Whether there is a page after this one."""
        return self.page < self.pages

    @property
    def prev_num(self) -> int:
        """The previous page's number."""
        return self.page - 1

    @property
    def next_num(self) -> int:
        """The next page's number."""
        return self.page + 1


def search(clinic_id: int, query: str, page: int) -> ClientPage:
    """Return one page of the clinic's clients whose name or email contains the query."""
    matching = Client.clinic_id == clinic_id
    if query:
        pattern = "%" + query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        matching = sa.and_(
            matching,
            sa.or_(
                sa.func.lower(Client.name).like(pattern, escape="\\"),
                sa.func.lower(Client.email).like(pattern, escape="\\"),
            ),
        )
    # The total rides along with the page's rows (one scan of the clinic's clients, not two).
    rows = db.session.execute(
        sa.select(Client, sa.func.count().over().label("total"))
        .where(matching)
        .order_by(Client.name, Client.id)
        .limit(PER_PAGE)
        .offset((page - 1) * PER_PAGE)
    ).all()
    if rows:
        total = rows[0].total
    else:  # past the last page (or nothing matches): the total alone
        counted = sa.select(sa.func.count()).select_from(Client).where(matching)
        total = db.session.execute(counted).scalar_one()
    return ClientPage([row.Client for row in rows], page, PER_PAGE, total)


def clients_with_address(clinic_id: int, address: str) -> list[Client]:
    """Return the clinic's clients whose file holds this address (any case)."""
    return list(
        db.session.execute(
            sa.select(Client)
            .where(Client.clinic_id == clinic_id, sa.func.lower(Client.email) == canonical_address(address))
            .order_by(Client.name, Client.id)
        ).scalars()
    )


def canonical_address(address: str) -> str:
    """Return the address as the spam list keeps it and comparisons use it: trimmed, lower case."""
    return address.strip().lower()
