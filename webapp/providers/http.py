"""The HTTP side every provider adapter shares.

One pooled httpx client per provider, with its credentials and timeout; a request that gets no
usable answer fails the same way for every provider (ProviderError, with retry_after after a 429);
and JSON from outside is read within the same limits (size, nesting) whichever provider sent it.
Each adapter brings only its own words: how its errors read and how it says when to come back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from webapp import intake_text
from webapp.providers.base import ProviderError

USER_AGENT = "clinic-email-log"
# How long to wait after a 429 that says nothing of it.
DEFAULT_RETRY_AFTER = 60.0
# Webhook bodies are flat objects with a few short lists (categories, metadata): a little room,
# no more. Deep nesting only makes storing and rendering them costly.
MAX_JSON_DEPTH = 8

# A Retry-After in seconds is taken at its word up to six digits (eleven days); a longer one is no
# rate limit's wait, and the default applies.
_RETRY_SECONDS = re.compile(r"[0-9]{1,6}")
_UNIX_TIME = re.compile(r"[0-9]{1,15}")


def json_body(document: Any) -> bytes:
    """Encode a request body as httpx's `json=` would, so its size can be checked before it is sent."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# What goes with a body from json_body (httpx adds Content-Length).
JSON_CONTENT = {"Content-Type": "application/json"}


class RequestFailed(ProviderError):
    """A non-send request got no usable answer; status is None when there was no answer at all."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after)
        self.status = status


class ProviderApi:
    """One provider's HTTP API: its pooled client, and its failures in our words."""

    def __init__(
        self,
        label: str,
        api_base: str,
        headers: Mapping[str, str],
        *,
        transport: httpx.BaseTransport | None,
        timeout: float,
        error_text: Callable[[httpx.Response], str],
        retry_after: Callable[[httpx.Response], float],
    ) -> None:
        self.label = label  # the provider's name in messages for the operator
        self.timeout = timeout
        self.error_text = error_text  # the provider's own words for a failed answer
        self.retry_after = retry_after  # seconds to wait after its 429
        self.client = httpx.Client(
            base_url=api_base,
            transport=transport,
            timeout=timeout,
            headers={**headers, "Accept": "application/json", "User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def no_answer(self, error: httpx.RequestError) -> str:
        """Say that a request got no answer at all (timeout, refused or broken connection)."""
        return f"no answer from {self.label} ({type(error).__name__}: {error})"

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Make one request; raise RequestFailed when there is no answer or a 429."""
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.RequestError as error:
            raise RequestFailed(self.no_answer(error)) from error
        if response.status_code == 429:
            raise RequestFailed(
                f"{self.label} rate limit: {self.error_text(response)}",
                429,
                retry_after=self.retry_after(response),
            )
        return response

    def get_json(self, url: str, **kwargs: Any) -> Any:
        """GET a JSON document; raise RequestFailed unless the answer is 200 with JSON."""
        response = self.request("GET", url, **kwargs)
        if response.status_code != 200:
            raise RequestFailed(
                f"{self.label} answered HTTP {response.status_code}: {self.error_text(response)}",
                response.status_code,
            )
        try:
            return intake_text.loads(response.content)
        except ValueError as error:
            raise RequestFailed(
                f"{self.label} answered with invalid JSON: {error}", response.status_code
            ) from error


def json_or_none(response: httpx.Response) -> Any:
    """Return an answer's JSON document (its text made storable), or None when it has none."""
    try:
        return intake_text.loads(response.content)
    except ValueError:
        return None


def retry_after(response: httpx.Response, *, now: float | None = None) -> float:
    """Seconds to wait after a 429.

    Retry-After in seconds when given (no clock skew); else, when `now` is given, until
    X-RateLimit-Reset (a unix time, as SendGrid sends it); else DEFAULT_RETRY_AFTER. At least a second.
    """
    seconds = response.headers.get("Retry-After", "").strip()
    if _RETRY_SECONDS.fullmatch(seconds):
        return max(1.0, float(seconds))
    reset = response.headers.get("X-RateLimit-Reset", "").strip()
    if now is not None and _UNIX_TIME.fullmatch(reset):
        return max(1.0, float(reset) - now)
    return DEFAULT_RETRY_AFTER


def read_json(
    body: bytes,
    *,
    what: str,
    shape: type[list] | type[dict],
    max_bytes: int | None = None,
    loads: Callable[[bytes], Any] = intake_text.loads,
) -> Any:
    """Read a JSON body from outside: ValueError unless it is JSON of this shape (an array or an
    object), within max_bytes and MAX_JSON_DEPTH; `what` names it in the error ("the webhook body").

    By default what a database would refuse (a NUL, a lone surrogate) comes back as U+FFFD, not as
    a refusal (webapp/intake_text.py).
    """
    if max_bytes is not None and len(body) > max_bytes:
        raise ValueError(f"{what} is too large")
    try:
        value = loads(body)
    except RecursionError:
        raise ValueError(f"{what} nests too deeply") from None
    except ValueError as error:
        raise ValueError(f"{what} is not JSON: {error}") from None
    if not isinstance(value, shape):
        raise ValueError(f"{what} is not a JSON {'array' if shape is list else 'object'}")
    if nests_deeper_than(value, MAX_JSON_DEPTH):
        raise ValueError(f"{what} nests too deeply")
    return value


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Return whether the arrays and objects of a parsed JSON value nest more than `limit` levels
    (a scalar: 0 levels).

    One level at a time, without recursion, so a hostile body cannot exhaust the stack. Only
    containers are carried to the next level (events are flat, mostly scalars), told by their
    exact type: a JSON parser makes plain dicts and lists, and isinstance takes a 1,000-event batch
    from under a millisecond to up to three.
    """
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 1
    while level:
        if depth > limit:
            return True
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
        depth += 1
    return False
