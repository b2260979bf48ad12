"""What every wire-format simulator shares: state, clock, speed, test controls, webhook delivery.

A wire format subclasses Simulator: it answers HTTP requests in its provider's shapes
(`__call__`, a WSGI app) and renders visible events as the provider's webhook posts
(`webhook_posts`). Accepting messages, queued failures and the delivery loop live here.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from webapp.sandbox import scenarios
from webapp.sandbox.scenarios import Visible
from webapp.sandbox.store import UNREPORTED, SimMessage, Store

# (msg_id, event index) pairs a webhook post carries, so they are marked posted once answered 2xx.
PostedKeys = list[tuple[str, int]]


@dataclass(frozen=True)
class Admission:
    """What a request meets before it is answered: the minute's count and any queued failure."""

    used: int  # requests this minute, this one included
    failure_status: int | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Pending:
    """A visible event not posted to the webhook yet."""

    message: SimMessage
    event: Visible


class Simulator(ABC):
    """A provider's side of the wire, simulated: a WSGI app plus a webhook poster."""

    wire_format: str  # the registry key (webapp.sandbox.WIRE_FORMATS)
    api_prefix: str = "/"  # what fail_next matches by default
    send_path: str = "/"  # where sends arrive (accept_then_fail_next, hold_next)

    def __init__(
        self,
        state_path: str,
        *,
        webhook_url: str = "",
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
    ) -> None:
        self.state_path = state_path
        self.webhook_url = webhook_url
        self.clock = clock
        self.speed = speed
        self.store = Store(state_path)

    @abstractmethod
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Answer one request the way the provider's API would."""

    @abstractmethod
    def webhook_posts(
        self, pending: list[Pending], now: float
    ) -> Iterator[tuple[bytes, dict[str, str], PostedKeys]]:
        """Render pending events as the provider's webhook posts: (body, headers, keys carried)."""

    # Test controls

    def fail_next(
        self, status: int, count: int = 1, path_prefix: str | None = None, retry_after: int | None = None
    ) -> None:
        """Make the next `count` requests under path_prefix (default: the whole API) fail with this status."""
        prefix = self.api_prefix if path_prefix is None else path_prefix
        self.store.queue_failure("fail", status, prefix, retry_after, count)

    def accept_then_fail_next(self, count: int = 1) -> None:
        """Make the next `count` valid sends be accepted but answered with 500 (a lost response)."""
        self.store.queue_failure("accept_then_fail", 500, self.send_path, None, count)

    def hold_next(
        self,
        count: int = 1,
        seconds: float = 30.0,
        path_prefix: str | None = None,
        after_accepting: bool = False,
    ) -> None:
        """Make the next `count` requests under path_prefix (default: sends) wait `seconds` before they
        are answered (fault tests kill the worker meanwhile); with after_accepting, a send is taken first."""
        kind = "hold_after_accept" if after_accepting else "hold"
        prefix = self.send_path if path_prefix is None else path_prefix
        self.store.queue_failure(kind, 0, prefix, seconds, count)

    def add_spam_report(self, email: str, created: float) -> None:
        """Put an address on the spam-report list as reported at `created` (demo history).

        It also counts as seen by its `dropped` scenario, so a later removal sticks.
        """
        email = email.strip().lower()
        with self.store.transaction() as db:
            Store.seed_once(db, email)
            Store.add_spam_report(db, email, int(created), scenarios.CLIENT_IP)

    def requests_seen(self, path_prefix: str) -> int:
        """Return how many requests arrived for paths starting with path_prefix."""
        return self.store.requests_seen(path_prefix)

    # For the wire formats

    def admit(self, path: str, now: float) -> Admission:
        """Count a request and take any failure queued for it (a hold waits here, outside the lock)."""
        with self.store.transaction() as db:
            used = self.store.count_request(db, path, now)
            failure = Store.take_failure(db, "fail", path)
            hold = Store.take_failure(db, "hold", path)
        if hold is not None:
            time.sleep(hold["retry_after"])  # outside the transaction: others carry on meanwhile
        if failure is None:
            return Admission(used)
        return Admission(used, failure["status"], failure["retry_after"])

    def accept(self, messages: list[SimMessage], path: str) -> tuple[list[SimMessage], bool]:
        """Store messages the provider took (scenario = what each address asks for).

        Returns them as stored (with the scenario each will live) and whether the answer is lost
        (a queued accept_then_fail, or a message of the account that never reports: the caller
        answers 500).
        """
        with self.store.transaction() as db:
            stored = [scenarios.accept(db, message, self.speed) for message in messages]
            failure = Store.take_failure(db, "accept_then_fail", path)
            lost = failure is not None or any(message.scenario == UNREPORTED for message in stored)
            hold = Store.take_failure(db, "hold_after_accept", path)
        if hold is not None:
            time.sleep(hold["retry_after"])  # taken, and the answer is late
        return stored, lost

    def visible(self, message: SimMessage, now: float) -> list[Visible]:
        """Return the events of a message whose time has come."""
        return scenarios.visible(message, now, self.speed)

    # Webhook delivery

    def deliver_webhooks(self, post: Callable[[bytes, dict[str, str]], int] | None = None) -> int:
        """Post every visible event not posted yet, oldest first; return how many were posted.

        Stops at the first post not answered 2xx (the rest go next time, as providers retry).
        """
        if post is None and not self.webhook_url:
            return 0
        send = post or self._post_to_webhook_url
        now = self.clock()
        posted = 0
        for body, headers, keys in self.webhook_posts(self._unposted(now), now):
            if not 200 <= send(body, headers) < 300:
                break
            self.store.mark_posted(keys, scenarios.timeline_length)
            posted += len(keys)
        return posted

    def _unposted(self, now: float) -> list[Pending]:
        """Return visible events not posted yet, oldest first."""
        messages, posted = self.store.unposted_messages()
        pending = [
            (event.at, message.msg_id, event.index, Pending(message, event))
            for message in messages
            for event in self.visible(message, now)
            if (message.msg_id, event.index) not in posted
        ]
        pending.sort(key=lambda item: item[:3])
        return [item for *_, item in pending]

    def _post_to_webhook_url(self, body: bytes, headers: dict[str, str]) -> int:
        """POST one webhook request to the configured URL; 0 when nothing answered."""
        try:
            return httpx.post(self.webhook_url, content=body, headers=headers, timeout=10).status_code
        except httpx.RequestError:
            return 0
