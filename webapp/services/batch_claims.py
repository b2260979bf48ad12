"""Which job applies which stored webhook batches: a job claims the batch it was queued for (and
maybe a few more), skipping any another job holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import WebhookBatch

# Advisory lock namespace of "a job is applying this stored batch" (the second key is its id).
CLAIM_NAMESPACE = 4_210_001
_CLAIM_SQL = sa.text(
    """
    WITH candidates AS MATERIALIZED (
        (SELECT id FROM webhook_batch WHERE id = :batch_id AND applied_at IS NULL)
        UNION
        (SELECT id FROM webhook_batch WHERE applied_at IS NULL AND id <> :batch_id ORDER BY id LIMIT :more)
    )
    SELECT id FROM candidates WHERE pg_try_advisory_lock(:namespace, id) ORDER BY id
    """
)
_UNCLAIM_SQL = sa.text(
    "SELECT pg_advisory_unlock(:namespace, id) FROM unnest(CAST(:ids AS int[])) AS claimed(id)"
)


@contextmanager
def claimed_batches(batch_id: int, more: int) -> Iterator[list[int]]:
    """Claim this batch and up to `more` other unapplied ones for the duration of the block, skipping
    any another job holds; yield their ids.

    On PostgreSQL a claim is a session advisory lock on a connection of its own: it outlives the
    apply's two transactions and ends with the job's process if that dies, so the sweep can apply
    the batch again. SQLite has one writer at a time: nothing to claim against.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        ids = db.session.execute(
            sa.select(WebhookBatch.id)
            .where(WebhookBatch.applied_at.is_(None), WebhookBatch.id != batch_id)
            .order_by(WebhookBatch.id)
            .limit(more)
        ).scalars()
        yield sorted({batch_id, *ids})
        return
    with db.engine.connect() as claims:
        ids: list[int] = []
        try:
            # Inside the try: a job timeout or a shutdown may strike once the server granted them.
            ids = list(
                claims.execute(
                    _CLAIM_SQL, {"batch_id": batch_id, "more": more, "namespace": CLAIM_NAMESPACE}
                ).scalars()
            )
            claims.commit()
            yield ids
            if ids:
                claims.execute(_UNCLAIM_SQL, {"ids": ids, "namespace": CLAIM_NAMESPACE})
                claims.commit()
        except BaseException:
            # Never back into the pool with a claim on it: closing the connection ends them all.
            claims.invalidate()
            raise
