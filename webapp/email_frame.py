"""Showing an email's HTML part inside the app: its own page, framed, that can load nothing.

The app's pages forbid inline styles (webapp/security.py), and a `srcdoc` frame inherits that
policy, so an email's inline CSS would not show. The HTML part is served instead from an address
of its own, under a policy that allows inline styles and nothing else: no scripts, no remote
fonts, images, styles or forms, and framed only by this site's pages. The <iframe> showing it is
sandboxed as well (no scripts, no same-origin).
"""

from __future__ import annotations

from flask import Response

EMAIL_FRAME_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)


def framed_email(html: str) -> Response:
    """Answer with an email's HTML part, to be shown in a sandboxed <iframe> of this site."""
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = EMAIL_FRAME_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"  # the app's pages say DENY
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
