"""The sandbox as SendGrid's side of the wire: raw HTTP answers, scenarios, state, test controls."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import HTML_WITH_LINK, INTAKE_LINK
from tests.helpers import SANDBOX_START as START
from webapp.sandbox.scenarios import SCENARIOS, random_timeline, scenario_for
from webapp.sandbox.sendgrid import SendGridSandbox
from webapp.sandbox.sendgrid.validation import CONTENT_ONCE, CONTENT_ORDER, QuerySyntaxError, parse_query
from webapp.sandbox.store import UNREPORTED

API_BASE = "http://sandbox.test"


@pytest.fixture
def state_path(tmp_path) -> str:
    return str(tmp_path / "state" / "sandbox.sqlite3")


@pytest.fixture
def sandbox(state_path, clock) -> SendGridSandbox:
    return SendGridSandbox(state_path, clock=clock)


@pytest.fixture
def api(sandbox):
    with client_for(sandbox) as client:
        yield client


def client_for(sandbox: SendGridSandbox, key: str | None = "SG.test-key") -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=API_BASE, transport=httpx.WSGITransport(app=sandbox), headers=headers)


def html_part(html: str = HTML_WITH_LINK) -> dict:
    return {"type": "text/html", "value": html}


def mail(*recipients: str, **changes) -> dict:
    body = {
        "personalizations": [{"to": [{"email": address} for address in recipients]}],
        "from": {"email": "clinic@example.com", "name": "Riverside Vets"},
        "subject": "Appointment reminder",
        # Both parts, as the product sends them: opens and clicks are tracked in the HTML part.
        "content": [
            {"type": "text/plain", "value": "See you on Tuesday."},
            {"type": "text/html", "value": HTML_WITH_LINK},
        ],
        "categories": ["appointment_reminder"],
    }
    return {**body, **changes}


def send(api: httpx.Client, *recipients: str, **changes) -> str:
    response = api.post("/v3/mail/send", json=mail(*recipients, **changes))
    assert response.status_code == 202, response.text
    return response.headers["X-Message-Id"]


def messages(api: httpx.Client, query: str, limit: int = 100) -> list[dict]:
    response = api.get(f"/v3/messages?query={quote(query, safe='')}&limit={limit}")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


# Scenarios


@pytest.mark.parametrize(
    ("address", "scenario"),
    [
        ("deferred@example.com", "deferred"),
        ("jane+deferred@example.com", "deferred"),
        ("Jane+Machine-Open@Example.com", "machine-open"),
        ("jane@example.com", "random"),
        ("jane+newsletter@example.com", "random"),
        ("clicked+jane@example.com", "random"),
    ],
)
def test_the_address_picks_the_scenario(address, scenario):
    assert scenario_for(address) == scenario


def test_scenario_timelines_start_processed_and_move_forward():
    assert SCENARIOS[UNREPORTED] == []  # the account that never reports: not a word
    for steps in (steps for scenario, steps in SCENARIOS.items() if scenario != UNREPORTED):
        offsets = [offset for offset, _ in steps]
        assert steps[0][1].event == "processed"
        assert offsets == sorted(offsets) and offsets[0] > 0


def test_random_progression_is_repeatable_and_realistic():
    timelines = [random_timeline(f"X{i}.filterdrecv-sandbox-0") for i in range(600)]

    assert random_timeline("X1.filterdrecv-sandbox-0") == timelines[1]
    for steps in timelines:
        offsets = [offset for offset, _ in steps]
        assert steps[0][1].event == "processed" and offsets == sorted(offsets)
    counts = Counter(step.event for steps in timelines for _, step in steps)
    machine_opens = sum(step.machine for steps in timelines for _, step in steps)
    assert counts["processed"] == 600
    assert counts["delivered"] > 500
    assert 0 < counts["bounce"] < 40
    assert 0 < counts["deferred"] < 200
    assert 0 < machine_opens < counts["open"]
    assert 0 < counts["click"] < counts["open"]


def test_events_become_visible_as_the_clock_moves(api, clock):
    send(api, "deferred@example.com")
    query = 'to_email="deferred@example.com"'

    assert messages(api, query) == []
    clock.advance(1)
    assert messages(api, query)[0]["status"] == "processed"
    clock.advance(4)
    assert messages(api, query)[0]["status"] == "processed"
    clock.advance(3)
    assert messages(api, query)[0]["status"] == "delivered"


def test_speed_shortens_every_scenario(state_path, clock):
    fast = SendGridSandbox(state_path, clock=clock, speed=10)
    with client_for(fast) as client:
        send(client, "deferred@example.com")
        clock.advance(0.8)

        (listed,) = messages(client, 'to_email="deferred@example.com"')

    assert listed["status"] == "delivered"


def test_list_and_detail_describe_a_clicked_message(api, clock):
    x_message_id = send(api, "clicked@example.com")
    clock.advance(60)

    (listed,) = messages(api, f"msg_id LIKE '{x_message_id}%'")
    detail = api.get(f"/v3/messages/{listed['msg_id']}").json()

    assert listed == {
        "from_email": "clinic@example.com",
        "msg_id": f"{x_message_id}.filterdrecv-sandbox-0",
        "subject": "Appointment reminder",
        "to_email": "clicked@example.com",
        "status": "delivered",
        "opens_count": 1,
        "clicks_count": 1,
        "last_event_time": "2026-01-02T10:00:15Z",
    }
    assert [event["event_name"] for event in detail["events"]] == [
        "processed",
        "delivered",
        "opened",
        "clicked",
    ]
    assert detail["events"][3]["url"] == "https://example.com/intake-form"
    assert detail["events"][0]["processed"] == "2026-01-02T10:00:01Z"
    assert detail["categories"] == ["appointment_reminder"]
    assert detail["unique_args"] == "{}"


def test_detail_uses_activity_names_and_fields(api, clock):
    send(api, "deferred@example.com", "bounced@example.com", "spam@example.com")
    clock.advance(60)

    details = {
        item["to_email"]: api.get(f"/v3/messages/{item['msg_id']}").json()
        for item in messages(api, 'to_email="deferred@example.com" OR to_email="bounced@example.com"')
        + messages(api, 'to_email="spam@example.com"')
    }

    deferred = details["deferred@example.com"]["events"]
    assert [(event["event_name"], event.get("attempt_num")) for event in deferred] == [
        ("processed", None),
        ("deferred", 1),
        ("deferred", 2),
        ("delivered", None),
    ]
    assert deferred[1]["reason"] == "421 4.7.0 Try again later"
    bounced = details["bounced@example.com"]
    assert bounced["status"] == "not_delivered"
    assert bounced["events"][1]["event_name"] == "bounced"
    assert bounced["events"][1]["bounce_type"] == "hard"
    assert [event["event_name"] for event in details["spam@example.com"]["events"]][-1] == "spam_report"


def test_one_message_per_recipient_with_merged_custom_args(api, clock):
    body = mail("a@example.com", custom_args={"clinic": "7", "app_message_id": "message-level"})
    body["personalizations"].append(
        {"to": [{"email": "b@example.com"}], "custom_args": {"app_message_id": "b-1"}}
    )
    x_message_id = api.post("/v3/mail/send", json=body).headers["X-Message-Id"]
    clock.advance(60)

    listed = messages(api, f"msg_id LIKE '{x_message_id}%'")
    details = {item["to_email"]: api.get(f"/v3/messages/{item['msg_id']}").json() for item in listed}

    assert sorted(item["msg_id"] for item in listed) == [
        f"{x_message_id}.filterdrecv-sandbox-0",
        f"{x_message_id}.filterdrecv-sandbox-1",
    ]
    assert details["a@example.com"]["unique_args"] == "{'clinic': '7', 'app_message_id': 'message-level'}"
    assert details["b@example.com"]["unique_args"] == "{'clinic': '7', 'app_message_id': 'b-1'}"


def test_unknown_or_unprocessed_messages_are_not_found(api):
    x_message_id = send(api, "delivered@example.com")

    for msg_id in ("nope", f"{x_message_id}.filterdrecv-sandbox-0"):
        response = api.get(f"/v3/messages/{msg_id}")
        assert response.status_code == 404
        assert response.json() == {"errors": [{"message": "not found", "field": "message_id"}]}


# Email Activity queries


def test_query_subset():
    assert parse_query('unique_args[\'app_message_id\']="a" OR unique_args[\'app_message_id\']="b\\"c"') == [
        ("unique_args", "app_message_id", "a"),
        ("unique_args", "app_message_id", 'b"c'),
    ]
    assert parse_query("(to_email=\"Jane@Example.com\") or (msg_id LIKE 'abc%')") == [
        ("to_email", "", "jane@example.com"),
        ("msg_id_prefix", "", "abc"),
    ]


@pytest.mark.parametrize(
    "query",
    [
        "",
        'bad_field="x"',
        'to_email="a@example.com" OR',
        'OR to_email="a@example.com"',
        '(to_email="a@example.com"',
        'to_email="a@example.com")',
        'to_email="a@example.com" to_email="b@example.com"',
        'to_email="a@example.com" AND status="delivered"',
    ],
)
def test_queries_outside_the_subset_are_refused(api, query):
    with pytest.raises(QuerySyntaxError):
        parse_query(query)

    response = api.get("/v3/messages", params={"query": query})

    assert response.status_code == 400
    assert response.json()["errors"][0]["message"].startswith("invalid syntax: ")


def test_query_by_our_id_and_limit(api, clock):
    for i in range(3):
        body = mail("delivered@example.com")
        body["personalizations"][0]["custom_args"] = {"app_message_id": f"msg-{i}"}
        api.post("/v3/mail/send", json=body)
    clock.advance(10)

    found = messages(
        api, "unique_args['app_message_id']=\"msg-0\" OR unique_args['app_message_id']=\"msg-2\""
    )

    assert len(found) == 2
    assert len(messages(api, 'to_email="delivered@example.com"', limit=1)) == 1
    assert api.get("/v3/messages", params={"query": 'to_email="a@b.c"', "limit": 0}).status_code == 400


# Mail Send


def test_validation_reports_every_problem(api):
    body = mail("not-an-address", "ok@example.com", subject="", content=[{"type": "", "value": ""}])
    body["from"] = {"email": "clinic"}

    response = api.post("/v3/mail/send", json=body)

    assert response.status_code == 400
    fields = [error["field"] for error in response.json()["errors"]]
    assert fields == [
        "personalizations.0.to.0.email",
        "subject",
        "from.email",
        "content.0.type",
        "content.0.value",
    ]
    assert all(error["message"] and error["help"] for error in response.json()["errors"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from": {"email": "a@example.com"}}, "personalizations"),
        ({"personalizations": [], "from": {"email": "a@example.com"}}, "personalizations"),
        (
            {"personalizations": [{"subject": "x"}], "from": {"email": "a@example.com"}},
            "personalizations.0.to",
        ),
        ({"personalizations": [{"to": [{"email": "a@example.com"}], "subject": "x"}]}, "from"),
    ],
)
def test_missing_parts_are_named(api, body, field):
    response = api.post("/v3/mail/send", json=body)

    assert response.status_code == 400
    assert field in [error["field"] for error in response.json()["errors"]]


def test_a_subject_per_personalization_is_enough(api):
    body = mail("a@example.com")
    del body["subject"]
    body["personalizations"][0]["subject"] = "Hello"

    assert api.post("/v3/mail/send", json=body).status_code == 202


def test_non_json_is_a_bad_request(api):
    response = api.post("/v3/mail/send", content=b"{oops", headers={"Content-Type": "application/json"})

    assert response.status_code == 400


def test_over_30_mb_is_too_large(api):
    response = api.post("/v3/mail/send", content=b" " * (30 * 1024 * 1024 + 1))

    assert response.status_code == 413
    assert response.json() == {"errors": [{"message": "content too large", "field": None}]}


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        (None, 401, "authorization required"),
        ("", 401, "authorization required"),
        ("sandbox-forbidden", 403, "access forbidden"),
    ],
)
def test_authorization(sandbox, key, status, message):
    with client_for(sandbox, key) as client:
        responses = [client.post("/v3/mail/send", json=mail("a@example.com")), client.get("/v3/messages")]

    for response in responses:
        assert response.status_code == status
        assert response.json() == {"errors": [{"message": message, "field": None}]}


def test_basic_auth_is_not_a_bearer_key(sandbox):
    transport = httpx.WSGITransport(app=sandbox)
    with httpx.Client(base_url=API_BASE, transport=transport, auth=("user", "pass")) as client:
        assert client.post("/v3/mail/send", json=mail("a@example.com")).status_code == 401


def test_unknown_paths_and_methods(api):
    assert api.get("/v3/nothing").status_code == 404
    assert api.get("/v3/mail/send").status_code == 405


# Suppressions


def test_spam_report_endpoints(api, clock):
    send(api, "dropped@example.com", "other+dropped@example.com")

    listed = api.get("/v3/suppression/spam_reports").json()
    one = api.get("/v3/suppression/spam_reports/dropped@example.com").json()
    by_prefix = api.get("/v3/suppression/spam_reports", params={"email": "other"}).json()
    later = api.get("/v3/suppression/spam_reports", params={"start_time": int(START) + 1}).json()
    deleted = api.delete("/v3/suppression/spam_reports/dropped@example.com")

    assert sorted(item["email"] for item in listed) == ["dropped@example.com", "other+dropped@example.com"]
    assert one == [{"created": int(START), "email": "dropped@example.com", "ip": "198.51.100.7"}]
    assert [item["email"] for item in by_prefix] == ["other+dropped@example.com"]
    assert later == []
    assert deleted.status_code == 204
    assert api.get("/v3/suppression/spam_reports/dropped@example.com").json() == []


def test_spam_reports_page_with_limit_and_offset(api):
    send(api, *[f"c{i}+dropped@example.com" for i in range(5)])

    pages = [
        api.get("/v3/suppression/spam_reports", params={"limit": 2, "offset": offset}).json()
        for offset in (0, 2, 4)
    ]

    assert [len(page) for page in pages] == [2, 2, 1]
    assert len({item["email"] for page in pages for item in page}) == 5
    assert api.get("/v3/suppression/spam_reports", params={"limit": 501}).status_code == 400


def test_a_removed_dropped_address_stays_removed(api, clock):
    send(api, "dropped@example.com")
    api.delete("/v3/suppression/spam_reports/dropped@example.com")

    send(api, "dropped@example.com")
    clock.advance(60)

    assert api.get("/v3/suppression/spam_reports").json() == []
    statuses = sorted(item["status"] for item in messages(api, 'to_email="dropped@example.com"'))
    assert statuses == ["delivered", "not_delivered"]


def test_bounces_are_listed_once_they_happen(api, clock):
    send(api, "bounced@example.com")

    assert api.get("/v3/suppression/bounces").json() == []
    clock.advance(60)
    assert api.get("/v3/suppression/bounces").json() == [
        {
            "created": int(START) + 3,
            "email": "bounced@example.com",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist",
            "status": "5.1.1",
        }
    ]


# Test controls


def test_every_answer_carries_rate_limit_headers(api):
    responses = [
        api.get("/v3/suppression/bounces"),
        api.post("/v3/mail/send", json={}),
        api.get("/x"),
    ]

    for response in responses:
        assert response.headers["X-RateLimit-Limit"] == "600"
        assert int(response.headers["X-RateLimit-Remaining"]) < 600
        assert int(response.headers["X-RateLimit-Reset"]) > START
    assert [int(response.headers["X-RateLimit-Remaining"]) for response in responses] == [599, 598, 597]


def test_a_queued_429_has_the_documented_body_and_headers(api, sandbox):
    sandbox.fail_next(429, retry_after=30)

    response = api.get("/v3/suppression/bounces")

    assert response.status_code == 429
    assert response.json() == {"errors": [{"message": "too many requests", "field": None}]}
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["X-RateLimit-Reset"] == str(int(START) + 30)
    assert api.get("/v3/suppression/bounces").status_code == 200


def test_queued_failures_match_their_path_and_count(api, sandbox):
    sandbox.fail_next(500, count=2, path_prefix="/v3/messages")

    assert api.post("/v3/mail/send", json=mail("a@example.com")).status_code == 202
    assert api.get("/v3/messages", params={"query": 'to_email="a@example.com"'}).status_code == 500
    assert api.get("/v3/messages/abc").json() == {"errors": [{"message": "internal error", "field": None}]}
    assert api.get("/v3/messages/abc").status_code == 404


def test_accept_then_fail_records_the_message(api, sandbox, clock):
    sandbox.accept_then_fail_next()

    lost = api.post("/v3/mail/send", json=mail("a@example.com"))
    clock.advance(2)

    assert lost.status_code == 500
    assert len(messages(api, 'to_email="a@example.com"')) == 1
    assert api.post("/v3/mail/send", json=mail("a@example.com")).status_code == 202


def test_requests_are_counted_by_path(api, sandbox):
    send(api, "a@example.com")
    api.get("/v3/messages/abc")
    api.get("/v3/messages/def")

    assert sandbox.requests_seen("/v3/mail/send") == 1
    assert sandbox.requests_seen("/v3/messages/") == 2
    assert sandbox.requests_seen("/v3/") == 3


def test_state_is_shared_by_every_server_on_the_same_file(state_path, clock):
    first = SendGridSandbox(state_path, clock=clock)
    second = SendGridSandbox(state_path, clock=clock)
    first.fail_next(503)

    with client_for(second) as client:
        assert client.get("/v3/suppression/bounces").status_code == 503
        send(client, "dropped@example.com")

    assert first.public_key_b64 == second.public_key_b64
    assert first.requests_seen("/v3/") == 2
    with client_for(first) as client:
        assert [item["email"] for item in client.get("/v3/suppression/spam_reports").json()] == [
            "dropped@example.com"
        ]


def test_the_sandbox_keeps_the_text_each_message_received(sandbox, api, state_path, clock):
    send(api, "jane+bounced@example.com", content=[{"type": "text/plain", "value": "See you at 10:00 MST."}])
    (kept,) = sandbox.store.messages_where("to_email = ?", ["jane+bounced@example.com"])
    assert kept.text == "See you at 10:00 MST."


def test_a_state_file_from_before_messages_kept_their_text_still_opens(state_path, clock):
    import os
    import sqlite3

    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    old = sqlite3.connect(state_path)
    old.execute(
        "CREATE TABLE messages (msg_id TEXT PRIMARY KEY, x_message_id TEXT NOT NULL,"
        " to_email TEXT NOT NULL, from_email TEXT NOT NULL, subject TEXT NOT NULL, categories TEXT NOT NULL,"
        " custom_args TEXT NOT NULL, accepted_at REAL NOT NULL, scenario TEXT NOT NULL,"
        " webhook_done INTEGER NOT NULL DEFAULT 0)"
    )
    old.execute(
        "INSERT INTO messages VALUES"
        " ('m1', 'x1', 'a@example.com', 'c@example.com', 'S', '[]', '{}', 1, 'clicked', 0)"
    )
    old.commit()
    old.close()
    sandbox = SendGridSandbox(state_path, clock=clock)
    assert sandbox.store.message("m1").text == ""
    # Its tracking was never recorded: it keeps the open and the click it always had.
    old_events = [event.step for event in sandbox.visible(sandbox.store.message("m1"), now=10**6)]
    assert [step.event for step in old_events] == ["processed", "delivered", "open", "click"]
    assert old_events[-1].url == "https://example.com/intake-form"
    with client_for(sandbox) as client:
        send(client, "b@example.com")
    (kept,) = sandbox.store.messages_where("to_email = ?", ["b@example.com"])
    assert kept.text == "See you on Tuesday."


def test_concurrent_senders_do_not_trip_over_each_other(state_path, clock):
    def send_many(worker: int) -> list[int]:
        server = SendGridSandbox(state_path, clock=clock)
        with client_for(server) as client:
            return [
                client.post("/v3/mail/send", json=mail(f"w{worker}n{n}@example.com")).status_code
                for n in range(10)
            ]

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = [code for result in pool.map(send_many, range(6)) for code in result]

    assert codes == [202] * 60
    assert SendGridSandbox(state_path, clock=clock).requests_seen("/v3/mail/send") == 60


# Signed event webhook (the signature itself is tested in test_webhook_signature.py)


class Collector:
    """Stands in for the app's webhook route."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.batches: list[tuple[bytes, dict[str, str]]] = []

    def __call__(self, body: bytes, headers: dict[str, str]) -> int:
        self.batches.append((body, headers))
        return self.status

    def events(self) -> list[dict]:
        return [event for body, _ in self.batches for event in json.loads(body)]


