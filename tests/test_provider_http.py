"""The HTTP base every provider adapter shares (webapp/providers/http.py): the one nesting check,
JSON body limits, the wait after a 429, and request failures in our words."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.providers.http import (
    DEFAULT_RETRY_AFTER,
    MAX_JSON_DEPTH,
    ProviderApi,
    RequestFailed,
    nests_deeper_than,
    read_json,
    retry_after,
)
from webapp.providers.postmark.webhooks import parse_webhook_event
from webapp.providers.sendgrid.webhooks import check_webhook_body, parse_webhook_events

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


def depth(value) -> int:
    """How many levels arrays and objects nest (the plain recursive definition)."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def nested(levels: int, inner=None) -> object:
    """`levels` arrays, one inside the other, around `inner`."""
    value = inner
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "levels"),
    [
        (5, 0),
        ("text", 0),
        ([], 1),
        ({}, 1),
        ([1, "a", None], 1),
        ({"a": [1, {"b": 2}]}, 3),
        ([[], [[]], [[[]]]], 4),
        ({"wide": [[1]] * 50, "deep": {"x": {"y": {"z": []}}}}, 5),
    ],
)
def test_nesting_is_counted_in_levels_of_arrays_and_objects(value, levels):
    assert depth(value) == levels
    assert not nests_deeper_than(value, levels)
    if levels:
        assert nests_deeper_than(value, levels - 1)


@settings(max_examples=300, deadline=None)
@given(JSON, st.integers(0, 6))
def test_the_nesting_check_agrees_with_the_plain_definition(value, limit):
    assert nests_deeper_than(value, limit) is (depth(value) > limit)


def test_a_hundred_thousand_levels_are_refused_without_running_out_of_stack():
    assert nests_deeper_than(nested(100_000), MAX_JSON_DEPTH)
    with pytest.raises(ValueError, match="nests too deeply"):
        read_json(b"[" * 100_000 + b"]" * 100_000, what="the body", shape=list, loads=json.loads)


def test_read_json_says_what_is_wrong():
    with pytest.raises(ValueError, match="^the body is too large$"):
        read_json(b"[1, 2]", what="the body", shape=list, max_bytes=5)
    with pytest.raises(ValueError, match="^the body is not JSON"):
        read_json(b"[1,", what="the body", shape=list)
    with pytest.raises(ValueError, match="^the body is not a JSON array$"):
        read_json(b"{}", what="the body", shape=list)
    with pytest.raises(ValueError, match="^the body is not a JSON object$"):
        read_json(b"[]", what="the body", shape=dict)
    assert read_json(json.dumps(nested(MAX_JSON_DEPTH)).encode(), what="the body", shape=list)


def sendgrid_body(levels: int) -> bytes:
    """An event webhook batch that nests `levels` deep (the batch and the event are two)."""
    event = {"event": "open", "timestamp": 1767348000, "extra": nested(levels - 2)}
    return json.dumps([event]).encode()


def postmark_body(levels: int) -> bytes:
    """A Postmark webhook that nests `levels` deep (the record is one)."""
    record = {
        "RecordType": "Open",
        "ReceivedAt": "2026-01-02T10:00:00Z",
        "MessageID": "m-1",
        "Extra": nested(levels - 1),
    }
    return json.dumps(record).encode()


def test_both_adapters_take_webhooks_the_same_depth_and_no_deeper():
    assert len(parse_webhook_events(sendgrid_body(MAX_JSON_DEPTH))) == 1
    assert check_webhook_body(sendgrid_body(MAX_JSON_DEPTH)) == 1
    assert len(parse_webhook_event(postmark_body(MAX_JSON_DEPTH))) == 1
    for refuse in (parse_webhook_events, check_webhook_body):
        with pytest.raises(ValueError, match="nests too deeply"):
            refuse(sendgrid_body(MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError, match="nests too deeply"):
        parse_webhook_event(postmark_body(MAX_JSON_DEPTH + 1))


def answer(headers: dict[str, str | bytes]) -> httpx.Response:
    return httpx.Response(429, headers=headers)


@pytest.mark.parametrize(
    ("headers", "now", "seconds"),
    [
        ({"Retry-After": "7"}, None, 7.0),
        ({"Retry-After": " 7 "}, None, 7.0),
        ({"Retry-After": "0"}, None, 1.0),  # at least a second
        ({"Retry-After": "999999"}, None, 999999.0),
        ({"Retry-After": "1000000"}, None, DEFAULT_RETRY_AFTER),  # no rate limit's wait
        ({"Retry-After": b"\xb2"}, None, DEFAULT_RETRY_AFTER),  # "²": a digit to str.isdigit, not to float
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None, DEFAULT_RETRY_AFTER),
        ({"Retry-After": "-5"}, None, DEFAULT_RETRY_AFTER),
        ({}, None, DEFAULT_RETRY_AFTER),
        ({"X-RateLimit-Reset": "1000042"}, None, DEFAULT_RETRY_AFTER),  # a reset time needs our clock
        ({"X-RateLimit-Reset": "1000042"}, 1_000_000.0, 42.0),
        ({"X-RateLimit-Reset": "999999"}, 1_000_000.0, 1.0),  # already past: at least a second
        ({"Retry-After": "7", "X-RateLimit-Reset": "1003600"}, 1_000_000.0, 7.0),  # no clock skew
    ],
)
def test_the_wait_after_a_429(headers, now, seconds):
    assert retry_after(answer(headers), now=now) == seconds


def api(handler) -> ProviderApi:
    return ProviderApi(
        "Provider",
        "https://api.provider.test",
        {"X-Token": "t"},
        transport=httpx.MockTransport(handler),
        timeout=5,
        error_text=lambda response: f"said {response.status_code}",
        retry_after=lambda response: 42.0,
    )


def test_every_request_carries_the_credentials_and_names_us():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    assert api(handler).get_json("/x") == {"ok": True}
    assert seen[0].headers["X-Token"] == "t"
    assert seen[0].headers["Accept"] == "application/json"
    assert seen[0].headers["User-Agent"] == "clinic-email-log"


def test_no_answer_a_429_an_error_status_and_bad_json_fail_in_our_words():
    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(RequestFailed) as failure:
        api(silent).get_json("/x")
    assert (str(failure.value), failure.value.status) == (
        "no answer from Provider (ReadTimeout: timed out)",
        None,
    )

    with pytest.raises(RequestFailed) as failure:
        api(lambda request: httpx.Response(429)).request("DELETE", "/x")
    assert (str(failure.value), failure.value.status, failure.value.retry_after) == (
        "Provider rate limit: said 429",
        429,
        42.0,
    )

    with pytest.raises(RequestFailed) as failure:
        api(lambda request: httpx.Response(404)).get_json("/x")
    assert (str(failure.value), failure.value.status, failure.value.retry_after) == (
        "Provider answered HTTP 404: said 404",
        404,
        None,
    )

    with pytest.raises(RequestFailed, match="^Provider answered with invalid JSON") as failure:
        api(lambda request: httpx.Response(200, text="<html>")).get_json("/x")
    assert failure.value.status == 200

    # A status other than 429 is the caller's to read when it asked with request().
    assert api(lambda request: httpx.Response(500)).request("GET", "/x").status_code == 500
