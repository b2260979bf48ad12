"""Fixtures of the contract suite: every adapter, through its sandbox in-process and over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.contract.adapters import ADAPTERS, AdapterCase, Wire
from tests.helpers import FakeClock
from webapp.providers.base import EmailProvider

WSGI_BASE = "http://sandbox.test"


@pytest.fixture(params=ADAPTERS, ids=str)
def case(request: pytest.FixtureRequest) -> AdapterCase:
    return request.param


@pytest.fixture(params=["in-process", "http"])
def wire(request: pytest.FixtureRequest, case: AdapterCase, tmp_path, clock: FakeClock) -> Iterator[Wire]:
    """The adapter and its simulator: through httpx's WSGI transport, or a real server on loopback
    (where the simulator also posts its webhooks over HTTP, to a server that keeps them)."""
    simulator = case.simulator(str(tmp_path / "provider.sqlite3"), clock)
    closers: list[Callable[[], None]] = []
    if request.param == "http":
        api_base = _serve(simulator, closers)
        received: list[tuple[bytes, dict[str, str]]] = []
        simulator.webhook_url = _serve(_receiver(received), closers) + "/events"

        def deliver() -> list[tuple[bytes, dict[str, str]]]:
            start = len(received)
            simulator.deliver_webhooks()
            return received[start:]

        def make(credentials: str | None) -> EmailProvider:
            return case.provider(simulator, api_base, None, clock, credentials)
    else:

        def deliver() -> list[tuple[bytes, dict[str, str]]]:
            posts: list[tuple[bytes, dict[str, str]]] = []

            def post(body: bytes, headers: dict[str, str]) -> int:
                posts.append((body, headers))
                return 200

            simulator.deliver_webhooks(post=post)
            return posts

        def make(credentials: str | None) -> EmailProvider:
            return case.provider(simulator, WSGI_BASE, httpx.WSGITransport(app=simulator), clock, credentials)

    yield Wire(case, simulator, make(None), make, deliver, clock, closers)
    for close in reversed(closers):
        close()


def _serve(app: Callable, closers: list[Callable[[], None]]) -> str:
    """Serve a WSGI app on a loopback port in a thread; return its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def close() -> None:
        server.shutdown()
        thread.join(5)
        server.server_close()

    closers.append(close)
    return f"http://127.0.0.1:{server.server_port}"


def _receiver(received: list[tuple[bytes, dict[str, str]]]) -> Callable:
    """A webhook endpoint that keeps each POST's exact body and headers."""

    @Request.application
    def app(request: Request) -> Response:
        received.append((request.get_data(), dict(request.headers)))
        return Response("", status=200)

    return app
