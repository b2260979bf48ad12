"""Postmark's wire format for the sandbox: request validation (`validation`), the server API as a
WSGI app (`app`: Email API single and batch, Messages API, bounces, suppressions), and webhook
delivery, one event per POST with HTTP Basic credentials (`webhooks`)."""

from webapp.sandbox.postmark.app import PostmarkSandbox

Simulator = PostmarkSandbox  # what the registry in webapp.sandbox looks up

__all__ = ["PostmarkSandbox", "Simulator"]
