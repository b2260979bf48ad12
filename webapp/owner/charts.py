"""A stacked bar chart as plain SVG numbers: the template draws rectangles, no script, no style.

The SVG holds the plot alone and stretches to its box (preserveAspectRatio="none"); the scale and
the dates are HTML beside it, so their text keeps the page's size at any width (SVG text would
shrink with a 375 px screen and run past the right edge of a wide one).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date

from webapp import statuses

WIDTH = 720
HEIGHT = 200
LEFT = 0  # the scale is HTML, beside the SVG
TOP = 2  # room for the top grid line
GAP = 3


@dataclass
class Segment:
    """One status's part of one day's bar."""

    x: float
    y: float
    width: float
    height: float
    status: statuses.Status
    count: int


@dataclass
class Bar:
    """One day."""

    day: date
    x: float
    total: int
    segments: list[Segment]
    labelled: bool  # every seventh day, counted back from the last, carries its date under the axis


@dataclass
class Chart:
    """What the SVG needs: its size, the scale's top, and the bars."""

    width: int
    height: int
    plot_top: int
    plot_bottom: int
    left: int
    top_value: int
    bars: list[Bar]


def stacked_bars(days: list[date], daily: dict[date, Counter]) -> Chart:
    """Lay out one bar per day, stacked from Sending (bottom) to Spam report (top)."""
    top_value = _nice_ceiling(max((sum(daily[day].values()) for day in days), default=0))
    plot_bottom = HEIGHT
    plot_height = plot_bottom - TOP
    slot = (WIDTH - LEFT) / max(1, len(days))
    bars = []
    for index, day in enumerate(days):
        x = LEFT + index * slot + GAP / 2
        y = float(plot_bottom)
        segments = []
        for status in statuses.ALL:
            count = daily[day][status.key]
            if not count:
                continue
            height = plot_height * count / top_value
            y -= height
            segments.append(
                Segment(round(x, 2), round(y, 2), round(slot - GAP, 2), round(height, 2), status, count)
            )
        bars.append(
            Bar(day, round(x, 2), sum(daily[day].values()), segments, (len(days) - 1 - index) % 7 == 0)
        )
    return Chart(WIDTH, HEIGHT, TOP, plot_bottom, LEFT, top_value, bars)


def _nice_ceiling(value: int) -> int:
    """Round the scale's top up to 1, 2 or 5 times a power of ten (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 1
    while magnitude * 10 < value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude
