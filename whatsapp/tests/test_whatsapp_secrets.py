"""The access token never leaves: not in a response body, a log record or an exception's text."""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime, timedelta

import pytest
import requests
import time_machine

from whatsapp.tests.helpers import (
    CONFIGURE_URL,
    DEREGISTER_URL,
    ERRORS,
    PHONE,
    PNID,
    REGISTER_URL,
    SETTINGS_URL,
    STATUS_URL,
    TOKEN,
    VERIFY_URL,
    WABA,
    account_of,
    graph_error,
    phone_number,
)

pytestmark = pytest.mark.django_db


SECRET_PART = TOKEN[8:]  # the masked form shows the first 8 characters only
NOW = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)


def assert_no_token(text: str | bytes, where: str) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    assert SECRET_PART not in text, f"the access token leaked into {where}"


class Recorder:
    """Every response body and every exception raised while handling them."""

    def __init__(self, api) -> None:
        self.api = api
        self.bodies: list[bytes] = []

    def __call__(self, method: str, url: str, data=None, **extra):
        response = getattr(self.api, method)(url, data, format="json", **extra)
        self.bodies.append(response.content)
        for header, value in response.items():
            assert_no_token(value, f"the {header} header of {method.upper()} {url}")
        return response


def test_the_token_never_leaks_across_a_whole_flow(admin_api, clinic, graph, caplog):
    caplog.set_level(logging.DEBUG)
    call = Recorder(admin_api)
    echoing = graph_error(
        131009,
        f"(#131009) Parameter value is not valid: access_token={TOKEN}",
        details=f"Invalid token {TOKEN} for this number",
    )
    configure = {
        "phoneNumberId": PNID,
        "businessAccountId": WABA,
        "accessToken": TOKEN,
        "verifyToken": "vibecoding",
    }
    register = {"phone": PHONE, "otpMethod": "sms", "wabaId": WABA, "accessToken": TOKEN}

    with time_machine.travel(NOW, tick=False) as clock:
        # 5: refused, then unreachable, then pending at Meta.
        graph.add("GET", PNID, status=400, json_body=ERRORS[190][1])
        assert call("put", CONFIGURE_URL, configure).json()["status"] == "failed"
        graph.mock.replace(
            "GET", graph.calls[0].request.url.split("?")[0], status=503, body="<html>503</html>"
        )
        call("put", CONFIGURE_URL, configure)
        graph.mock.replace("GET", graph.calls[0].request.url.split("?")[0], json=phone_number("PENDING"))
        assert call("put", CONFIGURE_URL, configure).json()["status"] == "verifying"

        # 6: Meta echoes the token in a refusal, then times out, then sends the code.
        graph.numbers((PNID, "+503 7765-4321"))
        graph.add("POST", f"{PNID}/request_code", status=400, json_body=echoing)
        graph.fault("POST", f"{PNID}/request_code", "timeout")
        graph.request_code()
        assert call("post", REGISTER_URL, register).status_code == 400
        assert call("post", REGISTER_URL, register).status_code == 504
        assert call("post", REGISTER_URL, register).status_code == 200
        call("post", REGISTER_URL, {**register, "accessToken": TOKEN + " x"})  # invalid: 400

        # 7: a wrong code, then a right one whose register times out.
        graph.error("POST", f"{PNID}/verify_code", 136025)
        graph.verify_code()
        graph.fault("POST", f"{PNID}/register", "timeout")
        assert call("post", VERIFY_URL, {"code": "000000"}).status_code == 400
        assert call("post", VERIFY_URL, {"code": "123456"}).status_code == 504

        # 8: unreachable, then connected (subscription refused once).
        clock.shift(timedelta(seconds=10))
        graph.mock.replace(
            "GET", graph.calls[0].request.url.split("?")[0], body=requests.exceptions.ConnectionError("reset")
        )
        assert "last known" in call("get", STATUS_URL).json()["detail"]
        clock.shift(timedelta(seconds=10))
        graph.mock.replace("GET", graph.calls[0].request.url.split("?")[0], json=phone_number("CONNECTED"))
        graph.add("POST", f"{WABA}/subscribed_apps", status=400, json_body=echoing)
        graph.subscribe()
        assert call("get", STATUS_URL).json()["status"] == "active"
        clock.shift(timedelta(minutes=10))
        call("get", STATUS_URL)
        call("get", SETTINGS_URL)

        # 9: unreachable, refused with the token echoed, then done.
        graph.fault("POST", f"{PNID}/deregister", "reset")
        graph.add("POST", f"{PNID}/deregister", status=400, json_body=echoing)
        graph.deregister()
        assert call("delete", DEREGISTER_URL).status_code == 502
        assert call("delete", DEREGISTER_URL).status_code == 400
        assert call("delete", DEREGISTER_URL).json() == {"status": "disconnected"}

    # Meta really was sent the token (the flow above exercised it) ...
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in graph.calls)
    assert account_of(clinic).access_token == TOKEN
    # ... and it went nowhere else.
    for i, body in enumerate(call.bodies):
        assert_no_token(body, f"response body #{i}")
    assert caplog.records, "the flow logs something"
    for record in caplog.records:
        assert_no_token(record.getMessage(), f"the log record {record.name}")
        if record.exc_info:
            assert_no_token(
                "".join(traceback.format_exception(*record.exc_info)), f"the traceback in {record.name}"
            )
    assert_no_token(caplog.text, "the formatted log")


def test_the_settings_endpoint_shows_only_the_masked_token(admin_api, clinic, graph):
    admin_api.patch(SETTINGS_URL, {"whatsapp_access_token": TOKEN}, format="json")

    body = admin_api.get(SETTINGS_URL).json()

    assert body["whatsapp_access_token"] == TOKEN[:8] + "...****"


def test_validation_errors_do_not_echo_the_token(admin_api, clinic, graph):
    bad = TOKEN + " with a space"
    for url, data in (
        (CONFIGURE_URL, {"phoneNumberId": PNID, "businessAccountId": WABA, "accessToken": bad}),
        (REGISTER_URL, {"phone": PHONE, "otpMethod": "sms", "wabaId": WABA, "accessToken": bad}),
    ):
        method = admin_api.put if url == CONFIGURE_URL else admin_api.post
        response = method(url, data, format="json")
        assert response.status_code == 400
        assert_no_token(response.content, url)
    assert graph.calls == []


def test_the_account_repr_hides_the_token(clinic):
    account = account_of(clinic)
    account.access_token = TOKEN
    assert_no_token(repr(account), "repr")
    assert_no_token(str(account), "str")