def test_webhooks_need_somewhere_to_go(sandbox, api, clock):
    send(api, "delivered@example.com")
    clock.advance(60)

    assert sandbox.deliver_webhooks() == 0


def test_webhook_batches_use_webhook_names_and_flat_custom_args(sandbox, api, clock):
    body = mail(
        "bounced@example.com", "dropped@example.com", "machine-open@example.com", "deferred@example.com"
    )
    body["personalizations"][0]["custom_args"] = {"app_message_id": "msg-1", "email": "spoofed"}
    api.post("/v3/mail/send", json=body)
    clock.advance(60)
    collector = Collector()

    assert sandbox.deliver_webhooks(collector) == 11

    ((raw_body, headers),) = collector.batches
    assert raw_body.endswith(b"]\r\n")
    assert headers["Content-Type"] == "application/json"
    events = collector.events()
    by_kind = {(event["email"].split("@")[0], event["event"]): event for event in events}
    assert all(event["app_message_id"] == "msg-1" for event in events)
    assert {event["email"] for event in events} == {
        "bounced@example.com",
        "dropped@example.com",
        "machine-open@example.com",
        "deferred@example.com",
    }
    assert len({event["sg_event_id"] for event in events}) == 11
    assert all(event["category"] == ["appointment_reminder"] for event in events)
    bounce = by_kind[("bounced", "bounce")]
    assert (bounce["type"], bounce["status"], bounce["bounce_classification"]) == (
        "bounce",
        "5.1.1",
        "Invalid Address",
    )
    assert by_kind[("dropped", "dropped")]["reason"] == "Spam Reporting Address"
    assert by_kind[("dropped", "dropped")]["status"] == "5.0.0"
    assert by_kind[("machine-open", "open")]["sg_machine_open"] is True
    assert by_kind[("deferred", "delivered")]["response"] == "250 2.0.0 OK"
    attempts = [event["attempt"] for event in events if event["event"] == "deferred"]
    assert attempts == ["1", "2"]
    for event in events:
        assert isinstance(event["timestamp"], int)
        assert event["sg_message_id"].endswith(tuple(f".filterdrecv-sandbox-{i}" for i in range(4)))
        assert event["smtp-id"].startswith("<")


