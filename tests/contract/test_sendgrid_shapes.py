"""SendGrid's shapes: the adapter's requests and the sandbox's answers against SendGrid's published
OpenAPI schemas, and the adapter's reading of SendGrid's documented examples.

The schemas and examples are kept in the repo (tests/fixtures/sendgrid/, each with its source), so
these tests run in any clone. A few known errors of the spec are corrected as it is loaded
(tests/contract/sendgrid_spec.py), each with its reason, at an exact place, asserting the error is
still there: a change of the spec shows up there.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.contract.sendgrid_spec import FIXTURES, assert_valid, load_spec, validator
from tests.helpers import FakeClock, RecordingTransport
from webapp.providers.base import OutgoingMessage, PollRef
from webapp.providers.sendgrid import SendGridProvider
from webapp.providers.sendgrid.webhooks import parse_webhook_events
from webapp.sandbox.sendgrid import SendGridSandbox

API_BASE = "http://sandbox.test"
JSON = "application/json"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


@pytest.fixture(scope="module")
def documented() -> dict[str, Any]:
    examples = json.loads((FIXTURES / "documented_examples.json").read_text())
    return {name: entry["value"] for name, entry in examples.items() if name != "_source"}


@pytest.fixture
def sandbox(tmp_path, clock) -> SendGridSandbox:
    return SendGridSandbox(str(tmp_path / "sandbox.sqlite3"), clock=clock)


@pytest.fixture
def api(sandbox):
    transport = httpx.WSGITransport(app=sandbox)
    headers = {"Authorization": "Bearer SG.k"}
    with httpx.Client(base_url=API_BASE, transport=transport, headers=headers) as client:
        yield client


def message(**changes: str) -> OutgoingMessage:
    fields = {
        "app_message_id": "01HXYZ",
        "to_address": "jane+clicked@example.com",
        "to_name": "Jane Doe",
        "from_address": "clinic@example.com",
        "from_name": "Riverside Vets",
        "subject": "Intake form",
        "body_text": "Please fill in https://example.com/intake-form",
        "category": "intake_form",
        "reply_to": "desk@example.com",
        **changes,
    }
    return OutgoingMessage(**fields)


def test_every_copied_part_names_its_source():
    copied = json.loads((FIXTURES / "openapi_subset.json").read_text())
    assert copied["_source"]["repository"] == "twilio/sendgrid-oai" and len(copied["_source"]["commit"]) == 40
    assert all(entry["_source"].startswith("tsg_") for name, entry in copied.items() if name != "_source")
    examples = json.loads((FIXTURES / "documented_examples.json").read_text())
    assert all(
        "provider_contracts.md" in entry["_source"] for entry in examples.values() if isinstance(entry, dict)
    )
    assert "MIT License" in (FIXTURES / "LICENSE").read_text()


# The documented examples against the (corrected) schemas: the schemas accept what SendGrid shows


def test_documented_requests_and_answers_fit_the_schemas(spec, documented):
    """The spec's own examples and the documented ones fit the (corrected) schemas: the fixtures and
    corrections accept what SendGrid shows, so a failure below is about us, not the copy."""
    checked = []
    for name, entry in spec.items():
        if name != "_source":
            for example in entry["examples"].values():
                assert_valid(spec, name, example)
                checked.append(name)
    assert set(checked) == set(spec) - {"_source"}  # every copied part has an example of its own
    for name in ("mail_send_request", "mail_send_400", "mail_send_401", "messages_200", "messages_400"):
        assert_valid(spec, name, documented[name])
    assert_valid(spec, "message_detail_404", documented["message_detail_404"])
    assert_valid(spec, "messages_429", documented["too_many_requests_429"])


# What the adapter sends


@pytest.mark.parametrize("changes", [{}, {"to_name": "", "from_name": "", "reply_to": "", "category": ""}])
def test_mail_send_body_matches_the_spec(spec, sandbox, changes):
    transport = RecordingTransport(httpx.WSGITransport(app=sandbox))
    provider = SendGridProvider("SG.k", API_BASE, transport=transport)

    assert provider.send(message(**changes)).outcome == "accepted"

    (request,) = transport.requests
    assert request.headers["Content-Type"] == JSON
    assert request.headers["Authorization"] == "Bearer SG.k"
    assert_valid(spec, "mail_send_request", json.loads(request.content))


def test_our_id_goes_where_the_spec_allows_an_object(spec, sandbox):
    transport = RecordingTransport(httpx.WSGITransport(app=sandbox))
    SendGridProvider("SG.k", API_BASE, transport=transport).send(message())
    body = json.loads(transport.requests[0].content)
    properties = spec["mail_send_request"]["schema"]["properties"]

    # The spec types message-level custom_args as a string (a known error), and per-personalization
    # custom_args as an object: we only use the latter.
    assert properties["custom_args"]["type"] == "string"
    assert properties["personalizations"]["items"]["properties"]["custom_args"]["type"] == "object"
    assert "custom_args" not in body
    assert body["personalizations"][0]["custom_args"] == {"app_message_id": "01HXYZ"}


def test_the_request_has_the_documented_examples_shape(sandbox, documented):
    """Our body uses the same fields, nested the same way, as the documented minimal example."""
    transport = RecordingTransport(httpx.WSGITransport(app=sandbox))
    SendGridProvider("SG.k", API_BASE, transport=transport).send(message(reply_to=""))
    ours, theirs = json.loads(transport.requests[0].content), documented["mail_send_request"]
    assert set(ours) <= set(theirs) | {"reply_to"}
    assert set(ours["personalizations"][0]) == set(theirs["personalizations"][0])
    assert set(ours["tracking_settings"]) == set(theirs["tracking_settings"])
    assert set(ours["from"]) == set(theirs["from"]) and set(ours["content"][0]) == set(theirs["content"][0])


# What the adapter makes of SendGrid's documented answers


def documented_api(answers: dict[str, httpx.Response]) -> httpx.MockTransport:
    """A stand-in for SendGrid that gives documented answers by path."""

    def handle(request: httpx.Request) -> httpx.Response:
        return answers.get(request.url.path, httpx.Response(404, json={"errors": [{"message": "not found"}]}))

    return httpx.MockTransport(handle)


def test_the_documented_400_is_a_rejection_of_the_address_in_our_words(documented):
    transport = documented_api({"/v3/mail/send": httpx.Response(400, json=documented["mail_send_400"])})
    result = SendGridProvider("SG.k", API_BASE, transport=transport).send(message())
    assert result.outcome == "rejected"
    assert result.reject_reason == "invalid_address"
    assert result.error == (
        "The from email does not contain a valid address. (from.email); "
        "Does not contain a valid address. (personalizations.0.to.0.email)"
    )


def test_the_documented_401_and_429_are_unauthorized_and_rate_limited(documented):
    clock = FakeClock(1_767_348_000)
    unauthorized = documented_api({"/v3/mail/send": httpx.Response(401, json=documented["mail_send_401"])})
    assert (
        SendGridProvider("SG.k", API_BASE, transport=unauthorized).send(message()).outcome == "unauthorized"
    )
    limited = documented_api(
        {
            "/v3/mail/send": httpx.Response(
                429,
                json=documented["too_many_requests_429"],
                headers={"X-RateLimit-Reset": str(int(clock()) + 42)},
            )
        }
    )
    result = SendGridProvider("SG.k", API_BASE, transport=limited, clock=clock).send(message())
    assert (result.outcome, result.retry_after, result.error) == ("rate_limited", 42.0, "too many requests")


def test_documented_activity_answers_are_read_into_events(documented):
    # The documented id is elided ("LRzX….9.0"); a whole one of the same form stands in.
    detail = {
        **documented["message_detail_events"],
        "msg_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-5645d-1-9.0",
    }
    transport = documented_api(
        {
            "/v3/messages": httpx.Response(
                200,
                json={
                    "messages": [{**documented["messages_200"]["messages"][0], "msg_id": detail["msg_id"]}]
                },
            ),
            f"/v3/messages/{detail['msg_id']}": httpx.Response(200, json=detail),
        }
    )
    provider = SendGridProvider("SG.k", API_BASE, transport=transport)
    result = provider.poll([PollRef("ours-1", detail["msg_id"].split(".", 1)[0])], request_budget=5)
    events = result.events["ours-1"]
    assert [(event.kind, event.reason, event.attempt) for event in events] == [
        ("processed", None, None),
        ("deferred", "421 try again later", 1),
        ("bounce", "550 5.1.1 user unknown", None),
    ]
    # The event names the send request (the X-Message-Id), as the email stores it.
    assert {event.provider_message_id for event in events} == {"LRzXl_NHStOGhQ4kofSm_A"}
    assert result.covered == {"ours-1"} and result.requests_made == 2


def test_the_documented_webhook_batch_is_read_into_events(documented):
    body = (json.dumps(documented["event_webhook_batch"]) + "\r\n").encode()
    events = parse_webhook_events(body)
    assert [event.kind for event in events] == ["processed", "delivered", "bounce", "dropped", "open"]
    delivered, bounce, dropped, opened = events[1:]
    assert delivered.reason == "250 2.0.0 OK"
    assert (bounce.reason, bounce.recipient) == ("550 5.1.1 user unknown", "bob@example.com")
    assert (dropped.reject_reason, dropped.reason) == ("spam_report", "Spam Reporting Address")
    assert opened.machine is True
    assert [int(event.occurred_at.timestamp()) for event in events] == [
        1767348000,
        1767348004,
        1767348006,
        1767348001,
        1767348100,
    ]
    # The example names its custom arg app_msg_id, not ours: events then carry only SendGrid's id.
    assert {event.app_message_id for event in events} == {None}
    # Its ids are elided ("LRzX….9.0"), and an elided id is not taken for the send request's.
    assert events[0].provider_message_id is None


# What the sandbox answers


def test_mail_send_errors_match_the_spec(spec, sandbox, api):
    bad = {"personalizations": [{"to": [{"email": "nope"}]}], "from": {"email": "x"}, "content": []}
    answers = {
        400: api.post("/v3/mail/send", json=bad),
        413: api.post("/v3/mail/send", content=b" " * (30 * 1024 * 1024 + 1)),
    }
    sandbox.fail_next(500)
    answers[500] = api.post("/v3/mail/send", json=bad)
    transport = httpx.WSGITransport(app=sandbox)
    with httpx.Client(base_url=API_BASE, transport=transport) as anonymous:
        answers[401] = anonymous.post("/v3/mail/send", json=bad)
    with httpx.Client(
        base_url=API_BASE, transport=transport, headers={"Authorization": "Bearer sandbox-forbidden"}
    ) as c:
        answers[403] = c.post("/v3/mail/send", json=bad)

    for status, response in answers.items():
        assert response.status_code == status
        assert_valid(spec, f"mail_send_{status}", response.json())


def test_the_sandbox_words_a_bad_address_as_sendgrid_does(api, documented):
    """The captured 400 for a bad sender and a bad recipient, word for word (order aside)."""
    bad = {
        "personalizations": [{"to": [{"email": "nope"}]}],
        "from": {"email": "x"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}],
    }
    ours = api.post("/v3/mail/send", json=bad).json()["errors"]
    captured = documented["mail_send_400"]["errors"]
    assert sorted((e["message"], e["field"]) for e in ours) == sorted(
        (e["message"], e["field"]) for e in captured
    )
    assert {e["field"]: e["help"] for e in ours}["from.email"] == captured[0]["help"]


def test_accepted_mail_send_answers_202_with_an_empty_body(api):
    body = {
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        "from": {"email": "clinic@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}],
    }

    response = api.post("/v3/mail/send", json=body)

    assert response.status_code == 202
    assert response.content == b""
    assert response.headers["X-Message-Id"]


def send_every_scenario(sandbox: SendGridSandbox, clock: FakeClock) -> None:
    provider = SendGridProvider("SG.k", API_BASE, transport=httpx.WSGITransport(app=sandbox))
    scenarios = ["delivered", "deferred", "bounced", "dropped", "machine-open", "clicked", "spam", "stuck"]
    for i, scenario in enumerate([*scenarios, "jane", "sam", "alex", "kim"]):
        provider.send(message(app_message_id=f"m{i}", to_address=f"client{i}+{scenario}@example.com"))
    clock.now += 120


def test_email_activity_answers_match_the_spec(spec, sandbox, api, clock, documented):
    send_every_scenario(sandbox, clock)

    listed = api.get("/v3/messages", params={"query": "msg_id LIKE '%'", "limit": 1000})
    assert listed.status_code == 200
    assert_valid(spec, "messages_200", listed.json())
    assert len(listed.json()["messages"]) == 12
    # The same fields as SendGrid's documented list entry.
    assert {frozenset(item) for item in listed.json()["messages"]} == {
        frozenset(documented["messages_200"]["messages"][0])
    }

    for item in listed.json()["messages"]:
        detail = api.get(f"/v3/messages/{item['msg_id']}")
        assert detail.status_code == 200
        assert isinstance(detail.json()["unique_args"], str)
        assert_valid(spec, "message_detail_200", detail.json())


def test_email_activity_errors_match_the_spec(spec, sandbox, api, documented):
    answers = [
        ("messages_400", api.get("/v3/messages", params={"query": "bad_field=1"})),
        ("message_detail_404", api.get("/v3/messages/unknown")),
    ]
    sandbox.fail_next(429, count=2)
    answers += [
        ("messages_429", api.get("/v3/messages", params={"query": 'to_email="a@b.c"'})),
        ("message_detail_429", api.get("/v3/messages/unknown")),
    ]

    for name, response in answers:
        assert response.status_code == int(name.rsplit("_", 1)[1])
        assert_valid(spec, name, response.json())
    assert answers[1][1].json() == documented["message_detail_404"]


def test_suppression_lists_match_the_spec(spec, sandbox, api, clock, documented):
    send_every_scenario(sandbox, clock)

    spam_reports = api.get("/v3/suppression/spam_reports").json()
    one_report = api.get("/v3/suppression/spam_reports/client3+dropped@example.com").json()
    bounces = api.get("/v3/suppression/bounces").json()

    assert len(spam_reports) == 2 and len(one_report) == 1 and len(bounces) >= 1
    assert_valid(spec, "spam_reports_200", spam_reports)
    assert_valid(spec, "spam_report_200", one_report)
    assert_valid(spec, "bounces_200", bounces)
    assert {frozenset(item) for item in spam_reports} == {frozenset(documented["spam_reports_item_fields"])}
    assert {frozenset(item) for item in bounces} == {frozenset(documented["bounces_item_fields"])}
    assert {frozenset(item) for item in spec["spam_reports_200"]["examples"]["response"]} == {
        frozenset(spam_reports[0])
    }


def test_the_corrected_schemas_still_catch_mistakes(spec, sandbox, api, clock):
    send_every_scenario(sandbox, clock)
    (item,) = api.get("/v3/messages", params={"query": "unique_args['app_message_id']=\"m5\""}).json()[
        "messages"
    ]
    good = api.get(f"/v3/messages/{item['msg_id']}").json()
    detail = validator(spec, "message_detail_200")
    mistakes = [
        {**good, "events": [{**good["events"][0], "event_name": "click"}]},
        {**good, "events": [{"event_name": "processed"}]},
        {**good, "unique_args": {"app_message_id": "m5"}},
        {key: value for key, value in good.items() if key != "unique_args"},
        {**good, "status": "bounced"},
    ]

    assert not list(detail.iter_errors(good))
    for mistake in mistakes:
        assert list(detail.iter_errors(mistake)), mistake
