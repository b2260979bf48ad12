"""Clocks that disagree: the provider's and ours, seen where the provider states a time.

A signed webhook carries the time it was signed, and every event the time it happened. Either,
far from our clock, says that one of the two clocks is off. Nothing we decide depends on it (stuck
and in-doubt count from our own receipt; a signed webhook is accepted within
WEBHOOK_TOLERANCE_SECONDS), but the times shown come from the provider, and a clock past the
tolerance loses the webhooks: an operator should know. The webhook route and the jobs only note
what they see, in Redis (no database write on their path); the sweep raises one alert while the
skew lasts and closes it an hour after it was last seen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from webapp import clock
from webapp.extensions import db
from webapp.models import OperatorAlert
from webapp.providers.base import ProviderEvent

log = logging.getLogger(__name__)

CLOCK_SKEW_ALERT = "clock_skew"
# Network delays and providers' queues account for seconds; minutes mean a clock is off.
NOTICEABLE_SECONDS = 300
# A skew not seen again for this long is over (its alert closes).
REMEMBER_SECONDS = 3600
_KEY = "clock-skew:{source}"
SOURCES = ("webhook", "events")


def note_signed_time(skew_seconds: float, accepted: bool) -> None:
    """Note how far our clock is from the time a correctly signed webhook was signed."""
    if abs(skew_seconds) >= NOTICEABLE_SECONDS:
        _note("webhook", skew_seconds, accepted)


def note_event_times(events: Iterable[ProviderEvent]) -> None:
    """Note events dated later than our clock says it is now (an event cannot come from the future)."""
    latest = max((event.occurred_at for event in events), default=None)
    if latest is not None:
        ahead = (latest - clock.now()).total_seconds()
        if ahead >= NOTICEABLE_SECONDS:
            _note("events", -ahead, True)


def _note(source: str, skew_seconds: float, accepted: bool) -> None:
    seen = {"skew": skew_seconds, "accepted": accepted, "at": clock.timestamp()}
    try:
        current_app.extensions["redis"].set(_KEY.format(source=source), json.dumps(seen), ex=REMEMBER_SECONDS)
    except RedisError as error:
        log.warning("could not note a clock skew of %.0f s: %s", skew_seconds, error)


def alert_if_skewed(now: datetime) -> int:
    """Raise one alert while a skew was seen within the hour, close it once none has been; return
    how many kinds of evidence there are."""
    seen = _seen()
    open_alert = sa.and_(OperatorAlert.kind == CLOCK_SKEW_ALERT, OperatorAlert.resolved_at.is_(None))
    if not seen:
        db.session.execute(sa.update(OperatorAlert).where(open_alert).values(resolved_at=now))
        db.session.commit()
        return 0
    if db.session.execute(sa.select(OperatorAlert.id).where(open_alert)).first() is None:
        from webapp.services.sending import alert_operators  # sending needs polling, which notes skews

        alert_operators(CLOCK_SKEW_ALERT, describe(seen))
        db.session.commit()
    return len(seen)


def _seen() -> dict[str, dict]:
    found = {}
    try:
        values = current_app.extensions["redis"].mget([_KEY.format(source=source) for source in SOURCES])
    except RedisError as error:
        log.warning("cannot read noted clock skews: %s", error)
        return {}
    for source, value in zip(SOURCES, values, strict=True):
        if value is not None:
            found[source] = json.loads(value)
    return found


def describe(seen: dict[str, dict]) -> str:
    """Say in words what the clocks showed and what follows from it."""
    parts = []
    webhook = seen.get("webhook")
    if webhook is not None:
        direction = "behind" if webhook["skew"] > 0 else "ahead of"
        outcome = (
            "they are still accepted"
            if webhook["accepted"]
            else "they are refused (403), so the provider's events arrive only through polling"
        )
        parts.append(
            f"the email provider signs its webhooks {_duration(webhook['skew'])} {direction} our clock, "
            f"and {outcome} (WEBHOOK_TOLERANCE_SECONDS = {current_app.config['WEBHOOK_TOLERANCE_SECONDS']})"
        )
    events = seen.get("events")
    if events is not None:
        parts.append(f"the provider dates events up to {_duration(events['skew'])} ahead of our clock")
    return (
        "Clock skew: "
        + "; ".join(parts)
        + ". Check this server's clock (NTP) first; if it is right, the provider's is off. Stuck and "
        "in-doubt emails are counted on our own clock meanwhile, but the times the provider reports "
        "are shown as it gives them. This alert closes by itself an hour after the skew was last seen."
    )


def _duration(seconds: float) -> str:
    minutes = round(abs(seconds) / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