def test_webhooks_post_each_event_once_and_retry_failures(sandbox, api, clock):
    send(api, "clicked@example.com")
    clock.advance(5)
    refused = Collector(status=500)
    accepted = Collector()

    assert sandbox.deliver_webhooks(refused) == 0
    assert sandbox.deliver_webhooks(accepted) == 2
    assert sandbox.deliver_webhooks(accepted) == 0
    clock.advance(60)
    assert sandbox.deliver_webhooks(accepted) == 2
    assert sandbox.deliver_webhooks(accepted) == 0

    retried = [event["sg_event_id"] for event in json.loads(refused.batches[0][0])]
    assert retried == [event["sg_event_id"] for event in json.loads(accepted.batches[0][0])]
    assert [event["event"] for event in accepted.events()] == ["processed", "delivered", "open", "click"]


def test_sendgrid_reports_nothing_for_a_spam_filtered_step(sandbox, api, clock):
    """The spam-filtered scenario plays a Postmark SpamNotification; SendGrid has no such event, so
    its webhook and Email Activity show delivered and opened, and the step is done, not pending."""
    send(api, "jane+spam-filtered@example.com")
    clock.advance(12)  # processed, delivered and opened so far
    accepted = Collector()
    assert sandbox.deliver_webhooks(accepted) == 3
    clock.advance(60)  # the spam notice's time has come: nothing to post, but it is done
    assert sandbox.deliver_webhooks(accepted) == 0
    assert accepted.batches == accepted.batches[:1]  # no empty batch was posted
    assert sandbox.store.unposted_messages()[0] == []
    assert [event["event"] for event in accepted.events()] == ["processed", "delivered", "open"]
    [item] = messages(api, 'to_email="jane+spam-filtered@example.com"')
    detail = api.get(f"/v3/messages/{item['msg_id']}").json()
    assert [event["event_name"] for event in detail["events"]] == ["processed", "delivered", "opened"]


