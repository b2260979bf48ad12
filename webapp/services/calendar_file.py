"""The calendar attachment of an appointment reminder: an iCalendar file (RFC 5545) with its zone.

The file carries the clinic's zone rules (a VTIMEZONE made from the pinned tzdata, see
webapp/timezones.py), not just its name: a calendar whose own zone data is older (Vancouver's
2026 change) still shows the appointment at the time the clinic typed.
"""

from __future__ import annotations

import re
from datetime import MAXYEAR, UTC, date, datetime, timedelta

import icalendar

from webapp import timezones

PRODUCT_ID = "-//Clinic email log//Appointment reminder//EN"
# PUBLISH: an entry to add, not an invitation to answer (REQUEST would ask the client to accept).
METHOD = "PUBLISH"
# The calendar's own METHOD line: a top-level content line (a folded one starts with a space).
_METHOD_LINE = re.compile(r"^METHOD:([A-Za-z0-9-]+)\r?$", re.MULTILINE | re.IGNORECASE)


def content_type(ics: str) -> str:
    """The MIME type an .ics goes with: UTF-8 and the method the file itself says, if any."""
    # Without a charset a mail client may read the file as ASCII and garble an accented name;
    # RFC 5545 (8.1) asks for the `method` parameter, the file's own, when it has a METHOD.
    found = _METHOD_LINE.search(ics)
    method = f"; method={found.group(1).upper()}" if found else ""
    return f"text/calendar; charset=utf-8{method}"


def appointment_ics(
    *,
    uid: str,
    start: datetime,
    minutes: int,
    zone_name: str,
    summary: str,
    location: str,
    description: str,
    stamp: datetime,
) -> str:
    """Return an .ics (METHOD:PUBLISH) with one event at `start` (UTC), in the named zone."""
    zone = timezones.zone(zone_name)
    local_start = timezones.local(start, zone_name)
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODUCT_ID)
    calendar.add("version", "2.0")
    calendar.add("method", METHOD)
    if zone.key != "UTC":
        # The rules from a year before to a year after: enough for the event, and a small file.
        calendar.add_component(
            icalendar.Timezone.from_tzinfo(
                zone,
                tzid=zone.key,
                first_date=date(local_start.year - 1, 1, 1),
                last_date=date(min(local_start.year + 2, MAXYEAR), 1, 1),
            )
        )
    event = icalendar.Event()
    event.add("uid", uid)
    event.add("dtstamp", stamp.astimezone(UTC).replace(microsecond=0))
    # UTC is written as such (…Z); any other zone as its TZID and local time.
    event.add("dtstart", local_start.replace(microsecond=0) if zone.key != "UTC" else start.astimezone(UTC))
    event.add("duration", timedelta(minutes=minutes))
    event.add("summary", summary)
    if location:
        event.add("location", location)
    if description:
        event.add("description", description)
    calendar.add_component(event)
    return calendar.to_ical().decode()
