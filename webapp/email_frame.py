"""Showing an email's HTML part inside the app: its own page, framed, that can load nothing.

The app's pages forbid inline styles (webapp/security.py), and a `srcdoc` frame inherits that
policy, so an email's inline CSS would not show. The HTML part is served instead from an address
of its own, under a policy that allows inline styles and nothing else: no scripts, no remote
fonts, images, styles or forms, framed only by this site's pages, and sandboxed by the policy
itself. The <iframe> showing it is sandboxed as well (no scripts, no same-origin), so neither a
script nor a tracking pixel in it can run or load when staff look at it.
"""

from __future__ import annotations

from flask import Response

EMAIL_FRAME_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'; sandbox"
)


def framed_email(html: str) -> Response:
    """Answer with an email's HTML part, to be shown in a sandboxed <iframe> of this site."""
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = EMAIL_FRAME_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"  # the app's pages say DENY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response