def test_webhooks_are_posted_to_the_configured_url(state_path, clock):
    received: list[tuple[bytes, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers["X-Twilio-Email-Event-Webhook-Signature"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/sendgrid/events"
        sandbox = SendGridSandbox(state_path, clock=clock, webhook_url=url)
        with client_for(sandbox) as client:
            send(client, "delivered@example.com")
        clock.advance(60)

        assert sandbox.deliver_webhooks() == 2
    finally:
        server.shutdown()
        server.server_close()

    ((body, signature),) = received
    assert [event["event"] for event in json.loads(body)] == ["processed", "delivered"]
    assert signature


def test_an_unreachable_webhook_url_posts_nothing(state_path, clock):
    sandbox = SendGridSandbox(state_path, clock=clock, webhook_url="http://127.0.0.1:9/unreachable")
    with client_for(sandbox) as client:
        send(client, "delivered@example.com")
    clock.advance(60)

    assert sandbox.deliver_webhooks() == 0


# The providers' tracking rules


def test_the_sandbox_keeps_each_messages_parts_and_what_sendgrid_tracks_in_it(sandbox, api):
    text = "Your receipt: https://example.com/invoices/latest"
    send(api, "a+clicked@example.com", content=[{"type": "text/plain", "value": text}])
    send(api, "b+clicked@example.com", content=[{"type": "text/plain", "value": text}, html_part()])
    off = {"open_tracking": {"enable": False}, "click_tracking": {"enable": False}}
    send(api, "c+clicked@example.com", tracking_settings=off)
    with_text = {"click_tracking": {"enable": True, "enable_text": True}}
    send(
        api,
        "d+clicked@example.com",
        tracking_settings=with_text,
        content=[{"type": "text/plain", "value": text}, html_part()],
    )

    def kept(address: str):
        (message,) = sandbox.store.messages_where("to_email = ?", [address])
        return message.html, message.opens_tracked, message.links

    assert kept("a+clicked@example.com") == ("", False, ())  # no HTML part: no pixel, no link
    assert kept("b+clicked@example.com") == (HTML_WITH_LINK, True, (INTAKE_LINK,))  # the HTML's only
    assert kept("c+clicked@example.com") == (HTML_WITH_LINK, False, ())
    assert kept("d+clicked@example.com")[2] == (INTAKE_LINK, "https://example.com/invoices/latest")


def test_a_click_names_the_part_its_link_was_in(sandbox, api, clock):
    html_only = "<p><a href='https://example.com/appointments'>Your appointments</a></p>"
    send(api, "a+clicked@example.com", content=[{"type": "text/plain", "value": "Hi"}, html_part(html_only)])
    text = "Receipt: https://example.com/invoices/latest."
    with_text = {"click_tracking": {"enable": True, "enable_text": True}}
    send(
        api,
        "b+clicked@example.com",
        tracking_settings=with_text,
        content=[{"type": "text/plain", "value": text}],
    )
    clock.advance(60)
    posts = []
    sandbox.deliver_webhooks(post=lambda body, headers: posts.append(json.loads(body)) or 200)
    clicks = {event["email"]: event for batch in posts for event in batch if event["event"] == "click"}
    assert clicks["a+clicked@example.com"]["url"] == "https://example.com/appointments"
    assert clicks["a+clicked@example.com"]["url_offset"]["type"] == "html"
    # A text part's link, tracked because enable_text asked for it (the trailing full stop is prose).
    assert clicks["b+clicked@example.com"]["url"] == "https://example.com/invoices/latest"
    assert clicks["b+clicked@example.com"]["url_offset"]["type"] == "text"
    opened = {event["email"] for batch in posts for event in batch if event["event"] == "open"}
    assert opened == {"a+clicked@example.com"}  # the text-only one has no pixel


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([html_part(), {"type": "text/plain", "value": "Hi"}], CONTENT_ORDER),
        ([{"type": "text/plain", "value": "Hi"}, {"type": "text/plain", "value": "Again"}], CONTENT_ONCE),
    ],
)
def test_sendgrids_content_order_is_kept(api, content, message):
    response = api.post("/v3/mail/send", json=mail("a@example.com", content=content))
    assert response.status_code == 400
    assert {(error["message"], error["field"]) for error in response.json()["errors"]} == {
        (message, "content")
    }


def test_attachments_and_reply_to_are_checked(api):
    good = {
        "content": base64.b64encode(b"BEGIN:VCALENDAR").decode(),
        "filename": "a.ics",
        "type": "text/calendar",
    }
    assert api.post("/v3/mail/send", json=mail("a@example.com", attachments=[good])).status_code == 202
    bad = [{"content": "not base64!", "filename": "a.ics"}, {"content": good["content"], "disposition": "x"}]
    response = api.post(
        "/v3/mail/send", json=mail("a@example.com", attachments=bad, reply_to={"email": "nope"})
    )
    assert response.status_code == 400
    assert {error["field"] for error in response.json()["errors"]} == {
        "attachments.0.content",
        "attachments.1.filename",
        "attachments.1.disposition",
        "reply_to.email",
    }


def test_older_messages_may_be_clicked_on_the_links_the_scenarios_always_clicked():
    from webapp.sandbox.scenarios import OTHER_URLS
    from webapp.sandbox.state_file import LEGACY_LINKS

    assert LEGACY_LINKS == OTHER_URLS
