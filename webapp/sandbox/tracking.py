"""What a provider can track in a message, in no provider's words: the providers' own rules.

An open is a pixel the provider puts in the HTML part, fetched when the client shows the images: a
message without an HTML part, or sent with open tracking off, never reports one. A click is a link
the provider rewrote: with click tracking on, the HTML part's web links (and the text part's only
when the sender asked for that: SendGrid's `enable_text`, Postmark's `HtmlAndText`/`TextOnly`).
Each wire format reads its request's settings into a Tracking; the scenarios keep to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

# A web address in plain text, up to the first space or a character that ends one in prose.
_TEXT_URL = re.compile(r"""https?://[^\s<>"'()\[\]]+""", re.IGNORECASE)
_TRAILING = ".,;:!?"
_WEB = ("http://", "https://")


@dataclass(frozen=True)
class Tracking:
    """What the provider will track in one accepted message."""

    opens: bool  # a pixel went in: the message has an HTML part and open tracking was on
    links: tuple[str, ...]  # the rewritten links a click can be on, in order, each once


def tracking(html: str, text: str, *, opens: bool, html_links: bool, text_links: bool) -> Tracking:
    """Say what a message can report, from its parts and the tracking its request asked for."""
    found: list[str] = []
    if html_links:
        found += links_in_html(html)
    if text_links:
        found += links_in_text(text)
    return Tracking(opens=bool(html) and opens, links=tuple(dict.fromkeys(found)))


def links_in_html(html: str) -> list[str]:
    """The web links (<a href="http(s)://…">) of an HTML part, in order, as a client follows them."""
    parser = _Links()
    parser.feed(html)
    parser.close()
    return parser.found


def links_in_text(text: str) -> list[str]:
    """The web addresses written in a text part, in order."""
    return [match.group().rstrip(_TRAILING) for match in _TEXT_URL.finditer(text)]


class _Links(HTMLParser):
    """Collects the href of each <a> that leads to the web (entities decoded, as a browser reads it)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        for name, value in attrs:
            if name == "href" and value and value.strip().lower().startswith(_WEB):
                self.found.append(value.strip())
                return


def in_html(html: str, url: str) -> bool:
    """Whether a clicked link is one of the HTML part's (else it was the text part's)."""
    return url in links_in_html(html)
