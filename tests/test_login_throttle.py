"""Sign-in throttling that a stranger cannot turn against the account's owner: only failures
count; each account and address pair waits longer after each failure (on a clock the test moves);
the owner's attempts from their own address are untouched; the per-address limit stays."""

from __future__ import annotations

import pytest

from tests.helpers import PASSWORD, FakeClock, attempt

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")

OWNER = "owner@a.example"
STRANGER = "198.51.100.66"
OWN_ADDRESS = "192.0.2.10"


@pytest.fixture
def throttled(app, world, make_app):
    """The app with sign-in throttling on, its delays on a clock the test moves."""
    limited = make_app(RATELIMIT_ENABLED=True)
    limited.extensions["login_throttle"].clock = FakeClock()
    return limited


def clock_of(app) -> FakeClock:
    return app.extensions["login_throttle"].clock


def fail_until_delayed(client, app, address: str, times: int) -> None:
    """Fail `times` times from the address, waiting out each delay as a patient guesser would."""
    for _ in range(times):
        response = attempt(client, OWNER, "wrong password", address)
        if response.status_code == 429:
            clock_of(app).advance(int(response.headers["Retry-After"]))
            response = attempt(client, OWNER, "wrong password", address)
        assert response.status_code == 401


def test_a_strangers_failures_do_not_keep_the_owner_out(throttled):
    client = throttled.test_client()
    fail_until_delayed(client, throttled, STRANGER, 12)
    assert attempt(client, OWNER, "wrong password", STRANGER).status_code == 429
    # The owner, from their own address, signs in at once.
    assert attempt(client, OWNER, PASSWORD, OWN_ADDRESS).status_code == 302


def test_successful_sign_ins_do_not_count(throttled):
    client = throttled.test_client()
    for _ in range(15):
        assert attempt(client, OWNER, PASSWORD, OWN_ADDRESS).status_code == 302


def test_each_failure_after_the_first_few_doubles_the_wait(throttled):
    client = throttled.test_client()
    clock = clock_of(throttled)
    for _ in range(3):  # typos are free
        assert attempt(client, OWNER, "wrong", STRANGER).status_code == 401
    waits = []
    for _ in range(6):
        assert attempt(client, OWNER, "wrong", STRANGER).status_code == 401
        refused = attempt(client, OWNER, PASSWORD, STRANGER)  # even the right password waits
        assert refused.status_code == 429
        assert "Too many failed attempts" in refused.get_data(as_text=True)
        waits.append(int(refused.headers["Retry-After"]))
        clock.advance(waits[-1] - 1)
        assert attempt(client, OWNER, PASSWORD, STRANGER).status_code == 429  # not a second early
        clock.advance(1)
    assert waits == [1, 2, 4, 8, 16, 32]


def test_the_wait_is_capped_and_a_success_forgets_the_failures(app, world, make_app):
    capped = make_app(RATELIMIT_ENABLED=True, LOGIN_MAX_DELAY_SECONDS=5)
    capped.extensions["login_throttle"].clock = clock = FakeClock()
    client = capped.test_client()
    fail_until_delayed(client, capped, STRANGER, 10)
    assert attempt(client, OWNER, PASSWORD, STRANGER).headers["Retry-After"] == "5"
    clock.advance(5)
    assert attempt(client, OWNER, PASSWORD, STRANGER).status_code == 302
    for _ in range(3):  # counting starts again
        assert attempt(client, OWNER, "wrong", STRANGER).status_code == 401


def test_the_address_limit_stays_and_says_when_to_try_again(throttled, make_app):
    limited = make_app(RATELIMIT_ENABLED=True, LOGIN_ADDRESS_RATE_LIMIT="3 per 15 minutes")
    client = limited.test_client()
    for number in range(3):  # spraying one password over several accounts
        assert attempt(client, f"someone{number}@a.example", "guess", STRANGER).status_code == 401
    refused = attempt(client, OWNER, PASSWORD, STRANGER)
    assert refused.status_code == 429 and 800 < int(refused.headers["Retry-After"]) <= 900
    assert "X-RateLimit-Remaining" not in refused.headers  # no count of guesses left


def test_unknown_accounts_are_slowed_down_the_same_way(throttled):
    client = throttled.test_client()
    statuses = [attempt(client, "nobody@a.example", "guess", STRANGER).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]


def test_sign_in_works_while_redis_is_away(throttled):
    from redis import Redis

    throttled.extensions["login_throttle"].redis = Redis.from_url("redis://127.0.0.1:1/0")
    client = throttled.test_client()
    for _ in range(6):
        assert attempt(client, OWNER, "wrong", STRANGER).status_code == 401
    assert attempt(client, OWNER, PASSWORD, STRANGER).status_code == 302


def test_the_delays_are_kept_in_redis_without_the_typed_address(throttled):
    client = throttled.test_client()
    attempt(client, OWNER, "wrong", STRANGER)
    keys = throttled.extensions["redis"].keys("login-delay:*")
    assert len(keys) == 1 and STRANGER.encode() in keys[0] and b"owner" not in keys[0]
