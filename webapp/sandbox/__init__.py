"""The sandbox: an email provider's side of the wire, simulated, for the zero-setup demo and tests.

Layers (imports point down):

- `scenarios`: what happens to a message, in no provider's words. The recipient address picks a
  scenario (its +tag, else its local part, else a seeded random progression); a scenario is a
  timeline of neutral steps (processed, deferred, delivered, bounce, open, click, spamreport,
  dropped because the address is on the spam-report list), kept to the providers' tracking rules.
- `tracking`: what a provider can track in a message: an open only with an HTML part and open
  tracking on (its pixel), a click only on a link it rewrote. A text-only email's scenario that
  would open or click stops at Delivered.
- `store`: the state file (messages, the spam-report and bounce lists, queued test failures,
  request counts, which events were posted, signing keys).
- `base.Simulator`: what every wire format shares: accepting messages, the test controls
  (fail_next, accept_then_fail_next, hold_next, add_spam_report, requests_seen) and the
  webhook delivery loop.
- one package per wire format (`sendgrid/`, later `postmark/`), split by concern: request
  validation, the HTTP (WSGI) app, webhook rendering and delivery.

How a wire format plugs in: write `webapp/sandbox/<name>/` whose `__init__` exports `Simulator`,
a subclass of `base.Simulator` that sets `wire_format`, `api_prefix` and `send_path`, implements
`__call__` (answer the provider's API from `self.store`, using `self.admit` for counting and
queued failures, `self.accept` to take messages and `self.visible` for the events whose time has
come) and `webhook_posts` (render pending events as the provider's webhook requests), then add
`"<name>": "webapp.sandbox.<name>"` to WIRE_FORMATS below. The adapter the app uses to reach it
is chosen in webapp.providers (the factory); `SANDBOX_WIRE_FORMAT` picks the format.

Nothing here is imported unless a sandbox is configured (webapp.providers imports it lazily).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webapp.sandbox.base import Simulator

# wire-format name -> the package that simulates it (its `Simulator`)
WIRE_FORMATS: dict[str, str] = {
    "sendgrid": "webapp.sandbox.sendgrid",
    "postmark": "webapp.sandbox.postmark",
}


def simulator_class(wire_format: str) -> type[Simulator]:
    """Return the simulator of a wire format (ValueError when none is registered)."""
    if wire_format not in WIRE_FORMATS:
        raise ValueError(f"the sandbox has no {wire_format!r} wire format; known: {', '.join(WIRE_FORMATS)}")
    return importlib.import_module(WIRE_FORMATS[wire_format]).Simulator


def open_simulator(
    wire_format: str,
    state_path: str,
    *,
    webhook_url: str = "",
    clock: Callable[[], float],
    speed: float = 1.0,
) -> Simulator:
    """Return a simulator of this wire format on this state file."""
    return simulator_class(wire_format)(state_path, webhook_url=webhook_url, clock=clock, speed=speed)
